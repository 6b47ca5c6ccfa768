import CVMSupport

/// A raw disk image: the file's bytes are the virtual disk. Holes (SEEK_HOLE) are not stored.
public final class RawReader: DiskReader {
    public let source: ByteSource
    public var format: DiskFormat { .raw }
    public var virtualSize: UInt64 { source.size }

    public init(source: ByteSource) {
        self.source = source
    }

    public func storedRanges() throws -> [Range<UInt64>] { source.dataRanges() }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkVirtualRange(offset: offset, count: buffer.count, name: source.name)
        try source.read(into: buffer, at: offset)
    }
}

/// Writes a sparse raw image: zero blocks become holes, the length is set at the end.
public final class RawWriter: DiskWriter {
    private let output: FileDescriptor
    public let outputVirtualSize: UInt64
    /// Where the raw bytes start in the output (VHD fixed reuses this writer with 0).
    private let base: UInt64

    public init(output: FileDescriptor, inputVirtualSize: UInt64, base: UInt64 = 0, outputVirtualSize: UInt64? = nil) {
        self.output = output
        self.base = base
        self.outputVirtualSize = outputVirtualSize ?? inputVirtualSize
    }

    public func write(_ piece: DataPiece) throws {
        // Coalesce consecutive non-zero blocks into one pwrite each.
        let block = DiskGeometry.blockSize
        var i = 0
        let n = piece.zeroBlocks.count
        while i < n {
            if piece.zeroBlocks[i] { i += 1; continue }
            var j = i
            while j < n, !piece.zeroBlocks[j] { j += 1 }
            let start = i * block
            let end = min(j * block, piece.bytes.count)
            try output.write(UnsafeRawBufferPointer(rebasing: piece.bytes[start..<end]),
                             at: base + piece.offset + UInt64(start))
            i = j
        }
    }

    public func writeZeros(at offset: UInt64, length: UInt64) throws {}

    public func finish() throws {
        try output.truncate(to: base + outputVirtualSize)
    }
}
