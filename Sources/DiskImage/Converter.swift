import CVMSupport

/// Streams a virtual disk from any reader into any writer.
///
/// Only the reader's stored ranges are read (rounded out to 1 MiB); within them each 64 KiB
/// block is checked for zeros so writers can skip it. Memory use is one batch buffer,
/// whatever the disk size.
public struct DiskConverter {
    /// Bytes read per batch; writers compress a batch on all cores.
    public var batchSize: Int = 8 << 20

    public init() {}

    public struct Stats: Sendable {
        /// Virtual bytes read from stored ranges (the rest was skipped as holes).
        public var bytesRead: UInt64 = 0
        /// Virtual bytes in non-zero 64 KiB blocks.
        public var dataBytes: UInt64 = 0
    }

    /// Copies `reader` into `writer` and calls `writer.finish()`.
    /// - Parameter progress: receives virtual-disk positions as they are passed.
    @discardableResult
    public func convert(from reader: DiskReader, to writer: DiskWriter,
                        progress: ((UInt64) -> Void)? = nil) throws -> Stats {
        let size = reader.virtualSize
        let align = DiskGeometry.pieceAlignment
        // Stored ranges rounded out to the piece alignment, clipped to the disk, merged.
        let ranges = normalizeRanges(try reader.storedRanges().map { r in
            let lo = r.lowerBound - r.lowerBound % align
            let hi = min(DiskGeometry.roundUp(r.upperBound, to: align), size)
            return lo..<hi
        })
        var stats = Stats()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: batchSize, alignment: 4096)
        defer { buffer.deallocate() }
        let block = DiskGeometry.blockSize

        var position: UInt64 = 0
        for range in ranges {
            if range.lowerBound > position {
                try writer.writeZeros(at: position, length: range.lowerBound - position)
                position = range.lowerBound
                progress?(position)
            }
            while position < range.upperBound {
                let count = Int(min(UInt64(batchSize), range.upperBound - position))
                let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                try reader.read(into: chunk, at: position)
                stats.bytesRead += UInt64(count)
                let blocks = (count + block - 1) / block
                var zero = [Bool](repeating: false, count: blocks)
                var allZero = true
                for b in 0..<blocks {
                    let lo = b * block, hi = min(lo + block, count)
                    zero[b] = isAllZero(UnsafeRawBufferPointer(rebasing: chunk[lo..<hi]))
                    if !zero[b] { stats.dataBytes += UInt64(hi - lo); allZero = false }
                }
                if allZero {
                    try writer.writeZeros(at: position, length: UInt64(count))
                } else {
                    try writer.write(DataPiece(offset: position, bytes: UnsafeRawBufferPointer(chunk), zeroBlocks: zero))
                }
                position += UInt64(count)
                progress?(position)
            }
        }
        if position < size {
            try writer.writeZeros(at: position, length: size - position)
            position = size
        }
        try writer.finish()
        progress?(size)
        return stats
    }
}
