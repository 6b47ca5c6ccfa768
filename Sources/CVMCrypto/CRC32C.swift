/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, initial value and final XOR ~0), the
/// checksum Google Cloud Storage keeps for every object (`crc32c`, base64 of the big-endian value).
///
/// Slicing-by-8 tables: about eight times the byte-at-a-time speed, enough to hash an upload
/// stream without slowing it. Only for protocol checksums, never for security.
public struct CRC32C: Sendable {
    /// The running register (already inverted).
    private var register: UInt32 = 0xFFFF_FFFF

    public init() {}

    /// The checksum of everything passed to `update` so far.
    public var value: UInt32 { ~register }

    /// `value` as 4 big-endian bytes, as GCS encodes it (before base64).
    public var bigEndianBytes: [UInt8] {
        let v = value
        return [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var p = bytes.baseAddress, bytes.count > 0 else { return }
        var n = bytes.count
        var c = register
        CRC32C.tables.withUnsafeBufferPointer { t in
            // Byte steps up to 8-byte alignment, then 8 bytes per step.
            while n > 0, UInt(bitPattern: p) & 7 != 0 {
                c = t[Int((c ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (c >> 8)
                p += 1; n -= 1
            }
            while n >= 8 {
                let word = UInt64(littleEndian: p.load(as: UInt64.self))
                let lo = UInt32(truncatingIfNeeded: word) ^ c
                let hi = UInt32(truncatingIfNeeded: word >> 32)
                c = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                p += 8; n -= 8
            }
            while n > 0 {
                c = t[Int((c ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (c >> 8)
                p += 1; n -= 1
            }
        }
        register = c
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c = CRC32C()
        c.update(bytes)
        return c.value
    }

    /// The CRC-32C of A followed by B from the CRC-32C of A (`first`), of B (`second`) and B's
    /// length, without the bytes (zlib's crc32_combine method over this polynomial): a stream
    /// hashed in blocks gets its whole checksum without a second pass.
    public static func combine(_ first: UInt32, _ second: UInt32, secondLength: UInt64) -> UInt32 {
        multiplyModP(xPower8n(secondLength), first) ^ second
    }

    /// a × b modulo the polynomial, in the reflected bit order of the register.
    private static func multiplyModP(_ a: UInt32, _ b: UInt32) -> UInt32 {
        var m: UInt32 = 1 << 31, p: UInt32 = 0, b = b
        while m != 0 {
            if a & m != 0 { p ^= b }
            m >>= 1
            b = b & 1 != 0 ? (b >> 1) ^ 0x82F6_3B78 : b >> 1
        }
        return p
    }

    /// x^(8n) modulo the polynomial (n bytes of shift).
    private static func xPower8n(_ n: UInt64) -> UInt32 {
        var p: UInt32 = 1 << 31   // x^0
        var n = n, k = 3           // 8n = n × 2^3
        while n != 0 {
            if n & 1 != 0 { p = multiplyModP(powersOfX[k], p) }
            n >>= 1
            k += 1
        }
        return p
    }

    /// powersOfX[k] = x^(2^k) modulo the polynomial, for every k a 64-bit length can reach.
    private static let powersOfX: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 67)
        var p: UInt32 = 1 << 30   // x^1
        table[0] = p
        for k in 1..<67 {
            p = multiplyModP(p, p)
            table[k] = p
        }
        return table
    }()

    /// tables[k*256 + b]: the register after byte b followed by k zero bytes.
    private static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[i] = c
        }
        for k in 1..<8 {
            for i in 0..<256 {
                let prev = t[(k - 1) * 256 + i]
                t[k * 256 + i] = t[Int(prev & 0xFF)] ^ (prev >> 8)
            }
        }
        return t
    }()
}
