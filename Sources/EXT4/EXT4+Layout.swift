import CVMSupport

/// Sizes of a new file system: groups, inodes, metadata blocks.
struct Geometry {
    static let blockSize = 4096
    static let inodeSize = 256
    static let blocksPerGroup: UInt64 = 32768
    /// One inode per 16 KiB of space, as mke2fs's default `inode_ratio`.
    static let bytesPerInode: UInt64 = 16384

    let blockCount: UInt64
    let groupCount: UInt64
    let inodesPerGroup: UInt32
    let descriptorBlocks: UInt64

    var inodeTableBlocks: UInt64 { UInt64(inodesPerGroup) * UInt64(Geometry.inodeSize) / UInt64(Geometry.blockSize) }
    var inodeCount: UInt64 { groupCount * UInt64(inodesPerGroup) }

    /// - Parameters:
    ///   - bytes: partition size.
    ///   - inodesNeeded: highest inode number that will be used.
    init(bytes: UInt64, inodesNeeded: UInt64, name: String) throws {
        let bs = UInt64(Geometry.blockSize), bpg = Geometry.blocksPerGroup
        var blocks = bytes / bs
        guard blocks >= 256 else {
            throw CVMError.invalid("\(name): partition of \(bytes) bytes is too small for ext4; expected at least 1 MiB")
        }
        guard blocks <= 1 << 48 else {
            throw CVMError.unsupported("\(name): partition of \(bytes) bytes is larger than this formatter supports (1 EiB)")
        }
        func groups(_ b: UInt64) -> UInt64 { (b + bpg - 1) / bpg }
        func gdtBlocks(_ g: UInt64) -> UInt64 { (g * 64 + bs - 1) / bs }
        // A last group too small for its own metadata and some data is left out, as mke2fs does.
        let lastGroup = groups(blocks) - 1
        let lastSize = blocks - lastGroup * bpg
        if lastGroup > 0, lastSize < 1 + gdtBlocks(groups(blocks)) + 50 { blocks -= lastSize }
        blockCount = blocks
        groupCount = groups(blocks)
        descriptorBlocks = gdtBlocks(groupCount)

        let perBlock = UInt64(Geometry.blockSize / Geometry.inodeSize)
        let byRatio = blocks * bs / Geometry.bytesPerInode
        let wanted = max(byRatio, inodesNeeded)
        var perGroup = (wanted + groupCount - 1) / groupCount
        perGroup = max(perBlock, (perGroup + perBlock - 1) / perBlock * perBlock)
        let cap = UInt64(8 * Geometry.blockSize)           // one bitmap block per group
        if perGroup > cap {
            guard inodesNeeded <= cap * groupCount else {
                throw CVMError(.noSpace, "\(name): \(inodesNeeded) inodes do not fit in a \(bytes)-byte ext4 (at most \(cap * groupCount))")
            }
            perGroup = cap
        }
        guard perGroup * groupCount < UInt64(UInt32.max) else {
            throw CVMError.unsupported("\(name): partition of \(bytes) bytes needs more than 2^32 inodes")
        }
        inodesPerGroup = UInt32(perGroup)
    }
}

/// Hands out blocks in ascending order, skipping superblock backups, and remembers what is used.
struct BlockAllocator {
    let blockCount: UInt64
    /// Superblock + descriptor copies, sorted; never handed out.
    private(set) var reserved: [Range<UInt64>]
    /// Everything handed out, sorted and coalesced.
    private(set) var allocated: [Range<UInt64>] = []
    private(set) var next: UInt64 = 0
    let name: String

    init(blockCount: UInt64, reserved: [Range<UInt64>], name: String) {
        self.blockCount = blockCount
        self.reserved = reserved
        self.name = name
    }

    private var reservedIndex = 0

    /// Moves `next` past any reserved range it is in; returns where the next reserved range starts.
    private mutating func skipReserved() -> UInt64 {
        while reservedIndex < reserved.count, reserved[reservedIndex].upperBound <= next { reservedIndex += 1 }
        if reservedIndex < reserved.count, reserved[reservedIndex].lowerBound <= next {
            next = reserved[reservedIndex].upperBound
            reservedIndex += 1
        }
        while reservedIndex < reserved.count, reserved[reservedIndex].upperBound <= next { reservedIndex += 1 }
        return reservedIndex < reserved.count ? min(reserved[reservedIndex].lowerBound, blockCount) : blockCount
    }

    private mutating func record(_ r: Range<UInt64>) {
        if let last = allocated.last, last.upperBound == r.lowerBound {
            allocated[allocated.count - 1] = last.lowerBound..<r.upperBound
        } else {
            allocated.append(r)
        }
    }

    private func full() -> CVMError {
        CVMError(.noSpace, "\(name): the files do not fit in the partition (\(blockCount) blocks of \(Geometry.blockSize) bytes)")
    }

    /// Up to `maxLength` contiguous blocks (at least one).
    mutating func allocate(upTo maxLength: UInt64) throws -> Range<UInt64> {
        let limit = skipReserved()
        guard next < limit else { throw full() }
        let r = next..<(next + min(maxLength, limit - next))
        next = r.upperBound
        record(r)
        return r
    }

    /// Exactly `count` contiguous blocks; blocks skipped to find room stay free.
    mutating func allocateContiguous(_ count: UInt64) throws -> UInt64 {
        while true {
            let limit = skipReserved()
            guard next < blockCount else { throw full() }
            if limit - next >= count {
                let start = next
                next += count
                record(start..<next)
                return start
            }
            guard limit < blockCount else { throw full() }
            next = limit
        }
    }

    /// Runs covering `count` blocks.
    mutating func allocateRuns(_ count: UInt64, maxRun: UInt64) throws -> [Range<UInt64>] {
        var out: [Range<UInt64>] = []
        var left = count
        while left > 0 {
            let r = try allocate(upTo: min(left, maxRun))
            out.append(r)
            left -= UInt64(r.count)
        }
        return out
    }

    /// All used blocks (reserved and allocated), sorted.
    var usedRanges: [Range<UInt64>] {
        (reserved + allocated).sorted { $0.lowerBound < $1.lowerBound }
    }
}
