import CVMSupport

/// What the formatter needs besides the entries.
public struct EXT4FormatOptions: Sendable {
    /// Partition size in bytes; the file system uses whole 4 KiB blocks of it.
    public var size: UInt64
    /// File-system UUID (16 bytes). Also seeds the directory hash and metadata checksums.
    public var uuid: [UInt8]
    /// Volume label, at most 16 bytes.
    public var label: [UInt8]
    /// Written as the superblock's times and used for the root and `lost+found` when the
    /// entries do not provide them. Nothing reads the clock.
    public var timestamp: EXT4Timestamp
    /// Blocks reserved for root; nil means 5 % (mke2fs's default).
    public var reservedBlocks: UInt64?
    /// Whether to create an internal journal (sized as mke2fs would).
    public var journal: Bool
    /// Names the output in error messages.
    public var name: String
    /// Longest extent written (tests lower it to build deep extent trees from small files).
    var maxExtentBlocks: UInt64 = ExtentTree.maxInitializedLength

    public init(size: UInt64, uuid: [UInt8], label: [UInt8], timestamp: EXT4Timestamp,
                reservedBlocks: UInt64? = nil, journal: Bool = true, name: String) {
        self.size = size
        self.uuid = uuid
        self.label = label
        self.timestamp = timestamp
        self.reservedBlocks = reservedBlocks
        self.journal = journal
        self.name = name
    }
}

/// Counts of what a format wrote.
public struct EXT4FormatSummary: Sendable, Equatable {
    public var blockCount: UInt64
    public var usedBlocks: UInt64
    public var inodeCount: UInt64
    public var usedInodes: UInt64
}

/// Writes a new ext4 file system from a list of entries.
///
/// Layout: 4 KiB blocks, 32768 blocks per group, 256-byte inodes, `sparse_super` backups, all
/// bitmaps and inode tables packed at the start (`flex_bg`), then the journal, then each inode's
/// data in inode order. Features: `has_journal ext_attr dir_index filetype extents 64bit flex_bg
/// sparse_super large_file huge_file dir_nlink extra_isize metadata_csum` (see docs/ext4.md).
///
/// Deterministic: entries are sorted by path, inode numbers follow that order (root 2,
/// `lost+found` 11, then 12, 13, ...), blocks are handed out in ascending order, directories are
/// linear and sorted, the hash seed comes from the UUID and every time comes from the caller.
///
/// - Note: writes only metadata and file data; every other block must already read as zeros
///   (write into a new sparse file or a zeroed range). Directories are linear (no htree):
///   the kernel and e2fsck accept them; lookups in very large directories are slower until
///   `e2fsck -D` indexes them. Extended attributes must fit in the inode or one block.
public struct EXT4Formatter {
    public let options: EXT4FormatOptions

    public init(options: EXT4FormatOptions) throws {
        guard options.uuid.count == 16 else {
            throw CVMError.usage("\(options.name): ext4 UUID must be 16 bytes, got \(options.uuid.count)")
        }
        guard options.label.count <= 16 else {
            throw CVMError.usage("\(options.name): ext4 label '\(String(decoding: options.label, as: UTF8.self))' is longer than 16 bytes")
        }
        self.options = options
    }

    /// Writes the file system to `output`. `entries` may come in any order; each path's parent
    /// must be among them (the root and `/lost+found` are added when missing).
    @discardableResult
    public func format(_ entries: [EXT4NewEntry], to output: EXT4Output) throws -> EXT4FormatSummary {
        var job = try FormatJob(options: options, entries: entries, output: output)
        return try job.run()
    }
}

/// One run of the formatter: the planned tree, geometry and allocation state.
private struct FormatJob {
    struct Node {
        var entry: EXT4NewEntry
        var parent: Int
        var children: [Int] = []
        var inode: UInt32 = 0
        /// For a hard link: the node that owns the inode.
        var linkOf: Int?
        var linkCount: UInt32 = 1
    }

