import CVMSupport

/// Any disk presented as the bytes of a fixed, MiB-aligned VHD, produced front to back with no
/// file: a page blob upload reads it window by window.
///
/// - A fixed VHD whose disk size is already a whole number of MiB is passed through as is (the
///   file's own bytes, footer included).
/// - Anything else reads as exactly what `VHDFixedWriter` would write for it (same padding, same
///   footer, same content-derived unique ID): the disk, zeros up to a whole MiB, the footer.
///
/// Reads of a converted disk must go forward (each at or after the end of the previous one), start
/// on a 64 KiB boundary and end on one or at the disk's end, and anything skipped between two
/// reads must lie outside `storedRanges()` — the footer's unique ID folds in every data block on
/// the way, as the writer does. Not thread-safe: callers serialize reads.
public final class FixedVHDStream {
    /// Bytes of the whole VHD: disk, padding and the 512-byte footer.
    public let size: UInt64
    /// The disk size the footer states (`size - 512`).
    public let diskSize: UInt64
    /// The input's format and virtual size (before padding).
    public let inputFormat: DiskFormat
    public let inputVirtualSize: UInt64
    /// True when the input file is sent as is (a MiB-aligned fixed VHD).
    public let isPassThrough: Bool

    private let disk: DiskReader
    private let timestamp: UInt64
    private var contentDigest: UInt32 = 0
    private var position: UInt64 = 0

    static let footerSize: UInt64 = 512

    /// Opens `path` (any readable format). `timestamp` goes into a generated footer.
    public static func open(_ path: String, timestamp: UInt64 = SystemInfo.sourceDateEpoch) throws -> FixedVHDStream {
        let reader = try DiskImageFile.open(path)
        guard reader.virtualSize > 0 else {
            throw CVMError.invalid("\(path): the virtual disk is empty; nothing to upload")
        }
        if let vhd = reader as? VHDReader, vhd.format == .vhdFixed,
           vhd.virtualSize % DiskGeometry.mebibyte == 0, vhd.source.size == vhd.virtualSize + footerSize {
            return FixedVHDStream(passThrough: RawReader(source: vhd.source), format: .vhdFixed, virtualSize: vhd.virtualSize)
        }
        return try FixedVHDStream(converting: reader, timestamp: timestamp)
    }

    /// The VHD `VHDFixedWriter` would write for `disk`.
    public init(converting disk: DiskReader, timestamp: UInt64 = SystemInfo.sourceDateEpoch) throws {
        let (padded, overflow) = disk.virtualSize.addingReportingOverflow(DiskGeometry.mebibyte - 1)
        guard !overflow, disk.virtualSize > 0 else {
            throw CVMError.invalid("a disk of \(disk.virtualSize) bytes cannot be stored as a VHD")
        }
        self.disk = disk
        self.timestamp = timestamp
        inputFormat = disk.format
        inputVirtualSize = disk.virtualSize
        diskSize = padded - padded % DiskGeometry.mebibyte
        size = diskSize + Self.footerSize
        isPassThrough = false
    }

    private init(passThrough file: RawReader, format: DiskFormat, virtualSize: UInt64) {
        disk = file
        timestamp = 0
        inputFormat = format
        inputVirtualSize = virtualSize
        diskSize = virtualSize
        size = file.virtualSize
        isPassThrough = true
    }

    /// Ranges of the stream that may hold non-zero bytes (ascending; the footer is the last).
    public func storedRanges() throws -> [Range<UInt64>] {
        if isPassThrough { return try disk.storedRanges() }
        let data = try disk.storedRanges().map { $0.clamped(to: 0..<inputVirtualSize) }
        return normalizeRanges(data + [diskSize..<size])
    }

    /// Reads stream bytes `[offset, offset + buffer.count)` (see the type's rules on order).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw CVMError.invalid("VHD stream: read of \(buffer.count) bytes at \(offset) is beyond its \(size) bytes")
        }
        if isPassThrough {
            try disk.read(into: buffer, at: offset)
            return
        }
        let end = offset + UInt64(buffer.count)
        let block = UInt64(DiskGeometry.blockSize)
        guard offset >= position, offset % block == 0, end % block == 0 || end >= inputVirtualSize else {
            throw CVMError.invalid("VHD stream: read at \(offset) is out of order or not on a 64 KiB boundary (internal error)")
        }
        // The disk's bytes, folded into the unique ID block by block as the writer does.
        let dataEnd = min(end, inputVirtualSize)
        if offset < dataEnd {
            let count = Int(dataEnd - offset)
            let data = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
            try disk.read(into: data, at: offset)
            var record = [UInt8](repeating: 0, count: 12)
            var lo = 0
            while lo < count {
                let hi = min(lo + Int(block), count)
                let piece = UnsafeRawBufferPointer(rebasing: data[lo..<hi])
                if !isAllZero(piece) {
                    record.putBE64(offset + UInt64(lo), at: 0)
                    record.putBE32(crc32(piece), at: 8)
                    contentDigest = crc32(record, seed: contentDigest)
                }
                lo = hi
            }
        }
        // Padding up to the MiB, then the footer.
        let zeroStart = max(offset, inputVirtualSize)
        let zeroEnd = min(end, diskSize)
        if zeroStart < zeroEnd {
            let from = Int(zeroStart - offset)
            UnsafeMutableRawBufferPointer(rebasing: buffer[from..<(from + Int(zeroEnd - zeroStart))]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        if end > diskSize {
            let footer = VHDFixedWriter.footer(size: diskSize, digest: contentDigest, timestamp: timestamp).encoded()
            let from = max(offset, diskSize)
            for i in from..<end { buffer[Int(i - offset)] = footer[Int(i - diskSize)] }
        }
        position = end
    }
}
