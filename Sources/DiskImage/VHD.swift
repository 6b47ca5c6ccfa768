import CVMSupport

/// Reads fixed and dynamic VHD (Microsoft Virtual Hard Disk, VHD specification 1.0).
///
/// - Fixed: the disk bytes, then a 512-byte footer (old Virtual PC versions wrote 511 bytes;
///   both are accepted). Holes of the file are holes of the disk.
/// - Dynamic: a footer copy at offset 0, a dynamic header ("cxsparse") at the footer's data
///   offset, a block allocation table (BAT) of big-endian sector numbers, and blocks each
///   preceded by a sector bitmap. Unallocated blocks (BAT entry 0xFFFFFFFF) read as zeros.
///   The sector bitmap is not consulted: an allocated block is read whole from its data
///   area, as QEMU does. Writers (Hyper-V, QEMU) zero-fill a block when they allocate it, so
///   sectors the bitmap marks unwritten read as zeros either way.
/// - Differencing disks (type 4) need their parent and are refused.
///
/// The virtual size is the footer's current size (what Hyper-V and Azure use), not the
/// CHS geometry.
public final class VHDReader: DiskReader {
    public let source: ByteSource
    public let format: DiskFormat
    public let virtualSize: UInt64
    /// Present for dynamic disks.
    private let layout: DynamicLayout?

    /// Where a dynamic disk's blocks are.
    private struct DynamicLayout {
        let blockSize: UInt64
        /// Sector bitmap bytes before each block's data (a multiple of 512).
        let bitmapSize: UInt64
        /// One BAT entry per block of the virtual disk: the sector where the block (its
        /// bitmap) starts, or `unallocated`.
        let table: [UInt32]

        static let unallocated: UInt32 = 0xFFFF_FFFF

        /// File offset of block `index`'s data, or nil when it is not stored.
        func dataOffset(ofBlock index: Int) -> UInt64? {
            guard index < table.count, table[index] != Self.unallocated else { return nil }
            return UInt64(table[index]) * 512 + bitmapSize
        }
    }

    /// Largest BAT we load (entries × 4 bytes = 16 MiB), far above the 2040 GiB VHD limit at
    /// the default 2 MiB block size; bounds memory for hostile headers.
    static let maxBlockCount: UInt64 = 4 << 20
    static let maxBlockSize: UInt64 = 256 << 20

    /// True when the last 512 bytes (or, for old Virtual PC footers, the last 511) start with
    /// "conectix": the file is a fixed VHD. Dynamic VHDs start with "conectix" instead.
    public static func probe(_ source: ByteSource) throws -> Bool {
        try fixedFooterLength(source) != nil
    }

    /// Length of the fixed-disk footer at the end of `source` (512, or 511 for old Virtual PC
    /// images), or nil when there is none.
    static func fixedFooterLength(_ source: ByteSource) throws -> Int? {
        for length in [VHDFooter.size, VHDFooter.size - 1] where source.size >= UInt64(length) {
            let tail = try source.bytes(count: 8, at: source.size - UInt64(length))
            if VHDFooter.hasCookie(tail) { return length }
        }
        return nil
    }

    public init(source: ByteSource) throws {
        self.source = source
        let name = source.name
        // A footer copy at offset 0 marks a dynamic (or differencing) disk. A fixed disk whose
        // first bytes happen to be a footer is still read through its trailing footer.
        if source.size >= UInt64(VHDFooter.size) {
            let head = try source.bytes(count: VHDFooter.size, at: 0)
            if VHDFooter.hasCookie(head) {
                let footer = try VHDFooter.parse(head, name: name, where: "at offset 0")
                let hasTrailingFooter = try Self.fixedFooterLength(source) != nil
                if footer.diskType != .fixed || !hasTrailingFooter {
                    try Self.checkDiskType(footer, name: name)
                    format = .vhdDynamic
                    virtualSize = footer.currentSize
                    layout = try Self.readDynamicLayout(footer: footer, source: source)
                    return
                }
            }
        }
        guard let footerLength = try Self.fixedFooterLength(source) else {
            throw CVMError.invalid("\(name): no VHD footer (cookie 'conectix') in the last 512 bytes or at offset 0; the file is not a VHD or is truncated")
        }
        let footerOffset = source.size - UInt64(footerLength)
        let footer = try VHDFooter.parse(try source.bytes(count: footerLength, at: footerOffset),
                                         name: name, where: "at the end of the file")
        try Self.checkDiskType(footer, name: name)
        guard footer.diskType == .fixed else {
            throw CVMError.invalid("\(name): the footer at the end says disk type \(footer.diskTypeValue) (dynamic) but there is no footer copy at offset 0; the dynamic VHD is damaged")
        }
        guard footer.currentSize <= footerOffset else {
            throw CVMError.invalid("\(name): fixed VHD is truncated: the footer says the disk is \(footer.currentSize) bytes but only \(footerOffset) bytes precede the footer")
        }
        format = .vhdFixed
        virtualSize = footer.currentSize
        layout = nil
    }

