import CVMSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a stream-optimized VMDK (what AWS import, qemu and VMware accept).
///
/// The non-zero 64 KiB grains of each piece are zlib-compressed on all cores (libdeflate, one
/// compressor per thread) and written in LBA order, each as marker + data padded to a sector.
/// A grain table is written after the grains of its 32 MiB span; `finish()` adds the grain
/// directory, the footer and the end-of-stream marker. All-zero grains are not stored.
/// Memory: one piece's compressed grains plus the grain directory (4 bytes per 32 MiB).
/// Output bytes depend only on the input and the compression level.
public final class VMDKStreamWriter: DiskWriter {
    /// The input size rounded up to a whole sector.
    public let outputVirtualSize: UInt64

    private let output: FileDescriptor
    private let options: WriterOptions
    private let header: VMDK.SparseExtentHeader
    private let grainBytes = Int(VMDK.writerGrainSectors) * VMDK.sectorSize
    private let tableEntries = VMDK.writerTableEntries

    private var grainDirectory: [UInt32]
    /// The grain table being filled and the span it covers (nil: nothing pending).
    private var table: [UInt32]
    private var tableIndex: Int?
    /// Next free sector of the output file.
    private var nextSector: UInt64
    /// Where the next piece must start (pieces arrive in ascending order).
    private var position: UInt64 = 0
    private var finished = false

    private var workers: [GrainWorker] = []
    /// Bytes reserved per compressed grain: marker + zlib bound, rounded to a sector.
    private var slotSize = 0
    /// One slot per grain of a piece; compressed grains are then packed in place and written.
    private var slab: UnsafeMutableRawBufferPointer?

    /// - Parameters:
    ///   - output: the file to write (positioned writes; starts empty).
    ///   - inputVirtualSize: bytes of virtual disk that `write`/`writeZeros` will cover.
    ///   - options: `threads` and `compressionLevel` (libdeflate 0–12; 6 by default) are used.
    public init(output: FileDescriptor, inputVirtualSize: UInt64, options: WriterOptions) throws {
        guard (0...12).contains(options.compressionLevel) else {
            throw CVMError.usage("compression level \(options.compressionLevel) is out of range for VMDK; expected 1–9 (libdeflate accepts 0–12)")
        }
        self.output = output
        self.options = options
        let sector = UInt64(VMDK.sectorSize)
        let capacity = inputVirtualSize / sector + (inputVirtualSize % sector == 0 ? 0 : 1)
        outputVirtualSize = capacity * sector
        header = VMDK.SparseExtentHeader(
            version: 3,
            flags: VMDK.Flag.validNewlineTest | VMDK.Flag.compressedGrains | VMDK.Flag.markers,
            capacity: capacity, grainSize: VMDK.writerGrainSectors,
            descriptorOffset: 1, descriptorSize: VMDK.writerDescriptorSectors,
            numGTEsPerGT: UInt32(VMDK.writerTableEntries), rgdOffset: 0, gdOffset: VMDK.gdAtEnd,
            overHead: VMDK.writerOverHead, compressAlgorithm: VMDK.compressionDeflate)
        guard header.tableCount <= VMDK.SparseExtentHeader.maxTableCount else {
            throw CVMError.unsupported("\(output.path): a \(formatBytes(outputVirtualSize)) disk is too large for a stream-optimized VMDK (at most 64 TiB)")
        }
        grainDirectory = [UInt32](repeating: 0, count: Int(header.tableCount))
        table = [UInt32](repeating: 0, count: VMDK.writerTableEntries)

        // Header and descriptor first; the grain directory location goes into the footer.
        var head = [UInt8](repeating: 0, count: Int(VMDK.writerOverHead) * VMDK.sectorSize)
        head.replaceSubrange(0..<VMDK.sectorSize, with: header.encoded())
        let descriptor = Array(VMDK.Descriptor.render(capacitySectors: capacity).utf8)
        precondition(descriptor.count <= Int(VMDK.writerDescriptorSectors) * VMDK.sectorSize, "descriptor fits its sectors")
        head.replaceSubrange(VMDK.sectorSize..<VMDK.sectorSize + descriptor.count, with: descriptor)
        try output.write(head, at: 0)
        nextSector = VMDK.writerOverHead
    }

