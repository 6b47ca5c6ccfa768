import CVMSupport

/// Feature flags this module knows about (kernel names in comments).
enum Feature {
    // compat
    static let hasJournal: UInt32 = 0x0004
    static let extAttr: UInt32 = 0x0008
    static let resizeInode: UInt32 = 0x0010
    static let dirIndex: UInt32 = 0x0020
    // incompat
    static let compression: UInt32 = 0x0001
    static let filetype: UInt32 = 0x0002
    static let recover: UInt32 = 0x0004
    static let journalDev: UInt32 = 0x0008
    static let metaBG: UInt32 = 0x0010
    static let extents: UInt32 = 0x0040
    static let bit64: UInt32 = 0x0080
    static let mmp: UInt32 = 0x0100
    static let flexBG: UInt32 = 0x0200
    static let eaInode: UInt32 = 0x0400
    static let dirData: UInt32 = 0x1000
    static let csumSeed: UInt32 = 0x2000
    static let largeDir: UInt32 = 0x4000
    static let inlineData: UInt32 = 0x8000
    static let encrypt: UInt32 = 0x10000
    static let casefold: UInt32 = 0x20000
    // ro_compat
    static let sparseSuper: UInt32 = 0x0001
    static let largeFile: UInt32 = 0x0002
    static let hugeFile: UInt32 = 0x0008
    static let gdtCsum: UInt32 = 0x0010
    static let dirNlink: UInt32 = 0x0020
    static let extraIsize: UInt32 = 0x0040
    static let bigalloc: UInt32 = 0x0200
    static let metadataCsum: UInt32 = 0x0400

    /// Incompatible features the reader understands; anything else is refused by name.
    static let readableIncompat: UInt32 = filetype | extents | bit64 | mmp | flexBG | csumSeed | largeDir | inlineData | casefold
    static let incompatNames: [(UInt32, String)] = [
        (compression, "compression"), (recover, "needs_recovery (run e2fsck or mount it once to replay the journal)"),
        (journalDev, "journal_dev"), (metaBG, "meta_bg"), (eaInode, "ea_inode"), (dirData, "dirdata"),
        (encrypt, "encrypt"),
    ]
}

/// The ext4 superblock (1024 bytes at byte 1024 of the partition): the fields this module uses.
struct Superblock {
    var inodesCount: UInt32 = 0
    var blocksCount: UInt64 = 0
    var reservedBlocksCount: UInt64 = 0
    var freeBlocksCount: UInt64 = 0
    var freeInodesCount: UInt32 = 0
    var firstDataBlock: UInt32 = 0
    var logBlockSize: UInt32 = 2
    var blocksPerGroup: UInt32 = 0
    var inodesPerGroup: UInt32 = 0
    var time: UInt32 = 0            // mkfs, mount, write and last-check time
    var state: UInt16 = 1
    var revLevel: UInt32 = 1
    var firstInode: UInt32 = 11
    var inodeSize: UInt16 = 256
    var blockGroupNumber: UInt16 = 0
    var compat: UInt32 = 0
    var incompat: UInt32 = 0
    var roCompat: UInt32 = 0
    var uuid: [UInt8] = Array(repeating: 0, count: 16)
    var volumeName: [UInt8] = Array(repeating: 0, count: 16)
    var hashSeed: [UInt8] = Array(repeating: 0, count: 16)
    var defaultHashVersion: UInt8 = 1
    var journalBackupType: UInt8 = 0
    var descriptorSize: UInt16 = 0
    var defaultMountOptions: UInt32 = 0
    var journalInode: UInt32 = 0
    var journalBlocks: [UInt32] = Array(repeating: 0, count: 17)
    var minExtraIsize: UInt16 = 0
    var wantExtraIsize: UInt16 = 0
    var flags: UInt32 = 0
    var logGroupsPerFlex: UInt8 = 0
    var checksumType: UInt8 = 0

    static let magic: UInt16 = 0xEF53
    static let size = 1024
    static let offset: UInt64 = 1024

    var blockSize: Int { 1024 << Int(logBlockSize) }
    var is64Bit: Bool { incompat & Feature.bit64 != 0 }
    var groupDescriptorSize: Int { is64Bit ? Int(descriptorSize) : 32 }
    var hasMetadataChecksums: Bool { roCompat & Feature.metadataCsum != 0 }
    var groupCount: UInt64 {
        let data = blocksCount - UInt64(firstDataBlock)
        return (data + UInt64(blocksPerGroup) - 1) / UInt64(blocksPerGroup)
    }
    var label: String { String(decoding: volumeName.prefix { $0 != 0 }, as: UTF8.self) }

