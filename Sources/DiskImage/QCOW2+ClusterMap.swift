import CVMSupport

/// Where the clusters of a qcow2 virtual disk are, from the L1 and L2 tables.
///
/// L1 entries are read from the file when their L2 table is needed, and a few L2 tables are
/// cached, so memory stays bounded whatever the disk size. Every entry is checked against the
/// file before use. Not thread-safe: the reader serializes calls.
final class QCOW2ClusterMap {
    /// What a cluster of the virtual disk is.
    enum Kind: Equatable {
        /// Not in this image: read from the backing file, or zeros without one.
        case unallocated
        /// Version 3 zero flag: reads as zeros, whatever the backing file holds.
        case zeros
        /// Stored in this image (plain or compressed): read through libqcow.
        case stored
    }

    /// Bits 9–55 of L1 and standard L2 entries: the host offset.
    static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    static let compressedFlag: UInt64 = 1 << 62
    static let zeroFlag: UInt64 = 1
    /// L2 tables kept in memory: at most this many bytes and this many tables (reads are
    /// mostly sequential, so a few recent tables are all that is ever reused).
    static let cacheBytes: UInt64 = 8 << 20
    static let cacheTables: UInt64 = 64

    let header: QCOW2Header
    let source: ByteSource
    private var cache: [UInt64: [UInt64]] = [:]
    private var cacheOrder: [UInt64] = []
    private let cacheCapacity: Int

    init(header: QCOW2Header, source: ByteSource) {
        self.header = header
        self.source = source
        cacheCapacity = Int(max(1, min(QCOW2ClusterMap.cacheTables, QCOW2ClusterMap.cacheBytes / header.clusterSize)))
    }

    /// The kind of virtual cluster `index` (which must lie within the disk).
    func kind(ofCluster index: UInt64) throws -> Kind {
        let table = try l2Table(index / header.l2Entries)
        let slot = Int(index % header.l2Entries)
        guard slot < table.count else { return .unallocated }   // empty table: L1 entry unset
        return kind(ofEntry: table[slot])
    }

    func kind(ofEntry entry: UInt64) -> Kind {
        if entry & QCOW2ClusterMap.compressedFlag != 0 { return .stored }
        if header.hasZeroFlag, entry & QCOW2ClusterMap.zeroFlag != 0 { return .zeros }
        return entry & QCOW2ClusterMap.offsetMask != 0 ? .stored : .unallocated
    }

    /// Virtual ranges of the clusters this image stores, widened to multiples of
    /// `granularity` (≥ the cluster size) so a fragmented image yields a short list.
    func storedRanges(granularity: UInt64) throws -> [Range<UInt64>] {
        let size = header.size
        let clusterSize = header.clusterSize
        var ranges: [Range<UInt64>] = []
        let tables = header.l1EntriesNeeded
        let chunkEntries: UInt64 = 4096
        var first: UInt64 = 0
        while first < tables {
            let count = min(chunkEntries, tables - first)
            let l1 = try source.bytes(count: Int(count) * 8, at: header.l1TableOffset + first * 8)
            for j in 0..<count {
                let l1Index = first + j
                let table = try loadL2(l1Index: l1Index, entry: l1.be64(Int(j) * 8))
                for (slot, entry) in table.enumerated() where kind(ofEntry: entry) == .stored {
                    let start = (l1Index * header.l2Entries + UInt64(slot)) * clusterSize
                    guard start < size else { break }
                    let lo = start - start % granularity
                    let hi = min(DiskGeometry.roundUp(start + clusterSize, to: granularity), size)
                    if let last = ranges.last, lo <= last.upperBound {
                        ranges[ranges.count - 1] = last.lowerBound..<max(hi, last.upperBound)
                    } else {
                        ranges.append(lo..<hi)
                    }
                }
            }
            first += count
        }
        return ranges
    }

    /// The L2 table for L1 slot `l1Index`, from the cache or the file.
    private func l2Table(_ l1Index: UInt64) throws -> [UInt64] {
        if let table = cache[l1Index] { return table }
        let entry = try source.bytes(count: 8, at: header.l1TableOffset + l1Index * 8).be64(0)
        let table = try loadL2(l1Index: l1Index, entry: entry)
        if cache.count >= cacheCapacity, !cacheOrder.isEmpty {
            cache[cacheOrder.removeFirst()] = nil
        }
        cache[l1Index] = table
        cacheOrder.append(l1Index)
        return table
    }

    /// Reads and checks the L2 table an L1 entry points to; empty when the entry is unset.
    private func loadL2(l1Index: UInt64, entry: UInt64) throws -> [UInt64] {
        let name = source.name
        let clusterSize = header.clusterSize
        let offset = entry & QCOW2ClusterMap.offsetMask
        guard offset != 0 else { return [] }
        guard offset % clusterSize == 0, offset >= clusterSize, offset <= source.size,
              source.size - offset >= clusterSize else {
            throw CVMError.invalid("\(name): qcow2 L1 entry \(l1Index) points to an L2 table at offset \(offset), which is unaligned, inside the header cluster or beyond the end of the file (size \(source.size)); the file is truncated or corrupt")
        }
        let raw = try source.bytes(count: Int(clusterSize), at: offset)
        // Only entries inside the virtual disk matter; the last table may extend past it.
        let firstVirtual = l1Index * header.l2Coverage
        let used = min(header.l2Entries, (header.size - firstVirtual + clusterSize - 1) / clusterSize)
        var table = [UInt64](repeating: 0, count: Int(used))
        let compressedOffsetBits = 62 - (UInt64(header.clusterBits) - 8)
        for slot in 0..<Int(used) {
            let e = raw.be64(slot * 8)
            table[slot] = e
            let host: UInt64
            var aligned = true
            switch kind(ofEntry: e) {
            case .unallocated, .zeros:
                continue
            case .stored where e & QCOW2ClusterMap.compressedFlag != 0:
                host = e & ((1 << compressedOffsetBits) - 1)
            case .stored:
                host = e & QCOW2ClusterMap.offsetMask
                aligned = host % clusterSize == 0
            }
            // Cluster 0 holds the header, so data starts at the second cluster at the earliest.
            guard aligned, host >= clusterSize, host < source.size else {
                let virtual = firstVirtual + UInt64(slot) * clusterSize
                throw CVMError.invalid("\(name): qcow2 L2 entry for virtual offset \(virtual) points to host offset \(host), which is unaligned, inside the header cluster or beyond the end of the file (size \(source.size)); the file is truncated or corrupt")
            }
        }
        return table
    }
}