    deinit { slab?.deallocate() }

    public func write(_ piece: DataPiece) throws {
        guard !finished, piece.offset >= position, piece.offset % UInt64(grainBytes) == 0 else {
            throw CVMError.io("\(output.path): VMDK writer got a piece at \(piece.offset) out of order (expected ≥ \(position), grain-aligned)")
        }
        let count = piece.bytes.count
        let end = piece.offset + UInt64(count)
        guard end <= outputVirtualSize else {
            throw CVMError.io("\(output.path): VMDK writer got bytes up to \(end), beyond the disk size \(outputVirtualSize)")
        }
        position = end
        let grains = (count + grainBytes - 1) / grainBytes
        // A grain missing from zeroBlocks is treated as data (never lose bytes).
        let present = (0..<grains).filter { $0 >= piece.zeroBlocks.count || !piece.zeroBlocks[$0] }
        guard !present.isEmpty else { return }

        try prepare(grainsPerPiece: present.count)
        guard let slab else { return }
        let threads = min(present.count, options.threads)
        var packedSizes = [Int](repeating: 0, count: present.count)
        let firstLBA = piece.offset / UInt64(VMDK.sectorSize)
        try packedSizes.withUnsafeMutableBufferPointer { sizes in
            let pool = workers
            try parallelFor(threads) { w in
                var k = w
                while k < present.count {
                    let g = present[k]
                    let lo = g * self.grainBytes
                    let hi = min(lo + self.grainBytes, count)
                    sizes[k] = try self.compressGrain(
                        UnsafeRawBufferPointer(rebasing: piece.bytes[lo..<hi]),
                        lba: firstLBA + UInt64(lo / VMDK.sectorSize),
                        into: UnsafeMutableRawBufferPointer(rebasing: slab[k * self.slotSize..<(k + 1) * self.slotSize]),
                        worker: pool[w])
                    k += threads
                }
            }
        }

        // Pack the grains in LBA order and write them in runs; a grain table whose span
        // ends inside this piece is written between its grains and the next span's.
        let firstGrain = piece.offset / UInt64(grainBytes)
        var runStart = nextSector
        var packed = 0
        func flushRun() throws {
            if packed > 0 {
                try output.write(UnsafeRawBufferPointer(rebasing: slab[0..<packed]), at: runStart * UInt64(VMDK.sectorSize))
            }
            packed = 0
        }
        for (k, g) in present.enumerated() {
            let grain = firstGrain + UInt64(g)
            let span = Int(grain / UInt64(tableEntries))
            if span != tableIndex {
                try flushRun()
                try flushTable()
                tableIndex = span
                runStart = nextSector
            }
            guard nextSector <= UInt64(UInt32.max) else {
                throw CVMError.unsupported("\(output.path): the VMDK would exceed 2 TiB of stored data, which its 32-bit sector offsets cannot address")
            }
            table[Int(grain % UInt64(tableEntries))] = UInt32(nextSector)
            let size = packedSizes[k]
            let from = k * slotSize
            if from != packed {
                memmove(slab.baseAddress! + packed, slab.baseAddress! + from, size)
            }
            packed += size
            nextSector += UInt64(size / VMDK.sectorSize)
        }
        try flushRun()
    }

    /// Holes store nothing: absent grains read as zeros.
    public func writeZeros(at offset: UInt64, length: UInt64) throws {
        guard !finished, offset >= position else {
            throw CVMError.io("\(output.path): VMDK writer got zeros at \(offset) out of order (expected ≥ \(position))")
        }
        position = offset + length
    }

    public func finish() throws {
        guard !finished else { return }
        try flushTable()
        finished = true
        let sector = VMDK.sectorSize
        let gdBytes = grainDirectory.count * 4
        let gdSectors = max(1, (gdBytes + sector - 1) / sector)
        let gdSector = nextSector + 1
        var footerHeader = header
        footerHeader.gdOffset = gdSector

        var tail = VMDK.metadataMarker(.grainDirectory, sectors: UInt64(gdSectors))
        var gd = [UInt8](repeating: 0, count: gdSectors * sector)
        for (i, entry) in grainDirectory.enumerated() { gd.putLE32(entry, at: i * 4) }
        tail += gd
        tail += VMDK.metadataMarker(.footer, sectors: 1)
        tail += footerHeader.encoded()
        tail += VMDK.metadataMarker(.endOfStream, sectors: 0)
        let at = nextSector * UInt64(sector)
        try output.write(tail, at: at)
        try output.truncate(to: at + UInt64(tail.count))
    }

