import CVMSupport

/// Finds the partition that receives the workload.
public enum DataPartition {
    /// The partition named `data` in the GPT, or whose ext4 label is `data`; `index` (1-based,
    /// as `inspect` shows) overrides. Absence or ambiguity is an error listing the partitions.
    public static func find(in inspection: DiskInspection, name: String, index: Int? = nil) throws -> GPT.Partition {
        guard let parts = inspection.partitions else {
            throw CVMError.invalid("\(name): has no GPT; expected a GPT disk with a data partition")
        }
        let listing = parts.map { p in
            "\(p.partition.index) '\(p.partition.name)'" + (p.filesystem.map { " (\($0.type) label '\($0.label)')" } ?? "")
        }.joined(separator: ", ")
        if let index {
            guard let p = parts.first(where: { $0.partition.index == index }) else {
                throw CVMError.usage("--partition \(index): \(name) has no partition \(index); partitions: \(listing)")
            }
            return p.partition
        }
        let matches = parts.filter { $0.partition.name == "data" || $0.filesystem?.label == "data" }
        switch matches.count {
        case 1: return matches[0].partition
        case 0:
            throw CVMError.invalid("\(name): no partition named 'data' or with filesystem label 'data'; partitions: \(listing); choose one with --partition N")
        default:
            throw CVMError.invalid("\(name): several partitions could be the data partition (\(matches.map { "\($0.partition.index)" }.joined(separator: ", "))); partitions: \(listing); choose one with --partition N")
        }
    }
}

/// A virtual disk with one byte range replaced by another reader's bytes (update-disk
/// replaces the data partition this way and re-encodes the whole disk in one pass).
public final class OverlayDiskReader: DiskReader {
    public let base: DiskReader
    public let range: Range<UInt64>
    /// Provides the replacement bytes, addressed from 0 (its size must equal the range's).
    public let replacement: DiskReader

    public var format: DiskFormat { base.format }
    public var virtualSize: UInt64 { base.virtualSize }
    public var isSequential: Bool { base.isSequential || replacement.isSequential }

    public init(base: DiskReader, replacing range: Range<UInt64>, with replacement: DiskReader) throws {
        guard range.upperBound <= base.virtualSize, replacement.virtualSize == UInt64(range.count) else {
            throw CVMError.invalid("overlay of \(replacement.virtualSize) bytes does not fit the range \(range) of a \(base.virtualSize)-byte disk")
        }
        self.base = base
        self.range = range
        self.replacement = replacement
    }

    public func storedRanges() throws -> [Range<UInt64>] {
        var out: [Range<UInt64>] = []
        for r in try base.storedRanges() {
            if r.lowerBound < range.lowerBound { out.append(r.lowerBound..<min(r.upperBound, range.lowerBound)) }
            if r.upperBound > range.upperBound { out.append(max(r.lowerBound, range.upperBound)..<r.upperBound) }
        }
        for r in try replacement.storedRanges() {
            out.append((r.lowerBound + range.lowerBound)..<(r.upperBound + range.lowerBound))
        }
        return normalizeRanges(out)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkVirtualRange(offset: offset, count: buffer.count, name: "overlay")
        let end = offset + UInt64(buffer.count)
        var pos = offset
        while pos < end {
            let chunkEnd: UInt64
            let dst = Int(pos - offset)
            if pos < range.lowerBound {
                chunkEnd = min(end, range.lowerBound)
                try base.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[dst..<dst + Int(chunkEnd - pos)]), at: pos)
            } else if pos < range.upperBound {
                chunkEnd = min(end, range.upperBound)
                try replacement.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[dst..<dst + Int(chunkEnd - pos)]),
                                     at: pos - range.lowerBound)
            } else {
                chunkEnd = end
                try base.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[dst..<dst + Int(chunkEnd - pos)]), at: pos)
            }
            pos = chunkEnd
        }
    }
}

/// A virtual disk of zeros that stores nothing: overlaid on a range, it makes writers leave a
/// hole there (update-disk then formats the new file system into that hole).
public final class ZeroDiskReader: DiskReader {
    public let virtualSize: UInt64
    public var format: DiskFormat { .raw }

    public init(size: UInt64) { virtualSize = size }

    public func storedRanges() throws -> [Range<UInt64>] { [] }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkVirtualRange(offset: offset, count: buffer.count, name: "zeros")
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }
}
