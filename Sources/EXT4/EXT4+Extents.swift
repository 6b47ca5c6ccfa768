import CVMSupport

/// A run of file blocks: `length` logical blocks from `logical` stored at `physical`.
struct BlockRun: Equatable {
    var logical: UInt64
    var physical: UInt64
    var length: UInt64
    /// False for preallocated (uninitialized) extents, which read as zeros.
    var initialized: Bool = true
}

enum ExtentTree {
    static let magic: UInt16 = 0xF30A
    static let maxInitializedLength: UInt64 = 32768
    static let maxDepth = 5

    // MARK: reading

    /// Leaf extents of the tree rooted in `root` (the inode's 60-byte `i_block`), in file order.
    /// `readBlock` reads one file-system block; `what` names the inode in errors.
    static func read(root: [UInt8], blockCount: UInt64, blockSize: Int, what: String,
                     readBlock: (UInt64) throws -> [UInt8]) throws -> [BlockRun] {
        var runs: [BlockRun] = []
        var visited = 0
        try readNode(root, expectedDepth: nil, capacity: 4, blockCount: blockCount, what: what,
                     readBlock: readBlock, visited: &visited, into: &runs)
        return runs
    }

    private static func readNode(_ node: [UInt8], expectedDepth: Int?, capacity: Int, blockCount: UInt64, what: String,
                                 readBlock: (UInt64) throws -> [UInt8], visited: inout Int, into runs: inout [BlockRun]) throws {
        guard node.le16(0) == magic else {
            throw CVMError.invalid("\(what): extent header magic is 0x\(String(node.le16(0), radix: 16)); expected 0xf30a")
        }
        let entries = Int(node.le16(2)), maxEntries = Int(node.le16(4)), depth = Int(node.le16(6))
        guard entries <= maxEntries, maxEntries <= capacity else {
            throw CVMError.invalid("\(what): extent node has \(entries) of \(maxEntries) entries; at most \(capacity) fit")
        }
        guard depth <= maxDepth, expectedDepth == nil || expectedDepth == depth else {
            throw CVMError.invalid("\(what): extent tree depth \(depth) is invalid; expected \(expectedDepth.map(String.init) ?? "at most \(maxDepth)")")
        }
        for i in 0..<entries {
            let e = 12 + 12 * i
            let logical = UInt64(node.le32(e))
            if depth == 0 {
                var length = UInt64(node.le16(e + 4))
                var initialized = true
                if length > maxInitializedLength { length -= maxInitializedLength; initialized = false }
                let physical = UInt64(node.le16(e + 6)) << 32 | UInt64(node.le32(e + 8))
                guard length > 0, physical < blockCount, length <= blockCount - physical else {
                    throw CVMError.invalid("\(what): extent \(logical)+\(length) → block \(physical) is outside the file system (\(blockCount) blocks)")
                }
                if let last = runs.last, last.logical + last.length > logical {
                    throw CVMError.invalid("\(what): extents overlap or are out of order at logical block \(logical)")
                }
                runs.append(BlockRun(logical: logical, physical: physical, length: length, initialized: initialized))
            } else {
                let child = UInt64(node.le16(e + 8)) << 32 | UInt64(node.le32(e + 4))
                guard child < blockCount else {
                    throw CVMError.invalid("\(what): extent index points to block \(child), outside the file system (\(blockCount) blocks)")
                }
                visited += 1
                guard UInt64(visited) <= blockCount else {
                    throw CVMError.invalid("\(what): extent tree has more nodes than the file system has blocks")
                }
                let block = try readBlock(child)
                try readNode(block, expectedDepth: depth - 1, capacity: (block.count - 12) / 12, blockCount: blockCount,
                             what: what, readBlock: readBlock, visited: &visited, into: &runs)
            }
        }
    }

    // MARK: writing

    /// Node blocks of a tree and its 60-byte root.
    struct Built {
        var root: [UInt8]
        var nodes: [(block: UInt64, bytes: [UInt8])]
    }