    let options: EXT4FormatOptions
    let output: EXT4Output
    var nodes: [Node] = []
    /// Node owning each inode, indexed by inode number (special inodes have none).
    var owners: [Int?] = []
    let geometry: Geometry
    var allocator: BlockAllocator
    let seed: UInt32
    var blockBitmaps: [UInt64] = []
    var inodeBitmaps: [UInt64] = []
    var inodeTables: [UInt64] = []
    var directoriesPerGroup: [UInt32]
    var journalRoot: [UInt8]?
    var journalSize: UInt64 = 0

    var name: String { options.name }
    var bs: Int { Geometry.blockSize }

    init(options: EXT4FormatOptions, entries: [EXT4NewEntry], output: EXT4Output) throws {
        self.options = options
        self.output = output
        seed = CRC32C.update(~0, options.uuid)
        let t = options.timestamp
        var list = entries
        if !list.contains(where: { $0.components.isEmpty }) {
            list.append(EXT4NewEntry(components: [], metadata: EXT4Metadata(type: .directory, permissions: 0o755, times: EXT4Times(all: t))))
        }
        let lostFound: [[UInt8]] = [Array("lost+found".utf8)]
        if !list.contains(where: { $0.components == lostFound }) {
            list.append(EXT4NewEntry(components: lostFound, metadata: EXT4Metadata(type: .directory, permissions: 0o700, times: EXT4Times(all: t))))
        }
        list.sort { $0.components.lexicographicallyPrecedes($1.components) { $0.lexicographicallyPrecedes($1) } }

        // Tree: parents before children (sorted order is a depth-first preorder).
        var index: [[[UInt8]]: Int] = [:]
        var firstOfKey: [String: Int] = [:]
        for entry in list {
            let path = entry.path
            if index[entry.components] != nil { throw CVMError.invalid("\(options.name): \(path) is given twice") }
            var node = Node(entry: entry, parent: 0)
            if let last = entry.components.last {
                guard !last.isEmpty, last.count <= 255, !last.contains(0), !last.contains(0x2F), last != [0x2E], last != [0x2E, 0x2E] else {
                    throw CVMError.invalid("\(options.name): \(path): name is empty, longer than 255 bytes, or contains '/' or NUL")
                }
                guard let parent = index[Array(entry.components.dropLast())] else {
                    throw CVMError.invalid("\(options.name): \(path): its parent directory is not among the entries")
                }
                guard nodes[parent].entry.metadata.type == .directory, nodes[parent].linkOf == nil else {
                    throw CVMError.invalid("\(options.name): \(path): its parent is not a directory")
                }
                node.parent = parent
            } else if entry.metadata.type != .directory {
                throw CVMError.invalid("\(options.name): the root must be a directory")
            }
            if let key = entry.hardLinkKey {
                if let first = firstOfKey[key] {
                    guard entry.metadata.type != .directory, nodes[first].entry.metadata.type == entry.metadata.type else {
                        throw CVMError.invalid("\(options.name): \(path): hard link to \(nodes[first].entry.path) must be a non-directory of the same type")
                    }
                    node.linkOf = first
                } else {
                    firstOfKey[key] = nodes.count
                }
            }
            for x in entry.metadata.xattrs where x.name.count > 255 || (x.name.isEmpty && x.nameIndex == 0) {
                throw CVMError.invalid("\(options.name): \(path): extended attribute name '\(x.fullName)' is empty or longer than 255 bytes")
            }
            if entry.metadata.type == .symlink {
                let n = entry.symlinkTarget?.count ?? 0
                guard n > 0, n < Geometry.blockSize else {
                    throw CVMError.invalid("\(options.name): \(path): symlink target of \(n) bytes; expected 1 to \(Geometry.blockSize - 1)")
                }
            }
            index[entry.components] = nodes.count
            if !entry.components.isEmpty { nodes[node.parent].children.append(nodes.count) }
            nodes.append(node)
        }

        // Inode numbers in path order: root 2, lost+found 11, then from 12.
        owners = Array(repeating: nil, count: 12)
        for i in nodes.indices {
            if let target = nodes[i].linkOf {
                nodes[i].inode = nodes[target].inode
                nodes[target].linkCount += 1
            } else if nodes[i].entry.components.isEmpty {
                nodes[i].inode = InodeNumber.root
                owners[2] = i
            } else if nodes[i].entry.components == lostFound {
                nodes[i].inode = InodeNumber.lostAndFound
                owners[11] = i
            } else {
                nodes[i].inode = UInt32(owners.count)
                owners.append(i)
            }
            if nodes[i].entry.metadata.type == .directory {
                nodes[nodes[i].parent].linkCount += i == 0 ? 0 : 1   // a subdirectory's ".."
            }
        }
        guard nodes[index[lostFound] ?? 0].entry.metadata.type == .directory else {
            throw CVMError.invalid("\(options.name): /lost+found must be a directory")
        }

        geometry = try Geometry(bytes: options.size, inodesNeeded: UInt64(owners.count - 1), name: options.name)
        var reserved: [Range<UInt64>] = []
        let sbLayout = FormatJob.superblockLayout()
        for g in 0..<geometry.groupCount where sbLayout.hasSuperblockBackup(group: g) {
            let start = g * Geometry.blocksPerGroup
            reserved.append(start..<min(start + 1 + geometry.descriptorBlocks, geometry.blockCount))
        }
        allocator = BlockAllocator(blockCount: geometry.blockCount, reserved: reserved, name: options.name)
        directoriesPerGroup = Array(repeating: 0, count: Int(geometry.groupCount))
    }

