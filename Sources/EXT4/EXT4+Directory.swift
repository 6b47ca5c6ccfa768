import CVMSupport

/// One name in a directory.
struct DirectoryEntry {
    var inode: UInt32
    var name: [UInt8]
    var fileType: UInt8
}

enum DirectoryCodec {
    /// File type byte of the fake entry that holds a leaf block's checksum.
    static let tailFileType: UInt8 = 0xDE
    static let tailSize = 12

    /// Entries of one linear directory block (or an htree leaf; htree interior blocks hold a
    /// single empty entry and yield nothing). Skips unused entries (inode 0).
    static func parse(_ b: [UInt8], start: Int = 0, what: String) throws -> [DirectoryEntry] {
        var out: [DirectoryEntry] = []
        var p = start
        while p + 8 <= b.count {
            let inode = b.le32(p)
            let recLen = Int(b.le16(p + 4)), nameLen = Int(b[p + 6]), type = b[p + 7]
            // 64 KiB blocks store a whole-block rec_len as 0 or 65535; elsewhere that is corruption.
            let length = (recLen == 0 || recLen == 65535) && b.count == 65536 && p == 0 ? 65536 : recLen
            guard length >= 8, length % 4 == 0, p + length <= b.count, 8 + nameLen <= length else {
                throw CVMError.invalid("\(what): directory entry at byte \(p) has rec_len \(recLen) / name_len \(nameLen); expected a 4-byte-aligned length inside the block")
            }
            if inode != 0 && !(type == tailFileType && nameLen == 0) {
                guard nameLen > 0 else { throw CVMError.invalid("\(what): directory entry at byte \(p) has an empty name") }
                out.append(DirectoryEntry(inode: inode, name: Array(b[(p + 8)..<(p + 8 + nameLen)]), fileType: type))
            }
            p += length
        }
        return out
    }

    static func recordLength(nameLength: Int) -> Int { (8 + nameLength + 3) & ~3 }

    /// Lays `entries` (including `.` and `..` first) into leaf blocks, each ending with a checksum
    /// tail when `checksumSeed` (the directory inode's seed) is given. Entries never cross blocks.
    static func buildBlocks(_ entries: [DirectoryEntry], blockSize: Int, checksumSeed: UInt32?) -> [[UInt8]] {
        let usable = blockSize - (checksumSeed == nil ? 0 : tailSize)
        var blocks: [[UInt8]] = []
        var current = [UInt8](repeating: 0, count: blockSize)
        var used = 0
        var lastStart = -1
        func finish() {
            if lastStart >= 0 {
                current.putLE16(UInt16(usable - lastStart), at: lastStart + 4)   // last entry takes the rest
            } else {
                current.putLE16(UInt16(usable), at: 4)                           // an empty block: one unused entry
            }
            if let seed = checksumSeed {
                let t = blockSize - tailSize
                current.putLE16(UInt16(tailSize), at: t + 4)
                current[t + 7] = tailFileType
                current.putLE32(CRC32C.update(seed, current[0..<t]), at: t + 8)
            }
            blocks.append(current)
            current = [UInt8](repeating: 0, count: blockSize)
            used = 0
            lastStart = -1
        }
        for e in entries {
            let len = recordLength(nameLength: e.name.count)
            if used + len > usable { finish() }
            current.putLE32(e.inode, at: used)
            current.putLE16(UInt16(len), at: used + 4)
            current[used + 6] = UInt8(e.name.count)
            current[used + 7] = e.fileType
            current.replaceSubrange((used + 8)..<(used + 8 + e.name.count), with: e.name)
            lastStart = used
            used += len
        }
        finish()
        return blocks
    }
}
