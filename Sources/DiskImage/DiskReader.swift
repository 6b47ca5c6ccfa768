import CVMSupport

/// A virtual disk read out of some container format.
///
/// Every format (raw, qcow2, VHD, VMDK, GCP tar.gz) implements this one interface; the
/// converter, GPT parser and later update-disk know nothing of any format.
public protocol DiskReader: AnyObject {
    var format: DiskFormat { get }
    /// Size of the virtual disk in bytes (what the VM sees).
    var virtualSize: UInt64 { get }
    /// Ranges of the virtual disk that the image stores (ascending, non-overlapping, within
    /// `virtualSize`). Everything outside them reads as zeros, so conversion skips it.
    /// Coarse is fine: a stored range may still contain zeros.
    func storedRanges() throws -> [Range<UInt64>]
    /// Reads virtual-disk bytes `[offset, offset + buffer.count)`, which must lie within
    /// `virtualSize`. Holes and unallocated blocks read as zeros.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
    /// True when reading backwards is expensive (a gzip stream must be decompressed from
    /// the start again). Callers then read in ascending order.
    var isSequential: Bool { get }
}

extension DiskReader {
    public var isSequential: Bool { false }

    /// Bytes of the virtual disk the image stores (holes and unallocated blocks excluded).
    public func allocatedBytes() throws -> UInt64 {
        try storedRanges().reduce(0) { $0 + ($1.upperBound - $1.lowerBound) }
    }

    /// Convenience for small metadata reads.
    public func bytes(count: Int, at offset: UInt64) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return out
    }

    /// Validates a virtual-disk read request (shared by the formats).
    public func checkVirtualRange(offset: UInt64, count: Int, name: String) throws {
        guard offset <= virtualSize, UInt64(count) <= virtualSize - offset else {
            throw CVMError.invalid("\(name): read of \(count) bytes at \(offset) is beyond the virtual disk size \(virtualSize)")
        }
    }
}

/// Indices of the fixed-size chunks (EBS blocks, page-blob windows) that intersect stored
/// ranges, ascending, each once: what an uploader reads, everything else being zeros.
public struct StoredChunkIndices {
    private let ranges: [Range<UInt64>]
    private let chunkSize: UInt64
    private var rangeIndex = 0
    private var nextChunk: UInt64 = 0

    public init(ranges: [Range<UInt64>], chunkSize: UInt64, limit: UInt64) {
        self.ranges = normalizeRanges(ranges.map { $0.clamped(to: 0..<limit) })
        self.chunkSize = chunkSize
    }

    public mutating func next() -> UInt64? {
        while rangeIndex < ranges.count {
            let range = ranges[rangeIndex]
            let first = max(nextChunk, range.lowerBound / chunkSize)
            let end = (range.upperBound + chunkSize - 1) / chunkSize
            if first < end {
                nextChunk = first + 1
                return first
            }
            rangeIndex += 1
        }
        return nil
    }
}

/// Merges and sorts ranges; helper for formats that collect stored blocks.
public func normalizeRanges(_ ranges: [Range<UInt64>]) -> [Range<UInt64>] {
    let sorted = ranges.filter { !$0.isEmpty }.sorted { $0.lowerBound < $1.lowerBound }
    var out: [Range<UInt64>] = []
    for r in sorted {
        if let last = out.last, r.lowerBound <= last.upperBound {
            out[out.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
        } else {
            out.append(r)
        }
    }
    return out
}
