import CVMSupport

/// A piece of the virtual disk with its bytes, handed to a writer.
public struct DataPiece {
    /// Offset in the virtual disk; a multiple of `DiskGeometry.pieceAlignment`.
    public let offset: UInt64
    /// The bytes; the length is a multiple of `pieceAlignment` except for the piece that
    /// ends at the input's virtual size.
    public let bytes: UnsafeRawBufferPointer
    /// For each `DiskGeometry.blockSize` block of `bytes` (the last may be partial): all zeros?
    public let zeroBlocks: [Bool]

    public init(offset: UInt64, bytes: UnsafeRawBufferPointer, zeroBlocks: [Bool]) {
        self.offset = offset
        self.bytes = bytes
        self.zeroBlocks = zeroBlocks
    }
}

/// Writes a virtual disk into one container format, front to back.
///
/// The converter calls `write`/`writeZeros` with pieces in ascending order that together
/// cover `[0, inputVirtualSize)` exactly once, then `finish()`. Writers pad the disk up to
/// their format's required size (MiB for VHD, GiB for GCP) with zeros.
public protocol DiskWriter: AnyObject {
    /// The virtual size of the disk the output will hold.
    var outputVirtualSize: UInt64 { get }
    func write(_ piece: DataPiece) throws
    /// `length` zero bytes at `offset` (holes: writers should store nothing for them).
    func writeZeros(at offset: UInt64, length: UInt64) throws
    /// Writes trailers (footers, grain directories, tar padding, gzip trailer).
    func finish() throws
}

/// Options shared by the writers.
public struct WriterOptions: Sendable {
    /// Worker threads for compression; defaults to the number of cores.
    public var threads: Int
    /// Compression level for VMDK grains and gzip (1–9; 6 like gzip's default).
    public var compressionLevel: Int
    /// Seconds since the Unix epoch stamped into headers that carry a time (VHD footer, tar
    /// mtime); fixed so that outputs are reproducible. Defaults to SOURCE_DATE_EPOCH or 0.
    public var timestamp: UInt64
    /// Chunks compressing or waiting to be written at once (each holds its input and output:
    /// 2 MiB for the gzip writer); nil lets the writer choose (4 + 2 × threads). A streaming
    /// upload lowers it to stay within its memory budget.
    public var compressionSlots: Int?

    public init(threads: Int = SystemInfo.activeProcessorCount,
                compressionLevel: Int = 6,
                timestamp: UInt64 = SystemInfo.sourceDateEpoch) {
        self.threads = max(1, threads)
        self.compressionLevel = compressionLevel
        self.timestamp = timestamp
    }
}
