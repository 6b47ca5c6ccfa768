/// Inode flags that shape the on-disk layout.
enum InodeFlag {
    static let index: UInt32 = 0x1000           // htree directory
    static let hugeFile: UInt32 = 0x40000       // i_blocks counts file-system blocks
    static let extents: UInt32 = 0x80000
    static let eaInode: UInt32 = 0x200000
    static let inlineData: UInt32 = 0x1000_0000
}

/// Well-known inode numbers.
enum InodeNumber {
    static let root: UInt32 = 2
    static let journal: UInt32 = 8
    static let lostAndFound: UInt32 = 11
}

/// One on-disk inode: the fields this module reads and writes.
struct InodeRecord {
    var mode: UInt16 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    var size: UInt64 = 0
    var atime = EXT4Timestamp(seconds: 0)
    var ctime = EXT4Timestamp(seconds: 0)
    var mtime = EXT4Timestamp(seconds: 0)
    var crtime = EXT4Timestamp(seconds: 0)
    var linksCount: UInt16 = 0
    /// `i_blocks` as stored (512-byte units unless the huge-file flag is set).
    var blocks: UInt64 = 0
    var flags: UInt32 = 0
    /// `i_block`: extent root, block map, fast symlink target, device number or inline data.
    var block: [UInt8] = Array(repeating: 0, count: 60)
    var generation: UInt32 = 0
    var fileACL: UInt64 = 0
    var extraIsize: UInt16 = 0
    /// In-inode extended attribute area (after the extra fields), as stored.
    var inlineXattrArea: [UInt8] = []

    init() {}

    /// Decodes an inode of `inodeSize` bytes. Never traps: a bad `i_extra_isize` is reported
    /// by the caller through `extraIsizeValid`.
    init(bytes b: [UInt8], inodeSize: Int) {
        mode = b.le16(0x0)
        uid = UInt32(b.le16(0x2)) | UInt32(b.le16(0x78)) << 16
        gid = UInt32(b.le16(0x18)) | UInt32(b.le16(0x7A)) << 16
        size = UInt64(b.le32(0x4)) | UInt64(b.le32(0x6C)) << 32
        linksCount = b.le16(0x1A)
        blocks = UInt64(b.le32(0x1C)) | UInt64(b.le16(0x74)) << 32
        flags = b.le32(0x20)
        block = Array(b[0x28..<0x64])
        generation = b.le32(0x64)
        fileACL = UInt64(b.le32(0x68)) | UInt64(b.le16(0x76)) << 32
        extraIsize = inodeSize > 128 ? b.le16(0x80) : 0
        let extra = Int(extraIsize)
        // Each `_extra` field exists only when i_extra_isize reaches past it.
        func extraField(_ offset: Int) -> UInt32? { extra >= offset - 0x80 + 4 && 128 + extra <= inodeSize ? b.le32(offset) : nil }
        ctime = EXT4Timestamp(base: b.le32(0xC), extra: extraField(0x84))
        mtime = EXT4Timestamp(base: b.le32(0x10), extra: extraField(0x88))
        atime = EXT4Timestamp(base: b.le32(0x8), extra: extraField(0x8C))
        if let cr = extraField(0x90) {
            crtime = EXT4Timestamp(base: cr, extra: extraField(0x94))
        }
        let xattrStart = 128 + extra
        if extraIsizeValid(inodeSize: inodeSize), xattrStart < inodeSize {
            inlineXattrArea = Array(b[xattrStart..<inodeSize])
        }
    }

    func extraIsizeValid(inodeSize: Int) -> Bool {
        inodeSize == 128 ? extraIsize == 0 : (extraIsize % 4 == 0 && 128 + Int(extraIsize) <= inodeSize)
    }

    var fileType: EXT4FileType? { EXT4FileType(modeBits: mode) }

    /// Encodes the inode into `inodeSize` bytes with `i_extra_isize` = 32 and, when
    /// `checksumSeed` is given, the `metadata_csum` inode checksum.
    func encoded(inodeSize: Int, number: UInt32, checksumSeed: UInt32?) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: inodeSize)
        b.putLE16(mode, at: 0x0)
        b.putLE16(UInt16(truncatingIfNeeded: uid), at: 0x2)
        b.putLE32(UInt32(truncatingIfNeeded: size), at: 0x4)
        b.putLE32(atime.base, at: 0x8)
        b.putLE32(ctime.base, at: 0xC)
        b.putLE32(mtime.base, at: 0x10)
        b.putLE16(UInt16(truncatingIfNeeded: gid), at: 0x18)
        b.putLE16(linksCount, at: 0x1A)
        b.putLE32(UInt32(truncatingIfNeeded: blocks), at: 0x1C)
        b.putLE32(flags, at: 0x20)
        b.replaceSubrange(0x28..<0x64, with: block.prefix(60))
        b.putLE32(generation, at: 0x64)
        b.putLE32(UInt32(truncatingIfNeeded: fileACL), at: 0x68)
        b.putLE32(UInt32(truncatingIfNeeded: size >> 32), at: 0x6C)
        b.putLE16(UInt16(truncatingIfNeeded: blocks >> 32), at: 0x74)
        b.putLE16(UInt16(truncatingIfNeeded: fileACL >> 32), at: 0x76)
        b.putLE16(UInt16(truncatingIfNeeded: uid >> 16), at: 0x78)
        b.putLE16(UInt16(truncatingIfNeeded: gid >> 16), at: 0x7A)
        if inodeSize >= 160 {
            b.putLE16(32, at: 0x80)
            b.putLE32(ctime.extra, at: 0x84)
            b.putLE32(mtime.extra, at: 0x88)
            b.putLE32(atime.extra, at: 0x8C)
            b.putLE32(crtime.base, at: 0x90)
            b.putLE32(crtime.extra, at: 0x94)
            let area = inlineXattrArea.prefix(inodeSize - 160)
            b.replaceSubrange(160..<(160 + area.count), with: area)
        }
        if let seed = checksumSeed {
            var crc = CRC32C.update(seed, le32: number)
            crc = CRC32C.update(crc, le32: generation)
            crc = CRC32C.update(crc, b)              // checksum fields are still zero
            b.putLE16(UInt16(truncatingIfNeeded: crc), at: 0x7C)
            if inodeSize >= 160 { b.putLE16(UInt16(truncatingIfNeeded: crc >> 16), at: 0x82) }
        }
        return b
    }
}
