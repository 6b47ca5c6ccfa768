import CVMSupport

/// One path in a file system read by `EXT4Reader`.
public struct EXT4Entry: Sendable {
    /// Path components from the root (`[]` is the root itself).
    public var components: [[UInt8]]
    public var inodeNumber: UInt32
    public var metadata: EXT4Metadata
    /// File size in bytes (directories: their on-disk size).
    public var size: UInt64
    public var linkCount: UInt16
    /// Target of a symbolic link.
    public var symlinkTarget: [UInt8]?

    /// `/a/b/c`.
    public var path: String { ext4PathString(components) }

    /// Whether this entry is `prefix` or lies below it (`prefix` as components).
    public func isWithin(_ prefix: [[UInt8]]) -> Bool {
        components.count >= prefix.count && Array(components.prefix(prefix.count)) == prefix
    }
}

/// Reads an ext2/3/4 file system: superblock, group descriptors, inodes, extent trees and old
/// block maps, linear and htree directories (read as their leaf blocks), fast, slow and inline
/// symlinks, inline data, extended attributes, device and special nodes.
///
/// Every structure is validated; corruption throws `CVMError.invalid` naming the partition and
/// the inode. File content is read in chunks through `openFile`, never whole.
///
/// - Note: refuses file systems with journal recovery pending, `meta_bg`, `bigalloc`,
///   encryption, compression or `ea_inode` values.
public final class EXT4Reader: @unchecked Sendable {
    /// Shown in errors (e.g. `disk.raw partition 2`).
    public let name: String
    let source: EXT4BlockSource
    let sb: Superblock
    let groups: [GroupDescriptor]

    public var blockSize: Int { sb.blockSize }
    public var blockCount: UInt64 { sb.blocksCount }
    public var reservedBlockCount: UInt64 { sb.reservedBlocksCount }
    public var inodeCount: UInt32 { sb.inodesCount }
    /// The 16-byte file-system UUID.
    public var uuid: [UInt8] { sb.uuid }
    /// The volume label (up to 16 bytes).
    public var label: String { sb.label }
    /// Raw label bytes (without trailing NULs).
    public var labelBytes: [UInt8] { Array(sb.volumeName.prefix { $0 != 0 }) }
    /// Whether the file system has an internal journal.
    public var hasJournal: Bool { sb.compat & Feature.hasJournal != 0 && sb.journalInode != 0 }

    /// Opens the file system on `source`; `name` prefixes every error message.
    public init(source: EXT4BlockSource, name: String) throws {
        self.source = source
        self.name = name
        guard source.size >= 2048 else {
            throw CVMError.invalid("\(name): partition of \(source.size) bytes is too small for ext4")
        }
        var raw = [UInt8](repeating: 0, count: Superblock.size)
        try raw.withUnsafeMutableBytes { try source.read(into: $0, at: Superblock.offset) }
        sb = try Superblock(bytes: raw, name: name)
        let bs = UInt64(sb.blockSize)
        let fsBytes = sb.blocksCount.multipliedReportingOverflow(by: bs)
        guard !fsBytes.overflow, fsBytes.partialValue <= source.size else {
            throw CVMError.invalid("\(name): ext4 claims \(sb.blocksCount) blocks of \(bs) bytes, more than the partition's \(source.size) bytes")
        }
        let descSize = sb.groupDescriptorSize
        let tableBytes = sb.groupCount * UInt64(descSize)
        guard tableBytes <= 64 << 20 else {
            throw CVMError.unsupported("\(name): ext4 group descriptor table of \(tableBytes) bytes is too large")
        }
        let tableStart = (UInt64(sb.firstDataBlock) + 1) * bs
        guard tableStart + tableBytes <= fsBytes.partialValue else {
            throw CVMError.invalid("\(name): ext4 group descriptor table runs past the end of the file system")
        }
        var table = [UInt8](repeating: 0, count: Int(tableBytes))
        try table.withUnsafeMutableBytes { try source.read(into: $0, at: tableStart) }
        let inodeTableBlocks = (UInt64(sb.inodesPerGroup) * UInt64(sb.inodeSize) + bs - 1) / bs
        var parsed: [GroupDescriptor] = []
        parsed.reserveCapacity(Int(sb.groupCount))
        for g in 0..<Int(sb.groupCount) {
            let d = GroupDescriptor(bytes: table, at: g * descSize, size: descSize)
            guard d.inodeTable >= 1, d.inodeTable < sb.blocksCount, inodeTableBlocks <= sb.blocksCount - d.inodeTable else {
                throw CVMError.invalid("\(name): ext4 group \(g) inode table at block \(d.inodeTable) is outside the file system (\(sb.blocksCount) blocks)")
            }
            parsed.append(d)
        }
        groups = parsed
    }