    init() {}

    /// Parses and validates a superblock; `name` prefixes every error.
    init(bytes b: [UInt8], name: String) throws {
        guard b.count >= Superblock.size else { throw CVMError.invalid("\(name): ext4 superblock is truncated") }
        guard b.le16(0x38) == Superblock.magic else {
            throw CVMError.invalid("\(name): no ext4 superblock (magic 0x\(String(b.le16(0x38), radix: 16)) at byte 1080; expected 0xef53)")
        }
        inodesCount = b.le32(0x0)
        revLevel = b.le32(0x4C)
        compat = b.le32(0x5C)
        incompat = revLevel >= 1 ? b.le32(0x60) : 0
        roCompat = revLevel >= 1 ? b.le32(0x64) : 0
        blocksCount = UInt64(b.le32(0x4))
        reservedBlocksCount = UInt64(b.le32(0x8))
        freeBlocksCount = UInt64(b.le32(0xC))
        if incompat & Feature.bit64 != 0 {
            blocksCount |= UInt64(b.le32(0x150)) << 32
            reservedBlocksCount |= UInt64(b.le32(0x154)) << 32
            freeBlocksCount |= UInt64(b.le32(0x158)) << 32
        }
        freeInodesCount = b.le32(0x10)
        firstDataBlock = b.le32(0x14)
        logBlockSize = b.le32(0x18)
        blocksPerGroup = b.le32(0x20)
        inodesPerGroup = b.le32(0x28)
        time = b.le32(0x30)
        state = b.le16(0x3A)
        firstInode = revLevel >= 1 ? b.le32(0x54) : 11
        inodeSize = revLevel >= 1 ? b.le16(0x58) : 128
        uuid = Array(b[0x68..<0x78])
        volumeName = Array(b[0x78..<0x88])
        hashSeed = Array(b[0xEC..<0xFC])
        defaultHashVersion = b[0xFC]
        journalBackupType = b[0xFD]
        descriptorSize = b.le16(0xFE)
        defaultMountOptions = b.le32(0x100)
        journalInode = b.le32(0xE0)
        minExtraIsize = b.le16(0x15C)
        wantExtraIsize = b.le16(0x15E)
        flags = b.le32(0x160)
        logGroupsPerFlex = b[0x174]
        checksumType = b[0x175]
        try validate(name: name)
    }

    private func validate(name: String) throws {
        guard logBlockSize <= 6 else {
            throw CVMError.invalid("\(name): ext4 block size 2^\(10 + UInt64(logBlockSize)) is invalid; expected 1 KiB to 64 KiB")
        }
        let unsupported = incompat & ~Feature.readableIncompat
        if unsupported != 0 {
            let names = Feature.incompatNames.filter { unsupported & $0.0 != 0 }.map(\.1)
            let text = names.isEmpty ? "0x" + String(unsupported, radix: 16) : names.joined(separator: ", ")
            throw CVMError.unsupported("\(name): ext4 uses features this tool cannot read: \(text)")
        }
        if roCompat & Feature.bigalloc != 0 {
            throw CVMError.unsupported("\(name): ext4 uses bigalloc, which this tool cannot read")
        }
        guard blocksPerGroup >= 8, blocksPerGroup <= UInt32(8 * blockSize) else {
            throw CVMError.invalid("\(name): ext4 blocks per group \(blocksPerGroup) is invalid; expected 8 to \(8 * blockSize)")
        }
        guard inodesPerGroup >= 1, inodesPerGroup <= UInt32(8 * blockSize) else {
            throw CVMError.invalid("\(name): ext4 inodes per group \(inodesPerGroup) is invalid; expected 1 to \(8 * blockSize)")
        }
        guard inodeSize >= 128, inodeSize <= UInt16(min(blockSize, 32768)), inodeSize & (inodeSize - 1) == 0 else {
            throw CVMError.invalid("\(name): ext4 inode size \(inodeSize) is invalid; expected a power of two from 128 to the block size")
        }
        guard blocksCount <= 1 << 48 else {
            throw CVMError.invalid("\(name): ext4 block count \(blocksCount) is implausible; expected at most 2^48")
        }
        guard blocksCount > UInt64(firstDataBlock), firstDataBlock <= 1 else {
            throw CVMError.invalid("\(name): ext4 block count \(blocksCount) / first data block \(firstDataBlock) are inconsistent")
        }
        if is64Bit {
            guard descriptorSize >= 32, descriptorSize <= 1024, descriptorSize & (descriptorSize - 1) == 0 else {
                throw CVMError.invalid("\(name): ext4 group descriptor size \(descriptorSize) is invalid; expected a power of two from 32 to 1024")
            }
        }
        let groups = groupCount
        guard groups >= 1, groups <= UInt64(UInt32.max) else {
            throw CVMError.invalid("\(name): ext4 group count \(groups) is invalid")
        }
        let inodes = groups.multipliedReportingOverflow(by: UInt64(inodesPerGroup))
        guard !inodes.overflow, inodes.partialValue == UInt64(inodesCount) else {
            throw CVMError.invalid("\(name): ext4 inode count \(inodesCount) does not match \(groups) groups × \(inodesPerGroup) inodes")
        }
    }

