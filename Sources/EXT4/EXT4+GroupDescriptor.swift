/// One block-group descriptor (32 bytes, or 64 with the `64bit` feature).
struct GroupDescriptor {
    var blockBitmap: UInt64 = 0
    var inodeBitmap: UInt64 = 0
    var inodeTable: UInt64 = 0
    var freeBlocks: UInt32 = 0
    var freeInodes: UInt32 = 0
    var usedDirectories: UInt32 = 0
    var flags: UInt16 = 0
    var itableUnused: UInt32 = 0
    var blockBitmapChecksum: UInt32 = 0
    var inodeBitmapChecksum: UInt32 = 0

    /// Inode table zeroed (so the kernel need not zero it lazily).
    static let inodeTableZeroed: UInt16 = 0x4

    init() {}

    init(bytes b: [UInt8], at o: Int, size: Int) {
        blockBitmap = UInt64(b.le32(o + 0x0))
        inodeBitmap = UInt64(b.le32(o + 0x4))
        inodeTable = UInt64(b.le32(o + 0x8))
        freeBlocks = UInt32(b.le16(o + 0xC))
        freeInodes = UInt32(b.le16(o + 0xE))
        usedDirectories = UInt32(b.le16(o + 0x10))
        flags = b.le16(o + 0x12)
        itableUnused = UInt32(b.le16(o + 0x1C))
        if size >= 64 {
            blockBitmap |= UInt64(b.le32(o + 0x20)) << 32
            inodeBitmap |= UInt64(b.le32(o + 0x24)) << 32
            inodeTable |= UInt64(b.le32(o + 0x28)) << 32
            freeBlocks |= UInt32(b.le16(o + 0x2C)) << 16
            freeInodes |= UInt32(b.le16(o + 0x2E)) << 16
            usedDirectories |= UInt32(b.le16(o + 0x30)) << 16
            itableUnused |= UInt32(b.le16(o + 0x32)) << 16
        }
    }

    /// Encodes a 64-byte descriptor of group `group` with its checksum (`metadata_csum`).
    func encoded(group: UInt32, checksumSeed: UInt32) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 64)
        b.putLE32(UInt32(truncatingIfNeeded: blockBitmap), at: 0x0)
        b.putLE32(UInt32(truncatingIfNeeded: inodeBitmap), at: 0x4)
        b.putLE32(UInt32(truncatingIfNeeded: inodeTable), at: 0x8)
        b.putLE16(UInt16(truncatingIfNeeded: freeBlocks), at: 0xC)
        b.putLE16(UInt16(truncatingIfNeeded: freeInodes), at: 0xE)
        b.putLE16(UInt16(truncatingIfNeeded: usedDirectories), at: 0x10)
        b.putLE16(flags, at: 0x12)
        b.putLE16(UInt16(truncatingIfNeeded: blockBitmapChecksum), at: 0x18)
        b.putLE16(UInt16(truncatingIfNeeded: inodeBitmapChecksum), at: 0x1A)
        b.putLE16(UInt16(truncatingIfNeeded: itableUnused), at: 0x1C)
        b.putLE32(UInt32(truncatingIfNeeded: blockBitmap >> 32), at: 0x20)
        b.putLE32(UInt32(truncatingIfNeeded: inodeBitmap >> 32), at: 0x24)
        b.putLE32(UInt32(truncatingIfNeeded: inodeTable >> 32), at: 0x28)
        b.putLE16(UInt16(truncatingIfNeeded: freeBlocks >> 16), at: 0x2C)
        b.putLE16(UInt16(truncatingIfNeeded: freeInodes >> 16), at: 0x2E)
        b.putLE16(UInt16(truncatingIfNeeded: usedDirectories >> 16), at: 0x30)
        b.putLE16(UInt16(truncatingIfNeeded: itableUnused >> 16), at: 0x32)
        b.putLE16(UInt16(truncatingIfNeeded: blockBitmapChecksum >> 16), at: 0x38)
        b.putLE16(UInt16(truncatingIfNeeded: inodeBitmapChecksum >> 16), at: 0x3A)
        var crc = CRC32C.update(checksumSeed, le32: group)
        crc = CRC32C.update(crc, b)                      // checksum field is still zero here
        b.putLE16(UInt16(truncatingIfNeeded: crc), at: 0x1E)
        return b
    }
}
