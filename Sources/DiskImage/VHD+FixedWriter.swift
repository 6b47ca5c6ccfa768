import CVMSupport

/// Writes a fixed VHD: the disk's bytes (zero blocks become holes), zero padding up to a
/// whole MiB (Azure refuses VHDs whose size is not MiB-aligned), then the 512-byte footer.
///
/// Footer choices:
/// - Creator application "cvmc" (cvm-cli), version 1.0, host OS "Wi2k" (what Hyper-V and
///   most tools write).
/// - CHS geometry 65535/16/255, the maximum, for every size. Readers differ on where the
///   size comes from: Hyper-V and Azure use the footer's current size; QEMU's vpc driver
///   uses cylinders × heads × sectors unless the creator is one it knows ("win ", "qem2",
///   "d2v ", "CTXS", "tap\0") or the geometry is exactly the maximum. CHS rarely describes a
///   MiB-rounded size exactly (and cannot beyond 127 GiB), so the maximum geometry is what
///   makes every reader agree on the current size. `qemu-img convert -o force_size=on`, the
///   usual way to make Azure VHDs, writes the same geometry.
/// - Unique ID derived from the content (the size and a CRC-32 digest of the data blocks and
///   their positions), marked as an RFC 9562 version 8 (custom) UUID: reproducible.
public final class VHDFixedWriter: DiskWriter {
    private let output: FileDescriptor
    private let body: RawWriter
    private let timestamp: UInt64
    /// From `WriterOptions.threads`: with 1 the digest stays on the calling thread.
    private let parallel: Bool
    /// Disk size in the footer: the input size rounded up to a whole MiB.
    public let outputVirtualSize: UInt64
    /// Running digest of (offset, CRC-32) of every non-zero 64 KiB block, in disk order.
    private var contentDigest: UInt32 = 0
    private var finished = false

    public init(output: FileDescriptor, inputVirtualSize: UInt64, options: WriterOptions) throws {
        let (padded, overflow) = inputVirtualSize.addingReportingOverflow(DiskGeometry.mebibyte - 1)
        guard !overflow else {
            throw CVMError.invalid("\(output.path): a disk of \(inputVirtualSize) bytes is too large for a VHD")
        }
        self.output = output
        self.outputVirtualSize = padded - padded % DiskGeometry.mebibyte
        self.timestamp = options.timestamp
        self.parallel = options.threads > 1
        // The padding beyond the input stays a hole.
        self.body = RawWriter(output: output, inputVirtualSize: inputVirtualSize,
                              outputVirtualSize: outputVirtualSize)
    }

    public func write(_ piece: DataPiece) throws {
        try body.write(piece)
        contentDigest = try Self.digest(piece, seed: contentDigest, parallel: parallel)
    }

    public func writeZeros(at offset: UInt64, length: UInt64) throws {
        try body.writeZeros(at: offset, length: length)
    }

    public func finish() throws {
        guard !finished else { return }
        finished = true
        try body.finish()
        try output.write(footer().encoded(), at: outputVirtualSize)
    }

    /// The footer this writer puts after the disk bytes.
    func footer() -> VHDFooter {
        Self.footer(size: outputVirtualSize, digest: contentDigest, timestamp: timestamp)
    }

    /// The footer for a disk of `size` bytes whose data blocks fold to `digest`.
    static func footer(size outputVirtualSize: UInt64, digest contentDigest: UInt32, timestamp: UInt64) -> VHDFooter {
        var f = VHDFooter()
        f.features = 2                       // the "reserved" bit the specification requires
        f.formatVersion = 0x0001_0000
        f.dataOffset = VHDFooter.noDataOffset
        f.timestamp = VHDFooter.vhdTime(unixSeconds: timestamp)
        f.creatorApplication = Array("cvmc".utf8)
        f.creatorVersion = 0x0001_0000
        f.creatorHostOS = Array("Wi2k".utf8)
        f.originalSize = outputVirtualSize
        f.currentSize = outputVirtualSize
        f.cylinders = 65535
        f.heads = 16
        f.sectorsPerTrack = 255
        f.diskTypeValue = VHDFooter.DiskType.fixed.rawValue
        f.uniqueID = Self.uniqueID(size: outputVirtualSize, digest: contentDigest)
        f.savedState = 0
        return f
    }

    /// Folds the non-zero blocks of `piece` into `seed`: CRC-32 of each block (on all cores
    /// when `parallel`), then a CRC-32 over the (offset, block CRC) records in order.
    static func digest(_ piece: DataPiece, seed: UInt32, parallel: Bool) throws -> UInt32 {
        let block = DiskGeometry.blockSize
        let count = piece.zeroBlocks.count
        var blockCRCs = [UInt32](repeating: 0, count: count)
        try blockCRCs.withUnsafeMutableBufferPointer { crcs in
            let out = UncheckedSendable(crcs)
            let crcOfBlock = { (i: Int) in
                guard !piece.zeroBlocks[i] else { return }
                let lo = i * block
                let hi = min(lo + block, piece.bytes.count)
                guard lo < hi else { return }
                out.value[i] = crc32(UnsafeRawBufferPointer(rebasing: piece.bytes[lo..<hi]))
            }
            if parallel {
                try parallelFor(count) { crcOfBlock($0) }
            } else {
                for i in 0..<count { crcOfBlock(i) }
            }
        }
        var record = [UInt8](repeating: 0, count: 12)
        var digest = seed
        for i in 0..<count where !piece.zeroBlocks[i] {
            record.putBE64(piece.offset + UInt64(i * block), at: 0)
            record.putBE32(blockCRCs[i], at: 8)
            digest = crc32(record, seed: digest)
        }
        return digest
    }

    /// 16 bytes from four CRC-32s of (label, size, digest, part), marked as a version 8 UUID.
    static func uniqueID(size: UInt64, digest: UInt32) -> [UInt8] {
        let label = Array("cvm-cli vhd".utf8)
        var input = label + [UInt8](repeating: 0, count: 13)
        input.putBE64(size, at: label.count)
        input.putBE32(digest, at: label.count + 8)
        var id = [UInt8](repeating: 0, count: 16)
        for part in 0..<4 {
            input[label.count + 12] = UInt8(part)
            id.putBE32(crc32(input), at: part * 4)
        }
        id[6] = (id[6] & 0x0F) | 0x80   // version 8: custom
        id[8] = (id[8] & 0x3F) | 0x80   // RFC 4122/9562 variant
        return id
    }
}
