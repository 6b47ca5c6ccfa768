/// What a partition's first bytes say about its filesystem (for `inspect` and finding the
/// data partition by label). Only identifies; the ext4 module reads and writes.
public struct FilesystemProbe: Sendable, Equatable, Codable {
    public let type: String
    public let label: String
    public let uuid: String

    /// Probes the ext2/3/4 superblock at byte 1024 of a partition.
    public static func probe(_ disk: DiskReader, partitionOffset: UInt64, partitionSize: UInt64) throws -> FilesystemProbe? {
        guard partitionSize >= 2048 else { return nil }
        let sb = try disk.bytes(count: 1024, at: partitionOffset + 1024)
        guard sb.le16(0x38) == 0xEF53 else { return nil }
        // Feature flags tell ext2/3/4 apart the way blkid does.
        let compat = sb.le32(0x5C), incompat = sb.le32(0x60), roCompat = sb.le32(0x64)
        let ext4Incompat: UInt32 = 0x0040 | 0x0080 | 0x0200 | 0x0008 | 0x0010 // extents, 64bit, flex_bg, meta_bg, extra
        let ext4RoCompat: UInt32 = 0x0008 | 0x0010 | 0x0020 | 0x0040 | 0x0400 // huge_file, gdt_csum, dir_nlink, extra_isize, metadata_csum
        let type: String
        if incompat & ext4Incompat != 0 || roCompat & ext4RoCompat != 0 { type = "ext4" }
        else if compat & 0x0004 != 0 { type = "ext3" }   // has_journal
        else { type = "ext2" }
        let labelBytes = sb[0x78..<0x88].prefix { $0 != 0 }
        let u = Array(sb[0x68..<0x78])
        func h(_ x: UInt8) -> String { let s = String(x, radix: 16); return s.count == 1 ? "0" + s : s }
        let hex = u.map(h).joined()
        let uuid = [hex.prefix(8), hex.dropFirst(8).prefix(4), hex.dropFirst(12).prefix(4),
                    hex.dropFirst(16).prefix(4), hex.dropFirst(20)].map(String.init).joined(separator: "-")
        return FilesystemProbe(type: type, label: String(decoding: labelBytes, as: UTF8.self), uuid: uuid)
    }
}
