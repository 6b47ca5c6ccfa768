import CVMSupport

/// Reads qcow2 (versions 2 and 3), including zlib-compressed clusters and backing files.
///
/// The header and the L1/L2 tables are parsed here, to know which clusters the image stores
/// (for `storedRanges`) and to validate every offset before use. Stored clusters are read
/// through libqcow. Clusters the image does not store come from the backing file when there
/// is one (any format cvm-cli reads; chains up to 8 deep), else read as zeros; version 3
/// zero-flag clusters read as zeros. qcow version 1, encryption, external data files,
/// extended L2 entries and zstd compression are refused as unsupported.
public final class QCOW2Reader: DiskReader {
    public let path: String
    public let source: ByteSource
    public var format: DiskFormat { .qcow2 }
    public var virtualSize: UInt64 { header.size }
    /// The disk under this image's unallocated clusters, if the image has a backing file.
    public let backing: DiskReader?

    let header: QCOW2Header
    private let map: QCOW2ClusterMap
    private let library: LibQcowFile
    /// Serializes libqcow and the L2 cache.
    private let lock = NSLockLite()

    /// Opens the qcow2 image at `path`; `source` is the same file, used for the metadata.
    public convenience init(path: String, source: ByteSource) throws {
        var chain = QCOW2BackingChain()
        if let id = QCOW2BackingChain.identity(of: source, path: path) { chain.files.append(id) }
        try self.init(path: path, source: source, chain: chain)
    }

    init(path: String, source: ByteSource, chain: QCOW2BackingChain) throws {
        self.path = path
        self.source = source
        header = try QCOW2Header.read(source)
        map = QCOW2ClusterMap(header: header, source: source)
        library = try LibQcowFile(path: path, hasBackingFile: header.backingFileName != nil)
        guard library.mediaSize == header.size else {
            throw CVMError.invalid("\(path): libqcow reports a disk size of \(library.mediaSize) bytes but the qcow2 header says \(header.size)")
        }
        if let name = header.backingFileName {
            backing = try QCOW2Reader.openBacking(name: name, declaredFormat: header.backingFormat,
                                                  imagePath: path, chain: chain)
        } else {
            backing = nil
        }
    }

    /// This image's clusters (widened to whole MiB) plus the backing file's stored ranges
    /// within this disk.
    public func storedRanges() throws -> [Range<UInt64>] {
        let granularity = max(header.clusterSize, DiskGeometry.pieceAlignment)
        var ranges = try lock.withLock { try map.storedRanges(granularity: granularity) }
        if let backing {
            let limit = min(virtualSize, backing.virtualSize)
            for r in try backing.storedRanges() where r.lowerBound < limit {
                ranges.append(r.lowerBound..<min(r.upperBound, limit))
            }
            ranges = normalizeRanges(ranges)
        }
        return ranges
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkVirtualRange(offset: offset, count: buffer.count, name: path)
        let end = offset + UInt64(buffer.count)
        let clusterBits = UInt64(header.clusterBits)
        try lock.withLock {
            var position = offset
            while position < end {
                // A run of clusters of one kind is served by one call.
                let kind = try map.kind(ofCluster: position >> clusterBits)
                var runEnd = min(((position >> clusterBits) + 1) << clusterBits, end)
                while runEnd < end, try map.kind(ofCluster: runEnd >> clusterBits) == kind {
                    runEnd = min(runEnd + header.clusterSize, end)
                }
                let lo = Int(position - offset), hi = Int(runEnd - offset)
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[lo..<hi])
                switch kind {
                case .stored:
                    try library.read(into: part, at: position)
                case .zeros:
                    part.initializeMemory(as: UInt8.self, repeating: 0)
                case .unallocated:
                    try readBacking(into: part, at: position)
                }
                position = runEnd
            }
        }
    }

    /// Bytes of the backing disk; zeros past its end or without one.
    private func readBacking(into part: UnsafeMutableRawBufferPointer, at position: UInt64) throws {
        var available = 0
        if let backing, position < backing.virtualSize {
            available = Int(min(UInt64(part.count), backing.virtualSize - position))
            try backing.read(into: UnsafeMutableRawBufferPointer(rebasing: part[0..<available]), at: position)
        }
        if available < part.count {
            UnsafeMutableRawBufferPointer(rebasing: part[available...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }
}