    // MARK: blocks and inodes

    func readBlock(_ n: UInt64) throws -> [UInt8] {
        guard n < sb.blocksCount else {
            throw CVMError.invalid("\(name): block \(n) is outside the file system (\(sb.blocksCount) blocks)")
        }
        var b = [UInt8](repeating: 0, count: blockSize)
        try b.withUnsafeMutableBytes { try source.read(into: $0, at: n * UInt64(blockSize)) }
        return b
    }

    func rawInode(_ number: UInt32) throws -> InodeRecord {
        guard number >= 1, number <= sb.inodesCount else {
            throw CVMError.invalid("\(name): inode \(number) does not exist (the file system has \(sb.inodesCount))")
        }
        let index = number - 1
        let group = Int(index / sb.inodesPerGroup), slot = UInt64(index % sb.inodesPerGroup)
        let size = Int(sb.inodeSize)
        let offset = groups[group].inodeTable * UInt64(blockSize) + slot * UInt64(size)
        var b = [UInt8](repeating: 0, count: size)
        try b.withUnsafeMutableBytes { try source.read(into: $0, at: offset) }
        let record = InodeRecord(bytes: b, inodeSize: size)
        guard record.extraIsizeValid(inodeSize: size) else {
            throw CVMError.invalid("\(name): inode \(number): i_extra_isize \(record.extraIsize) is invalid for \(size)-byte inodes")
        }
        return record
    }

    /// Block runs of an inode's data (extents or block map), in file order.
    func runs(of record: InodeRecord, number: UInt32) throws -> [BlockRun] {
        let what = "\(name): inode \(number)"
        let fileBlocks = (record.size + UInt64(blockSize) - 1) / UInt64(blockSize)
        if record.flags & InodeFlag.extents != 0 {
            return try ExtentTree.read(root: record.block, blockCount: sb.blocksCount, blockSize: blockSize,
                                       what: what, readBlock: readBlock)
        }
        return try BlockMap.read(root: record.block, fileBlocks: fileBlocks, blockCount: sb.blocksCount,
                                 blockSize: blockSize, what: what, readBlock: readBlock)
    }

    /// In-inode and external-block extended attributes, as stored (including `system.data`).
    func storedXattrs(of record: InodeRecord, number: UInt32) throws -> [EXT4Xattr] {
        let what = "\(name): inode \(number)"
        var attrs = try XattrCodec.decodeInInode(record.inlineXattrArea, what: what)
        if record.fileACL != 0 {
            guard record.fileACL < sb.blocksCount else {
                throw CVMError.invalid("\(what): extended attribute block \(record.fileACL) is outside the file system")
            }
            attrs += try XattrCodec.decodeBlock(try readBlock(record.fileACL), what: what + " xattr block")
        }
        return attrs
    }

    /// Bytes of an inline-data inode: `i_block` followed by the `system.data` attribute.
    private func inlineBytes(_ record: InodeRecord, attrs: [EXT4Xattr]) -> [UInt8] {
        let data: [UInt8] = Array("data".utf8)
        let extra: [UInt8] = attrs.first(where: { $0.nameIndex == 7 && $0.name == data }).map { $0.value } ?? []
        return record.block + extra
    }