    /// Feature set and constants of every superblock this formatter writes.
    static func superblockLayout() -> Superblock {
        var sb = Superblock()
        sb.compat = Feature.hasJournal | Feature.extAttr | Feature.dirIndex
        sb.incompat = Feature.filetype | Feature.extents | Feature.bit64 | Feature.flexBG
        sb.roCompat = Feature.sparseSuper | Feature.largeFile | Feature.hugeFile | Feature.dirNlink
            | Feature.extraIsize | Feature.metadataCsum
        return sb
    }

    func inodeSeed(_ n: UInt32) -> UInt32 {
        CRC32C.update(CRC32C.update(seed, le32: n), le32: 0)   // generation 0
    }

    mutating func run() throws -> EXT4FormatSummary {
        // Metadata first, packed: block bitmaps, inode bitmaps, inode tables.
        for _ in 0..<geometry.groupCount { blockBitmaps.append(try allocator.allocateContiguous(1)) }
        for _ in 0..<geometry.groupCount { inodeBitmaps.append(try allocator.allocateContiguous(1)) }
        for _ in 0..<geometry.groupCount { inodeTables.append(try allocator.allocateContiguous(geometry.inodeTableBlocks)) }
        if options.journal { try writeJournal() }
        for number in 1..<owners.count {
            guard let owner = owners[number] else { continue }
            try writeInode(node: owner)
        }
        return try writeGroupsAndSuperblocks()
    }

    // MARK: output helpers

    func write(_ bytes: [UInt8], atBlock block: UInt64, offset: Int = 0) throws {
        try bytes.withUnsafeBytes { try output.write($0, at: block * UInt64(bs) + UInt64(offset)) }
    }

    func writeInodeRecord(_ record: InodeRecord, number: UInt32) throws {
        let index = UInt64(number - 1)
        let group = Int(index / UInt64(geometry.inodesPerGroup)), slot = index % UInt64(geometry.inodesPerGroup)
        let bytes = record.encoded(inodeSize: Geometry.inodeSize, number: number, checksumSeed: seed)
        try bytes.withUnsafeBytes {
            try output.write($0, at: inodeTables[group] * UInt64(bs) + slot * UInt64(Geometry.inodeSize))
        }
    }

    /// Allocates data blocks in runs of at most one extent each.
    mutating func allocateData(_ blocks: UInt64) throws -> [BlockRun] {
        var logical: UInt64 = 0
        return try allocator.allocateRuns(blocks, maxRun: max(1, min(options.maxExtentBlocks, ExtentTree.maxInitializedLength))).map { r in
            defer { logical += UInt64(r.count) }
            return BlockRun(logical: logical, physical: r.lowerBound, length: UInt64(r.count))
        }
    }

