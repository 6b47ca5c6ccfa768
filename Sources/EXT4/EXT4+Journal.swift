/// The internal jbd2 journal of a new file system: its size and its (big-endian) superblock.
/// The rest of the journal is zeros: `s_start = 0` says it is clean, nothing to replay.
enum Journal {
    /// Journal blocks for a file system of `blocks` 4 KiB blocks (mke2fs's default table);
    /// 0 when the file system is too small for one.
    static func blockCount(forFileSystemBlocks blocks: UInt64) -> UInt64 {
        switch blocks {
        case ..<2048: return 0
        case ..<32768: return 1024
        case ..<(256 * 1024): return 4096
        case ..<(512 * 1024): return 8192
        case ..<(4096 * 1024): return 16384
        case ..<(8192 * 1024): return 32768
        case ..<(16384 * 1024): return 65536
        case ..<(32768 * 1024): return 131072
        default: return 262144
        }
    }

    static func superblock(blockSize: Int, blocks: UInt64, uuid: [UInt8]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: blockSize)
        b.putBE32(0xC03B_3998, at: 0x0)        // magic
        b.putBE32(4, at: 0x4)                  // block type: superblock v2
        b.putBE32(UInt32(blockSize), at: 0xC)
        b.putBE32(UInt32(blocks), at: 0x10)    // s_maxlen
        b.putBE32(1, at: 0x14)                 // s_first: first log block
        b.putBE32(1, at: 0x18)                 // s_sequence
        b.replaceSubrange(0x30..<0x40, with: uuid.prefix(16))
        b.putBE32(1, at: 0x40)                 // s_nr_users
        return b
    }
}