    private static func checkDiskType(_ footer: VHDFooter, name: String) throws {
        switch footer.diskType {
        case .fixed, .dynamic:
            return
        case .differencing:
            throw CVMError.unsupported("\(name): a differencing VHD (disk type 4) needs its parent disk; merge it first (e.g. with Hyper-V or 'qemu-img convert') and convert the result")
        case nil:
            throw CVMError.invalid("\(name): unknown VHD disk type \(footer.diskTypeValue); expected 2 (fixed) or 3 (dynamic)")
        }
    }

    /// Reads and checks the dynamic header and the BAT.
    private static func readDynamicLayout(footer: VHDFooter, source: ByteSource) throws -> DynamicLayout {
        let name = source.name
        let headerOffset = footer.dataOffset
        let headerSize = UInt64(VHDDynamicHeader.size)
        guard headerOffset >= UInt64(VHDFooter.size), headerOffset <= source.size,
              source.size - headerOffset >= headerSize else {
            throw CVMError.invalid("\(name): dynamic header offset \(headerOffset) (footer data offset) is outside the file (size \(source.size)); expected an offset ≥ 512 with 1024 bytes after it")
        }
        let header = try VHDDynamicHeader.parse(try source.bytes(count: VHDDynamicHeader.size, at: headerOffset),
                                                name: name, at: headerOffset)
        let blockSize = UInt64(header.blockSize)
        guard blockSize >= 512, blockSize <= maxBlockSize, blockSize & (blockSize - 1) == 0 else {
            throw CVMError.invalid("\(name): dynamic VHD block size \(blockSize) is invalid; expected a power of two from 512 bytes to 256 MiB")
        }
        // One bit per 512-byte sector, rounded up to whole sectors.
        let bitmapSize = DiskGeometry.roundUp(blockSize / 512 / 8, to: 512)
        let size = footer.currentSize
        let blocksNeeded = size / blockSize + (size % blockSize == 0 ? 0 : 1)
        guard blocksNeeded <= maxBlockCount else {
            throw CVMError.invalid("\(name): dynamic VHD of \(size) bytes with \(blockSize)-byte blocks needs \(blocksNeeded) BAT entries; at most \(maxBlockCount) are supported")
        }
        guard UInt64(header.maxTableEntries) >= blocksNeeded else {
            throw CVMError.invalid("\(name): dynamic VHD BAT has \(header.maxTableEntries) entries but the disk size \(size) needs \(blocksNeeded); the header is corrupt")
        }
        let tableBytes = UInt64(header.maxTableEntries) * 4
        guard header.tableOffset <= source.size, source.size - header.tableOffset >= tableBytes else {
            throw CVMError.invalid("\(name): dynamic VHD BAT (\(tableBytes) bytes at offset \(header.tableOffset)) extends beyond the end of the file (size \(source.size)); the file is truncated or corrupt")
        }
        // Only the entries that cover the disk are read (in 64 KiB chunks, so the raw bytes
        // never sit in memory next to the whole table); the rest of the table is unused.
        var table = [UInt32](repeating: DynamicLayout.unallocated, count: Int(blocksNeeded))
        let entriesPerChunk = 16 * 1024
        var first = 0
        while first < table.count {
            let count = min(entriesPerChunk, table.count - first)
            let raw = try source.bytes(count: count * 4, at: header.tableOffset + UInt64(first) * 4)
            for j in 0..<count {
                let i = first + j
                let entry = raw.be32(j * 4)
                table[i] = entry
                if entry == DynamicLayout.unallocated { continue }
                let dataStart = UInt64(entry) * 512 + bitmapSize
                let needed = min(blockSize, size - UInt64(i) * blockSize)
                guard dataStart <= source.size, source.size - dataStart >= needed else {
                    throw CVMError.invalid("\(name): dynamic VHD BAT entry \(i) (sector \(entry)) points beyond the end of the file (size \(source.size)); the file is truncated or corrupt")
                }
            }
            first += count
        }
        return DynamicLayout(blockSize: blockSize, bitmapSize: bitmapSize, table: table)
    }

    public func storedRanges() throws -> [Range<UInt64>] {
        guard let layout else {
            // Fixed: the file's data ranges, without the footer.
            return source.dataRanges().compactMap { r in
                let hi = min(r.upperBound, virtualSize)
                return r.lowerBound < hi ? r.lowerBound..<hi : nil
            }
        }
        var ranges: [Range<UInt64>] = []
        for i in layout.table.indices where layout.table[i] != DynamicLayout.unallocated {
            let lo = UInt64(i) * layout.blockSize
            let hi = min(lo + layout.blockSize, virtualSize)
            if let last = ranges.last, last.upperBound == lo {
                ranges[ranges.count - 1] = last.lowerBound..<hi
            } else {
                ranges.append(lo..<hi)
            }
        }
        return ranges
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkVirtualRange(offset: offset, count: buffer.count, name: source.name)
        guard let layout else {
            try source.read(into: buffer, at: offset)
            return
        }
        var done = 0
        while done < buffer.count {
            let position = offset + UInt64(done)
            let block = Int(position / layout.blockSize)
            let within = position % layout.blockSize
            let count = Int(min(UInt64(buffer.count - done), layout.blockSize - within))
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + count])
            if let dataStart = layout.dataOffset(ofBlock: block) {
                try source.read(into: part, at: dataStart + within)
            } else {
                part.initializeMemory(as: UInt8.self, repeating: 0)
            }
            done += count
        }
    }
}