    /// Extent tree for `runs`; returns the root and how many tree blocks it took.
    mutating func extentTree(_ runs: [BlockRun], inode: UInt32) throws -> (root: [UInt8], nodeBlocks: UInt64) {
        var allocator = self.allocator
        let built = try ExtentTree.build(runs: runs, blockSize: bs, checksumSeed: inodeSeed(inode)) {
            try allocator.allocateContiguous(1)
        }
        self.allocator = allocator
        for node in built.nodes { try write(node.bytes, atBlock: node.block) }
        return (built.root, UInt64(built.nodes.count))
    }

    // MARK: journal

    mutating func writeJournal() throws {
        let blocks = Journal.blockCount(forFileSystemBlocks: geometry.blockCount)
        guard blocks > 0 else { return }
        let runs = try allocateData(blocks)
        let tree = try extentTree(runs, inode: InodeNumber.journal)
        try write(Journal.superblock(blockSize: bs, blocks: blocks, uuid: options.uuid), atBlock: runs[0].physical)
        var r = InodeRecord()
        r.mode = 0o100600
        r.linksCount = 1
        r.size = blocks * UInt64(bs)
        r.blocks = (blocks + tree.nodeBlocks) * UInt64(bs / 512)
        r.flags = InodeFlag.extents
        r.block = tree.root
        let t = options.timestamp
        (r.atime, r.mtime, r.ctime, r.crtime) = (t, t, t, t)
        try writeInodeRecord(r, number: InodeNumber.journal)
        journalRoot = tree.root
        journalSize = r.size
    }

    // MARK: inodes

    mutating func writeInode(node i: Int) throws {
        let node = nodes[i]
        let md = node.entry.metadata
        let number = node.inode
        var r = InodeRecord()
        r.mode = md.mode
        r.uid = md.uid
        r.gid = md.gid
        r.atime = md.times.access
        r.mtime = md.times.modification
        r.ctime = md.times.change
        r.crtime = md.times.creation
        r.flags = md.flags & EXT4Metadata.carriedFlags
        var blocks: UInt64 = 0

        switch md.type {
        case .directory:
            directoriesPerGroup[Int((number - 1) / geometry.inodesPerGroup)] += 1
            var entries = [DirectoryEntry(inode: number, name: [0x2E], fileType: 2),
                           DirectoryEntry(inode: nodes[node.parent].inode, name: [0x2E, 0x2E], fileType: 2)]
            for c in node.children {
                let child = nodes[c]
                entries.append(DirectoryEntry(inode: child.inode, name: child.entry.components.last ?? [],
                                              fileType: child.entry.metadata.type.direntType))
            }
            let dirBlocks = DirectoryCodec.buildBlocks(entries, blockSize: bs, checksumSeed: inodeSeed(number))
            let runs = try allocateData(UInt64(dirBlocks.count))
            var k = 0
            for run in runs {
                for j in 0..<run.length { try write(dirBlocks[k], atBlock: run.physical + j); k += 1 }
            }
            let tree = try extentTree(runs, inode: number)
            r.block = tree.root
            r.flags |= InodeFlag.extents
            r.size = UInt64(dirBlocks.count * bs)
            blocks = UInt64(dirBlocks.count) + tree.nodeBlocks
            // The parent's entry (node.linkCount starts at 1), "." and each subdirectory's "..";
            // beyond 65000 the count is 1 (`dir_nlink`).
            r.linksCount = node.linkCount + 1 >= 65000 ? 1 : UInt16(node.linkCount + 1)
        case .regular:
            let size = node.entry.content?.size ?? 0
            let runs = try node.entry.content.map { try copyAllocating($0, path: node.entry.path) } ?? []
            let tree = try extentTree(runs, inode: number)
            r.block = tree.root
            r.flags |= InodeFlag.extents
            r.size = size
            blocks = runs.reduce(0) { $0 + $1.length } + tree.nodeBlocks
        case .symlink:
            let target = node.entry.symlinkTarget ?? []
            r.size = UInt64(target.count)
            if target.count < 60 {
                r.block = target + Array(repeating: 0, count: 60 - target.count)   // fast symlink
            } else {
                let runs = try allocateData(1)
                try write(target, atBlock: runs[0].physical)
                let tree = try extentTree(runs, inode: number)
                r.block = tree.root
                r.flags |= InodeFlag.extents
                blocks = 1 + tree.nodeBlocks
            }
        case .characterDevice, .blockDevice:
            let major = md.deviceMajor, minor = md.deviceMinor
            if major < 256, minor < 256 {
                r.block.putLE32(major << 8 | minor, at: 0)
            } else {
                r.block.putLE32((minor & 0xFF) | (major & 0xFFF) << 8 | (minor & ~0xFF) << 12, at: 4)
            }
        case .fifo, .socket:
            break
        }
        if md.type != .directory { r.linksCount = UInt16(min(node.linkCount, 65000)) }

        // Extended attributes: in the inode when they fit, else in one block of their own.
        if !md.xattrs.isEmpty {
            if let area = XattrCodec.encodeInInode(md.xattrs, areaSize: Geometry.inodeSize - 160) {
                r.inlineXattrArea = area
            } else {
                let block = try allocator.allocateContiguous(1)
                guard let bytes = XattrCodec.encodeBlock(md.xattrs, blockSize: bs, blockNumber: block, checksumSeed: seed) else {
                    throw CVMError.unsupported("\(name): \(node.entry.path): extended attributes need more than one \(bs)-byte block")
                }
                try write(bytes, atBlock: block)
                r.fileACL = block
                blocks += 1
            }
        }
        r.blocks = blocks * UInt64(bs / 512)
        try writeInodeRecord(r, number: number)
    }