    /// Builds a tree for `runs` (each at most 32768 blocks). `allocate` hands out one block
    /// for each node that does not fit in the inode; `checksumSeed` is the inode's seed.
    static func build(runs: [BlockRun], blockSize: Int, checksumSeed: UInt32?,
                      allocate: () throws -> UInt64) throws -> Built {
        let perBlock = (blockSize - 12) / 12
        // Entries of the current level: (first logical block, 12-byte body).
        var level: [(UInt64, [UInt8])] = runs.map { r in
            var e = [UInt8](repeating: 0, count: 12)
            e.putLE32(UInt32(truncatingIfNeeded: r.logical), at: 0)
            e.putLE16(UInt16(r.length), at: 4)
            e.putLE16(UInt16(truncatingIfNeeded: r.physical >> 32), at: 6)
            e.putLE32(UInt32(truncatingIfNeeded: r.physical), at: 8)
            return (r.logical, e)
        }
        var depth: UInt16 = 0
        var nodes: [(block: UInt64, bytes: [UInt8])] = []
        while level.count > 4 {
            var next: [(UInt64, [UInt8])] = []
            var i = 0
            while i < level.count {
                let chunk = level[i..<min(i + perBlock, level.count)]
                let blockNumber = try allocate()
                var node = [UInt8](repeating: 0, count: blockSize)
                writeHeader(&node, entries: chunk.count, max: perBlock, depth: depth)
                for (k, entry) in chunk.enumerated() { node.replaceSubrange((12 + 12 * k)..<(24 + 12 * k), with: entry.1) }
                if let seed = checksumSeed {
                    let tail = 12 + 12 * perBlock
                    node.putLE32(CRC32C.update(seed, node[0..<tail]), at: tail)
                }
                nodes.append((blockNumber, node))
                var index = [UInt8](repeating: 0, count: 12)
                index.putLE32(UInt32(truncatingIfNeeded: chunk.first!.0), at: 0)
                index.putLE32(UInt32(truncatingIfNeeded: blockNumber), at: 4)
                index.putLE16(UInt16(truncatingIfNeeded: blockNumber >> 32), at: 8)
                next.append((chunk.first!.0, index))
                i += perBlock
            }
            level = next
            depth += 1
        }
        var root = [UInt8](repeating: 0, count: 60)
        writeHeader(&root, entries: level.count, max: 4, depth: depth)
        for (k, entry) in level.enumerated() { root.replaceSubrange((12 + 12 * k)..<(24 + 12 * k), with: entry.1) }
        return Built(root: root, nodes: nodes)
    }

    private static func writeHeader(_ b: inout [UInt8], entries: Int, max: Int, depth: UInt16) {
        b.putLE16(magic, at: 0)
        b.putLE16(UInt16(entries), at: 2)
        b.putLE16(UInt16(max), at: 4)
        b.putLE16(depth, at: 6)
    }
}

/// Old ext2/3 block maps: 12 direct pointers, then single, double and triple indirect blocks.
enum BlockMap {
    static func read(root: [UInt8], fileBlocks: UInt64, blockCount: UInt64, blockSize: Int, what: String,
                     readBlock: (UInt64) throws -> [UInt8]) throws -> [BlockRun] {
        var runs: [BlockRun] = []
        let perBlock = UInt64(blockSize / 4)
        func add(_ logical: UInt64, _ physical: UInt64) throws {
            guard physical != 0 else { return }        // a hole
            guard physical < blockCount else {
                throw CVMError.invalid("\(what): block map points to block \(physical), outside the file system (\(blockCount) blocks)")
            }
            if var last = runs.last, last.logical + last.length == logical, last.physical + last.length == physical {
                last.length += 1
                runs[runs.count - 1] = last
            } else {
                runs.append(BlockRun(logical: logical, physical: physical, length: 1))
            }
        }
        // Walks an indirect block of `level` (1 = holds data pointers) covering logical blocks from `first`.
        func walk(_ block: UInt64, level: Int, first: UInt64) throws {
            guard block != 0, first < fileBlocks else { return }
            guard block < blockCount else {
                throw CVMError.invalid("\(what): indirect block \(block) is outside the file system (\(blockCount) blocks)")
            }
            let bytes = try readBlock(block)
            var span: UInt64 = 1
            for _ in 1..<level { span *= perBlock }
            for i in 0..<perBlock {
                let logical = first + i * span
                if logical >= fileBlocks { break }
                let p = UInt64(bytes.le32(Int(i) * 4))
                if level == 1 { try add(logical, p) } else { try walk(p, level: level - 1, first: logical) }
            }
        }
        for i in 0..<12 where UInt64(i) < fileBlocks { try add(UInt64(i), UInt64(root.le32(4 * i))) }
        try walk(UInt64(root.le32(48)), level: 1, first: 12)
        try walk(UInt64(root.le32(52)), level: 2, first: 12 + perBlock)
        try walk(UInt64(root.le32(56)), level: 3, first: 12 + perBlock + perBlock * perBlock)
        return runs
    }
}