    /// Metadata and details of inode `number`.
    public func inode(_ number: UInt32) throws -> EXT4Entry {
        let r = try rawInode(number)
        let what = "\(name): inode \(number)"
        guard let type = r.fileType else {
            throw CVMError.invalid("\(what): mode 0o\(String(r.mode, radix: 8)) has no valid file type")
        }
        let stored = try storedXattrs(of: r, number: number)
        let xattrs = stored.filter { !($0.nameIndex == 7 && $0.name == Array("data".utf8)) }
        var md = EXT4Metadata(type: type, permissions: r.mode & 0o7777, uid: r.uid, gid: r.gid,
                              times: EXT4Times(access: r.atime, modification: r.mtime, change: r.ctime, creation: r.crtime),
                              xattrs: xattrs, flags: r.flags & EXT4Metadata.carriedFlags)
        var target: [UInt8]?
        switch type {
        case .characterDevice, .blockDevice:
            let old = r.block.le32(0), new = r.block.le32(4)
            if old != 0 {
                md.deviceMajor = (old >> 8) & 0xFF
                md.deviceMinor = old & 0xFF
            } else {
                md.deviceMajor = (new & 0xFFF00) >> 8
                md.deviceMinor = (new & 0xFF) | ((new >> 12) & 0xFFF00)
            }
        case .symlink:
            guard r.size <= 65536 else { throw CVMError.invalid("\(what): symlink of \(r.size) bytes; expected at most 65536") }
            let eaBlocks: UInt64 = r.fileACL != 0 ? UInt64(blockSize / 512) : 0
            if r.flags & InodeFlag.inlineData != 0 {
                target = Array(inlineBytes(r, attrs: stored).prefix(Int(r.size)))
            } else if r.flags & InodeFlag.extents == 0 && r.blocks == eaBlocks && r.size < 60 {
                target = Array(r.block.prefix(Int(r.size)))           // fast symlink
            } else {
                let file = try openFile(number)
                var t = [UInt8](repeating: 0, count: Int(r.size))
                try t.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
                target = t
            }
            guard target?.count == Int(r.size) else { throw CVMError.invalid("\(what): symlink target is shorter than its size \(r.size)") }
        default:
            break
        }
        return EXT4Entry(components: [], inodeNumber: number, metadata: md, size: r.size,
                         linkCount: r.linksCount, symlinkTarget: target)
    }

    // MARK: directories

    /// Names in directory `number`, without `.` and `..`, sorted by name bytes.
    public func directoryEntries(_ number: UInt32) throws -> [(name: [UInt8], inode: UInt32)] {
        let r = try rawInode(number)
        let what = "\(name): directory inode \(number)"
        guard r.fileType == .directory else { throw CVMError.invalid("\(what): is not a directory") }
        var entries: [DirectoryEntry] = []
        if r.flags & InodeFlag.inlineData != 0 {
            let stored = try storedXattrs(of: r, number: number)
            entries = try DirectoryCodec.parse(Array(r.block[4..<60]), what: what)
            if let more = stored.first(where: { $0.nameIndex == 7 && $0.name == Array("data".utf8) })?.value, !more.isEmpty {
                entries += try DirectoryCodec.parse(more, what: what)
            }
        } else {
            guard r.size <= UInt64(sb.blocksCount) * UInt64(blockSize), r.size <= 1 << 32 else {
                throw CVMError.invalid("\(what): directory size \(r.size) is implausible")
            }
            let file = try openFile(number)
            var block = [UInt8](repeating: 0, count: blockSize)
            var offset: UInt64 = 0
            while offset < r.size {
                try block.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
                entries += try DirectoryCodec.parse(block, what: what + " block \(offset / UInt64(blockSize))")
                offset += UInt64(blockSize)
            }
        }
        var result: [(name: [UInt8], inode: UInt32)] = []
        for e in entries where e.name != [0x2E] && e.name != [0x2E, 0x2E] {
            guard e.inode <= sb.inodesCount else {
                throw CVMError.invalid("\(what): entry '\(String(decoding: e.name, as: UTF8.self))' points to inode \(e.inode), beyond the \(sb.inodesCount) inodes")
            }
            guard !e.name.contains(0x2F), !e.name.contains(0) else {
                throw CVMError.invalid("\(what): entry name '\(String(decoding: e.name, as: UTF8.self))' contains '/' or NUL")
            }
            result.append((e.name, e.inode))
        }
        result.sort { $0.name.lexicographicallyPrecedes($1.name) }
        for i in result.indices.dropFirst() where result[i].name == result[i - 1].name {
            throw CVMError.invalid("\(what): name '\(String(decoding: result[i].name, as: UTF8.self))' appears twice")
        }
        return result
    }

