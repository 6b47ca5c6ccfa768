import CVMSupport

/// Encoding and decoding of extended attributes: in the inode after its extra fields, and in
/// one external block (`i_file_acl`).
enum XattrCodec {
    static let magic: UInt32 = 0xEA02_0000
    static let blockHeaderSize = 32
    static let entryHeaderSize = 16

    /// Parses entries starting at `entriesStart` of `area`; values are at `valueBase + e_value_offs`.
    static func decodeEntries(_ area: [UInt8], entriesStart: Int, valueBase: Int, what: String) throws -> [EXT4Xattr] {
        var out: [EXT4Xattr] = []
        var p = entriesStart
        while p + 4 <= area.count, area.le32(p) != 0 {
            guard p + entryHeaderSize <= area.count else {
                throw CVMError.invalid("\(what): extended attribute entry at \(p) runs past the end")
            }
            let nameLen = Int(area[p]), index = area[p + 1]
            let valueOffset = Int(area.le16(p + 2)), valueInode = area.le32(p + 4), valueSize = Int(area.le32(p + 8))
            guard p + entryHeaderSize + nameLen <= area.count else {
                throw CVMError.invalid("\(what): extended attribute name at \(p) runs past the end")
            }
            guard valueInode == 0 else {
                throw CVMError.unsupported("\(what): extended attribute value stored in an inode (ea_inode) is not supported")
            }
            let name = Array(area[(p + entryHeaderSize)..<(p + entryHeaderSize + nameLen)])
            let start = valueBase + valueOffset
            guard valueSize <= area.count, start >= 0, start <= area.count - valueSize else {
                throw CVMError.invalid("\(what): extended attribute value (\(valueSize) bytes at \(valueOffset)) is outside its area")
            }
            out.append(EXT4Xattr(nameIndex: index, name: name, value: Array(area[start..<(start + valueSize)])))
            p += (entryHeaderSize + nameLen + 3) & ~3
        }
        return out
    }

    /// Attributes in the inode's extra space (`area` begins right after `i_extra_isize` bytes).
    static func decodeInInode(_ area: [UInt8], what: String) throws -> [EXT4Xattr] {
        guard area.count >= 4, area.le32(0) == magic else { return [] }
        return try decodeEntries(area, entriesStart: 4, valueBase: 4, what: what)
    }

    /// Attributes in an external block.
    static func decodeBlock(_ block: [UInt8], what: String) throws -> [EXT4Xattr] {
        guard block.le32(0) == magic else {
            throw CVMError.invalid("\(what): extended attribute block has magic 0x\(String(block.le32(0), radix: 16)); expected 0xea020000")
        }
        guard block.le32(8) == 1 else {
            throw CVMError.invalid("\(what): extended attribute block spans \(block.le32(8)) blocks; expected 1")
        }
        return try decodeEntries(block, entriesStart: blockHeaderSize, valueBase: 0, what: what)
    }

    /// Canonical order (the kernel's): by name index, then name length, then name.
    static func sorted(_ attrs: [EXT4Xattr]) -> [EXT4Xattr] {
        attrs.sorted {
            if $0.nameIndex != $1.nameIndex { return $0.nameIndex < $1.nameIndex }
            if $0.name.count != $1.name.count { return $0.name.count < $1.name.count }
            return $0.name.lexicographicallyPrecedes($1.name)
        }
    }

    /// Bytes the attributes need: entries + end marker, and 4-byte-padded values.
    static func spaceNeeded(_ attrs: [EXT4Xattr]) -> Int {
        attrs.reduce(4) { $0 + ((entryHeaderSize + $1.name.count + 3) & ~3) + (($1.value.count + 3) & ~3) }
    }

    /// The entry hash e2fsck and the kernel check: name bytes, then the value as 32-bit words.
    static func entryHash(_ a: EXT4Xattr) -> UInt32 {
        var h: UInt32 = 0
        for c in a.name { h = (h << 5) ^ (h >> 27) ^ UInt32(c) }
        var padded = a.value
        while padded.count % 4 != 0 { padded.append(0) }
        var i = 0
        while i < padded.count {
            h = (h << 16) ^ (h >> 16) ^ padded.le32(i)
            i += 4
        }
        return h
    }

    /// Writes entries at `entriesStart` and values packed down from `valueEnd`, into `area`.
    /// Value offsets are relative to `valueBase`. Returns the combined hash of the entries.
    @discardableResult
    static func encode(_ attrs: [EXT4Xattr], into area: inout [UInt8], entriesStart: Int, valueEnd: Int, valueBase: Int) -> UInt32 {
        var p = entriesStart
        var v = valueEnd
        var blockHash: UInt32 = 0
        for a in sorted(attrs) {
            let padded = (a.value.count + 3) & ~3
            v -= padded
            let hash = entryHash(a)
            area[p] = UInt8(a.name.count)
            area[p + 1] = a.nameIndex
            area.putLE16(UInt16(a.value.isEmpty ? 0 : v - valueBase), at: p + 2)
            area.putLE32(UInt32(a.value.count), at: p + 8)
            area.putLE32(hash, at: p + 12)
            area.replaceSubrange((p + entryHeaderSize)..<(p + entryHeaderSize + a.name.count), with: a.name)
            area.replaceSubrange(v..<(v + a.value.count), with: a.value)
            p += (entryHeaderSize + a.name.count + 3) & ~3
            blockHash = (blockHash << 16) ^ (blockHash >> 16) ^ hash
        }
        return blockHash
    }

    /// In-inode area of `areaSize` bytes, or nil when the attributes do not fit there.
    static func encodeInInode(_ attrs: [EXT4Xattr], areaSize: Int) -> [UInt8]? {
        guard !attrs.isEmpty else { return [] }
        guard spaceNeeded(attrs) + 4 <= areaSize else { return nil }
        var area = [UInt8](repeating: 0, count: areaSize)
        area.putLE32(magic, at: 0)
        encode(attrs, into: &area, entriesStart: 4, valueEnd: areaSize, valueBase: 4)
        return area
    }

    /// An external attribute block with its checksum, or nil when they do not fit in one block.
    static func encodeBlock(_ attrs: [EXT4Xattr], blockSize: Int, blockNumber: UInt64, checksumSeed: UInt32?) -> [UInt8]? {
        guard spaceNeeded(attrs) + blockHeaderSize <= blockSize else { return nil }
        var block = [UInt8](repeating: 0, count: blockSize)
        block.putLE32(magic, at: 0)
        block.putLE32(1, at: 4)                      // reference count
        block.putLE32(1, at: 8)                      // blocks
        let hash = encode(attrs, into: &block, entriesStart: blockHeaderSize, valueEnd: blockSize, valueBase: 0)
        block.putLE32(hash, at: 0xC)
        if let seed = checksumSeed {
            var crc = CRC32C.update(seed, le64: blockNumber)
            crc = CRC32C.update(crc, block)
            block.putLE32(crc, at: 0x10)
        }
        return block
    }
}