    /// Encodes the superblock, with its checksum when `metadata_csum` is on.
    func encoded() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: Superblock.size)
        b.putLE32(inodesCount, at: 0x0)
        b.putLE32(UInt32(truncatingIfNeeded: blocksCount), at: 0x4)
        b.putLE32(UInt32(truncatingIfNeeded: reservedBlocksCount), at: 0x8)
        b.putLE32(UInt32(truncatingIfNeeded: freeBlocksCount), at: 0xC)
        b.putLE32(freeInodesCount, at: 0x10)
        b.putLE32(firstDataBlock, at: 0x14)
        b.putLE32(logBlockSize, at: 0x18)
        b.putLE32(logBlockSize, at: 0x1C)                  // cluster size = block size
        b.putLE32(blocksPerGroup, at: 0x20)
        b.putLE32(blocksPerGroup, at: 0x24)                // clusters per group
        b.putLE32(inodesPerGroup, at: 0x28)
        b.putLE32(time, at: 0x2C)                          // mount time
        b.putLE32(time, at: 0x30)                          // write time
        b.putLE16(0xFFFF, at: 0x36)                        // max mount count: -1, no forced checks
        b.putLE16(Superblock.magic, at: 0x38)
        b.putLE16(state, at: 0x3A)
        b.putLE16(1, at: 0x3C)                             // errors: continue
        b.putLE32(time, at: 0x40)                          // last check
        b.putLE32(revLevel, at: 0x4C)
        b.putLE32(firstInode, at: 0x54)
        b.putLE16(inodeSize, at: 0x58)
        b.putLE16(blockGroupNumber, at: 0x5A)
        b.putLE32(compat, at: 0x5C)
        b.putLE32(incompat, at: 0x60)
        b.putLE32(roCompat, at: 0x64)
        b.replaceSubrange(0x68..<0x78, with: uuid.prefix(16))
        b.replaceSubrange(0x78..<0x88, with: volumeName.prefix(16))
        b.putLE32(journalInode, at: 0xE0)
        b.replaceSubrange(0xEC..<0xFC, with: hashSeed.prefix(16))
        b[0xFC] = defaultHashVersion
        b[0xFD] = journalBackupType
        b.putLE16(descriptorSize, at: 0xFE)
        b.putLE32(defaultMountOptions, at: 0x100)
        b.putLE32(time, at: 0x108)                         // mkfs time
        for (i, v) in journalBlocks.prefix(17).enumerated() { b.putLE32(v, at: 0x10C + 4 * i) }
        b.putLE32(UInt32(truncatingIfNeeded: blocksCount >> 32), at: 0x150)
        b.putLE32(UInt32(truncatingIfNeeded: reservedBlocksCount >> 32), at: 0x154)
        b.putLE32(UInt32(truncatingIfNeeded: freeBlocksCount >> 32), at: 0x158)
        b.putLE16(minExtraIsize, at: 0x15C)
        b.putLE16(wantExtraIsize, at: 0x15E)
        b.putLE32(flags, at: 0x160)
        b[0x174] = logGroupsPerFlex
        b[0x175] = checksumType
        if hasMetadataChecksums {
            b.putLE32(CRC32C.update(~0, b[0..<0x3FC]), at: 0x3FC)
        }
        return b
    }

    /// Seed of every metadata checksum: CRC-32C of the UUID.
    var checksumSeed: UInt32 { CRC32C.update(~0, uuid) }

    /// Whether group `g` holds a superblock backup (`sparse_super`: 0, 1 and powers of 3, 5, 7).
    func hasSuperblockBackup(group g: UInt64) -> Bool {
        if roCompat & Feature.sparseSuper == 0 { return true }
        if g <= 1 { return true }
        for base: UInt64 in [3, 5, 7] {
            var p = base
            while p < g { p *= base }
            if p == g { return true }
        }
        return false
    }
}