    /// Streams `content` through a bounded buffer into newly allocated blocks and returns the
    /// runs it used. All-zero blocks are left as holes (as `mke2fs -d` does): they read as zeros,
    /// take no space, and a sparse file carried over stays sparse.
    mutating func copyAllocating(_ content: any EXT4FileContent, path: String) throws -> [BlockRun] {
        let expected = content.size
        let blockSize = UInt64(bs)
        let maxRun = max(1, min(options.maxExtentBlocks, ExtentTree.maxInitializedLength))
        var allocator = self.allocator
        defer { self.allocator = allocator }
        let output = self.output, name = self.name, bs = self.bs
        var runs: [BlockRun] = []
        var buffer = [UInt8](repeating: 0, count: contentChunkSize)
        var filled = 0
        var flushed: UInt64 = 0      // bytes of the file already placed

        /// Allocates blocks for `count` logical blocks from `logical` and writes them.
        func place(_ bytes: UnsafeRawBufferPointer, logical: UInt64, count: UInt64) throws {
            var placed: UInt64 = 0
            while placed < count {
                let r = try allocator.allocate(upTo: min(count - placed, maxRun))
                let n = UInt64(r.count)
                let from = Int(placed * blockSize), to = min(bytes.count, Int((placed + n) * blockSize))
                try output.write(UnsafeRawBufferPointer(rebasing: bytes[from..<to]), at: r.lowerBound * blockSize)
                let l = logical + placed
                if let last = runs.last, last.logical + last.length == l, last.physical + last.length == r.lowerBound,
                   last.length + n <= maxRun {
                    runs[runs.count - 1].length += n
                } else {
                    runs.append(BlockRun(logical: l, physical: r.lowerBound, length: n))
                }
                placed += n
            }
        }
        func flush() throws {
            try buffer.withUnsafeBytes { all in
                let data = UnsafeRawBufferPointer(rebasing: all[0..<filled])
                let firstLogical = flushed / blockSize
                var block = 0, blocks = (filled + bs - 1) / bs
                while block < blocks {
                    // A stretch of non-zero blocks, then skip the zero ones.
                    var end = block
                    while end < blocks, !isZero(data, block: end, blockSize: bs) { end += 1 }
                    if end > block {
                        let slice = UnsafeRawBufferPointer(rebasing: data[(block * bs)..<min(filled, end * bs)])
                        try place(slice, logical: firstLogical + UInt64(block), count: UInt64(end - block))
                    }
                    block = end
                    while block < blocks, isZero(data, block: block, blockSize: bs) { block += 1 }
                }
            }
            flushed += UInt64(filled)
            filled = 0
        }
        try content.stream { chunk in
            var offset = 0
            while offset < chunk.count {
                guard flushed + UInt64(filled) < expected else {
                    throw CVMError.invalid("\(name): \(path): content is longer than its size \(expected)")
                }
                let n = min(chunk.count - offset, buffer.count - filled, Int(min(UInt64(Int.max), expected - flushed - UInt64(filled))))
                buffer.withUnsafeMutableBytes { dst in
                    UnsafeMutableRawBufferPointer(rebasing: dst[filled..<(filled + n)])
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: chunk[offset..<(offset + n)]))
                }
                filled += n
                offset += n
                if filled == buffer.count { try flush() }
            }
        }
        try flush()
        guard flushed == expected else {
            throw CVMError.invalid("\(name): \(path): content ended after \(flushed) bytes; its size is \(expected)")
        }
        return runs
    }

    // MARK: groups and superblocks

    mutating func writeGroupsAndSuperblocks() throws -> EXT4FormatSummary {
        let bpg = Geometry.blocksPerGroup
        let ipg = UInt64(geometry.inodesPerGroup)
        let usedInodes = UInt64(owners.count - 1)
        let used = allocator.usedRanges
        var rangeIndex = 0
        var descriptors: [UInt8] = []
        descriptors.reserveCapacity(Int(geometry.groupCount) * 64)
        var freeBlocksTotal: UInt64 = 0
        for g in 0..<geometry.groupCount {
            let start = g * bpg, end = min(start + bpg, geometry.blockCount)
            var bitmap = [UInt8](repeating: 0, count: bs)
            var usedHere: UInt64 = 0
            while rangeIndex < used.count, used[rangeIndex].upperBound <= start { rangeIndex += 1 }
            var k = rangeIndex
            while k < used.count, used[k].lowerBound < end {
                let lo = max(used[k].lowerBound, start), hi = min(used[k].upperBound, end)
                if lo < hi {
                    setBits(&bitmap, Int(lo - start)..<Int(hi - start))
                    usedHere += hi - lo
                }
                k += 1
            }
            setBits(&bitmap, Int(end - start)..<(8 * bs))       // blocks past the end count as used
            let freeBlocks = (end - start) - usedHere
            freeBlocksTotal += freeBlocks

            let firstInode = g * ipg + 1
            let usedInGroup = usedInodes >= firstInode ? min(ipg, usedInodes - firstInode + 1) : 0
            var inodeBitmap = [UInt8](repeating: 0, count: bs)
            setBits(&inodeBitmap, 0..<Int(usedInGroup))
            setBits(&inodeBitmap, Int(ipg)..<(8 * bs))

            var d = GroupDescriptor()
            d.blockBitmap = blockBitmaps[Int(g)]
            d.inodeBitmap = inodeBitmaps[Int(g)]
            d.inodeTable = inodeTables[Int(g)]
            d.freeBlocks = UInt32(freeBlocks)
            d.freeInodes = UInt32(ipg - usedInGroup)
            d.usedDirectories = directoriesPerGroup[Int(g)]
            d.flags = GroupDescriptor.inodeTableZeroed
            d.itableUnused = UInt32(ipg - usedInGroup)
            d.blockBitmapChecksum = CRC32C.update(seed, bitmap[0..<Int(bpg / 8)])
            d.inodeBitmapChecksum = CRC32C.update(seed, inodeBitmap[0..<Int(ipg / 8)])
            descriptors += d.encoded(group: UInt32(g), checksumSeed: seed)
            try write(bitmap, atBlock: d.blockBitmap)
            try write(inodeBitmap, atBlock: d.inodeBitmap)
        }

        var sb = FormatJob.superblockLayout()
        sb.inodesCount = UInt32(geometry.inodeCount)
        sb.blocksCount = geometry.blockCount
        sb.reservedBlocksCount = min(options.reservedBlocks ?? geometry.blockCount / 20, geometry.blockCount / 2)
        sb.freeBlocksCount = freeBlocksTotal
        sb.freeInodesCount = UInt32(geometry.inodeCount - usedInodes)
        sb.firstDataBlock = 0
        sb.logBlockSize = 2
        sb.blocksPerGroup = UInt32(bpg)
        sb.inodesPerGroup = UInt32(ipg)
        sb.time = options.timestamp.base
        sb.firstInode = InodeNumber.lostAndFound
        sb.inodeSize = UInt16(Geometry.inodeSize)
        sb.uuid = options.uuid
        sb.volumeName = options.label + Array(repeating: 0, count: 16 - options.label.count)
        // Hash seed: fixed per UUID, so the same inputs give the same bytes.
        sb.hashSeed = []
        for i: UInt32 in 0..<4 {
            var word = [UInt8](repeating: 0, count: 4)
            word.putLE32(CRC32C.update(seed ^ (0x9E37_79B9 &* (i + 1)), options.uuid), at: 0)
            sb.hashSeed += word
        }
        sb.defaultHashVersion = 1                 // half_md4, as mke2fs
        sb.flags = 1                              // signed directory hash (x86 mke2fs default)
        sb.descriptorSize = 64
        sb.defaultMountOptions = 0x000C           // user_xattr, acl
        sb.minExtraIsize = 32
        sb.wantExtraIsize = 32
        sb.logGroupsPerFlex = 4
        sb.checksumType = 1                       // crc32c
        if let root = journalRoot {
            sb.journalInode = InodeNumber.journal
            sb.journalBackupType = 1              // s_jnl_blocks holds a copy of the journal's i_block
            var words: [UInt32] = (0..<15).map { root.le32(4 * $0) }
            words.append(UInt32(truncatingIfNeeded: journalSize >> 32))
            words.append(UInt32(truncatingIfNeeded: journalSize))
            sb.journalBlocks = words
        } else {
            sb.compat &= ~Feature.hasJournal
        }

        // Descriptor table padded to whole blocks, then the superblock and its backups.
        descriptors += Array(repeating: 0, count: Int(geometry.descriptorBlocks) * bs - descriptors.count)
        for g in 0..<geometry.groupCount where sb.hasSuperblockBackup(group: g) {
            sb.blockGroupNumber = UInt16(truncatingIfNeeded: g)
            let first = g * bpg
            try write(sb.encoded(), atBlock: first, offset: g == 0 ? 1024 : 0)
            try write(descriptors, atBlock: first + 1)
        }
        return EXT4FormatSummary(blockCount: geometry.blockCount, usedBlocks: geometry.blockCount - freeBlocksTotal,
                                 inodeCount: geometry.inodeCount, usedInodes: usedInodes)
    }

    /// Whether block `block` of `data` (the last one may be short) is all zeros.
    func isZero(_ data: UnsafeRawBufferPointer, block: Int, blockSize: Int) -> Bool {
        let from = block * blockSize, to = min(data.count, from + blockSize)
        var i = from
        while i + 8 <= to {
            if data.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
            i += 8
        }
        while i < to {
            if data[i] != 0 { return false }
            i += 1
        }
        return true
    }

    func setBits(_ bitmap: inout [UInt8], _ range: Range<Int>) {
        var i = range.lowerBound
        while i < range.upperBound {
            if i % 8 == 0, i + 8 <= range.upperBound {
                bitmap[i / 8] = 0xFF
                i += 8
            } else {
                bitmap[i / 8] |= UInt8(1 << (i % 8))
                i += 1
            }
        }
    }
}