    /// Visits every path from the root, depth first, children in name order; a directory comes
    /// before its contents. A hard-linked file appears once per path with the same inode number.
    public func walk(_ visit: (EXT4Entry) throws -> Void) throws {
        var stack: [([[UInt8]], UInt32)] = [([], InodeNumber.root)]
        var seenDirectories: Set<UInt32> = []
        while let (components, number) = stack.popLast() {
            var entry = try inode(number)
            entry.components = components
            try visit(entry)
            guard entry.metadata.type == .directory else { continue }
            guard seenDirectories.insert(number).inserted else {
                throw CVMError.invalid("\(name): directory inode \(number) is reachable twice (at \(entry.path)); the tree has a loop")
            }
            for child in try directoryEntries(number).reversed() where child.inode != 0 {
                stack.append((components + [child.name], child.inode))
            }
        }
    }

    /// All paths, in `walk` order.
    public func entries() throws -> [EXT4Entry] {
        var out: [EXT4Entry] = []
        try walk { out.append($0) }
        return out
    }

    // MARK: file content

    /// Content of a regular file (or slow symlink, or directory) for reading in chunks.
    public func openFile(_ number: UInt32) throws -> EXT4FileReader {
        let r = try rawInode(number)
        if r.flags & InodeFlag.inlineData != 0 {
            let bytes = inlineBytes(r, attrs: try storedXattrs(of: r, number: number))
            guard r.size <= UInt64(bytes.count) else {
                throw CVMError.invalid("\(name): inode \(number): inline data holds \(bytes.count) bytes; size says \(r.size)")
            }
            return EXT4FileReader(reader: self, inode: number, size: r.size, runs: [], inline: Array(bytes.prefix(Int(r.size))))
        }
        return EXT4FileReader(reader: self, inode: number, size: r.size, runs: try runs(of: r, number: number), inline: nil)
    }
}

/// Reads one file's bytes at any offset; holes and preallocated extents read as zeros.
public final class EXT4FileReader: @unchecked Sendable {
    public let inodeNumber: UInt32
    public let size: UInt64
    private let reader: EXT4Reader
    private let runs: [BlockRun]
    private let inline: [UInt8]?

    init(reader: EXT4Reader, inode: UInt32, size: UInt64, runs: [BlockRun], inline: [UInt8]?) {
        self.reader = reader
        self.inodeNumber = inode
        self.size = size
        self.runs = runs
        self.inline = inline
    }

    /// Fills `buffer` with the bytes at `offset`; the range must lie within the file.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw CVMError.invalid("\(reader.name): inode \(inodeNumber): read of \(buffer.count) bytes at \(offset) is past the file size \(size)")
        }
        if buffer.count == 0 { return }
        if let inline {
            for i in 0..<buffer.count { buffer[i] = inline[Int(offset) + i] }
            return
        }
        let bs = UInt64(reader.blockSize)
        var done = 0
        // First run that may cover the offset (runs are sorted by logical block).
        var lo = 0, hi = runs.count
        let firstBlock = offset / bs
        while lo < hi {
            let mid = (lo + hi) / 2
            if runs[mid].logical + runs[mid].length <= firstBlock { lo = mid + 1 } else { hi = mid }
        }
        var k = lo
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let block = pos / bs
            while k < runs.count, runs[k].logical + runs[k].length <= block { k += 1 }
            let want = buffer.count - done
            if k < runs.count, runs[k].logical <= block {
                let run = runs[k]
                let runEnd = (run.logical + run.length) * bs
                let n = Int(min(UInt64(want), runEnd - pos))
                let dest = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)])
                if run.initialized {
                    let physical = (run.physical + (block - run.logical)) * bs + pos % bs
                    try reader.source.read(into: dest, at: physical)
                } else {
                    dest.initializeMemory(as: UInt8.self, repeating: 0)
                }
                done += n
            } else {
                // A hole up to the next run (or the end).
                let holeEnd = k < runs.count ? runs[k].logical * bs : UInt64.max
                let n = Int(min(UInt64(want), holeEnd - pos))
                UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]).initializeMemory(as: UInt8.self, repeating: 0)
                done += n
            }
        }
    }
}