    // MARK: pieces

    /// Per-thread resources: a compressor and a zero-padded buffer for a short last grain.
    private final class GrainWorker {
        let deflater: VMDK.GrainDeflater
        let padded: UnsafeMutableRawBufferPointer

        init(level: Int, grainBytes: Int) throws {
            deflater = try VMDK.GrainDeflater(level: level)
            padded = .allocate(byteCount: grainBytes, alignment: 64)
        }

        deinit { padded.deallocate() }
    }

    /// Makes sure there are compressors for every thread and slots for `grainsPerPiece` grains.
    private func prepare(grainsPerPiece: Int) throws {
        while workers.count < options.threads {
            workers.append(try GrainWorker(level: options.compressionLevel, grainBytes: grainBytes))
        }
        if slotSize == 0, let first = workers.first {
            let bound = VMDK.grainMarkerSize + first.deflater.bound(grainBytes)
            slotSize = (bound + VMDK.sectorSize - 1) / VMDK.sectorSize * VMDK.sectorSize
        }
        let needed = grainsPerPiece * slotSize
        if (slab?.count ?? 0) < needed {
            slab?.deallocate()
            slab = .allocate(byteCount: needed, alignment: 4096)
        }
    }

    /// Writes marker + zlib data of one grain into `slot`, zero-padded to a sector; returns the
    /// padded length. A short grain (the disk ends inside it) is compressed as a full grain
    /// with zeros after the end, which every reader accepts.
    private func compressGrain(_ data: UnsafeRawBufferPointer, lba: UInt64,
                               into slot: UnsafeMutableRawBufferPointer, worker: GrainWorker) throws -> Int {
        var input = data
        if data.count < grainBytes {
            worker.padded.initializeMemory(as: UInt8.self, repeating: 0)
            UnsafeMutableRawBufferPointer(rebasing: worker.padded[0..<data.count]).copyMemory(from: data)
            input = UnsafeRawBufferPointer(worker.padded)
        }
        let body = UnsafeMutableRawBufferPointer(rebasing: slot[VMDK.grainMarkerSize...])
        let compressedSize = worker.deflater.compress(input, into: body)
        guard compressedSize > 0 else {
            throw CVMError.io("\(output.path): compressing the grain at LBA \(lba) failed")
        }
        slot.storeBytes(of: lba.littleEndian, toByteOffset: 0, as: UInt64.self)
        slot.storeBytes(of: UInt32(compressedSize).littleEndian, toByteOffset: 8, as: UInt32.self)
        let used = VMDK.grainMarkerSize + compressedSize
        let padded = (used + VMDK.sectorSize - 1) / VMDK.sectorSize * VMDK.sectorSize
        UnsafeMutableRawBufferPointer(rebasing: slot[used..<padded]).initializeMemory(as: UInt8.self, repeating: 0)
        return padded
    }

    /// Writes the pending grain table (marker + table) and records it in the directory.
    private func flushTable() throws {
        guard let index = tableIndex else { return }
        let tableSectors = (tableEntries * 4 + VMDK.sectorSize - 1) / VMDK.sectorSize
        var bytes = VMDK.metadataMarker(.grainTable, sectors: UInt64(tableSectors))
        var body = [UInt8](repeating: 0, count: tableSectors * VMDK.sectorSize)
        for (i, entry) in table.enumerated() { body.putLE32(entry, at: i * 4) }
        bytes += body
        guard nextSector + 1 <= UInt64(UInt32.max) else {
            throw CVMError.unsupported("\(output.path): the VMDK would exceed 2 TiB of stored data, which its 32-bit sector offsets cannot address")
        }
        try output.write(bytes, at: nextSector * UInt64(VMDK.sectorSize))
        if index < grainDirectory.count { grainDirectory[index] = UInt32(nextSector + 1) }
        nextSector += UInt64(1 + tableSectors)
        for i in table.indices { table[i] = 0 }
        tableIndex = nil
    }
}
