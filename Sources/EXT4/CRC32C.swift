/// CRC-32C (Castagnoli), the checksum of ext4's `metadata_csum`.
///
/// ext4 chains the raw register: no final inversion, and the caller passes the running value
/// (`~0` to start, as the kernel's `ext4_chksum` does).
enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c = crc
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return c
    }

    static func update(_ crc: UInt32, _ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { update(crc, $0) }
    }

    static func update(_ crc: UInt32, _ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.withUnsafeBytes { update(crc, $0) }
    }

    static func update(_ crc: UInt32, le32 v: UInt32) -> UInt32 {
        withUnsafeBytes(of: v.littleEndian) { update(crc, $0) }
    }

    static func update(_ crc: UInt32, le64 v: UInt64) -> UInt32 {
        withUnsafeBytes(of: v.littleEndian) { update(crc, $0) }
    }
}
