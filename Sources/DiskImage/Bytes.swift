/// Fixed-width integer access at byte offsets of on-disk structures.
/// VHD and qcow2 are big-endian; VMDK, GPT, tar-adjacent and ext4 little-endian.
extension Array where Element == UInt8 {
    @inline(__always) public func le16(_ o: Int) -> UInt16 { UInt16(self[o]) | UInt16(self[o + 1]) << 8 }
    @inline(__always) public func le32(_ o: Int) -> UInt32 {
        UInt32(self[o]) | UInt32(self[o + 1]) << 8 | UInt32(self[o + 2]) << 16 | UInt32(self[o + 3]) << 24
    }
    @inline(__always) public func le64(_ o: Int) -> UInt64 { UInt64(le32(o)) | UInt64(le32(o + 4)) << 32 }
    @inline(__always) public func be16(_ o: Int) -> UInt16 { UInt16(self[o]) << 8 | UInt16(self[o + 1]) }
    @inline(__always) public func be32(_ o: Int) -> UInt32 {
        UInt32(self[o]) << 24 | UInt32(self[o + 1]) << 16 | UInt32(self[o + 2]) << 8 | UInt32(self[o + 3])
    }
    @inline(__always) public func be64(_ o: Int) -> UInt64 { UInt64(be32(o)) << 32 | UInt64(be32(o + 4)) }

    public mutating func putLE16(_ v: UInt16, at o: Int) { for i in 0..<2 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
    public mutating func putLE32(_ v: UInt32, at o: Int) { for i in 0..<4 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
    public mutating func putLE64(_ v: UInt64, at o: Int) { for i in 0..<8 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
    public mutating func putBE16(_ v: UInt16, at o: Int) { for i in 0..<2 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * (1 - i))) } }
    public mutating func putBE32(_ v: UInt32, at o: Int) { for i in 0..<4 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * (3 - i))) } }
    public mutating func putBE64(_ v: UInt64, at o: Int) { for i in 0..<8 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * (7 - i))) } }

    /// ASCII bytes `[o, o+n)` as a string (for magics and text fields).
    public func ascii(_ o: Int, _ n: Int) -> String {
        String(decoding: self[o..<o + n], as: UTF8.self)
    }
}

/// True when every byte of `buffer` is zero. Word-at-a-time; the hot loop of zero skipping.
@inline(__always)
public func isAllZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
    guard let base = buffer.baseAddress else { return true }
    let count = buffer.count
    var i = 0
    // Unaligned head.
    while i < count, (Int(bitPattern: base) + i) & 7 != 0 {
        if base.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }
        i += 1
    }
    let words = (count - i) / 32
    var p = (base + i).assumingMemoryBound(to: UInt64.self)
    for _ in 0..<words {
        if (p[0] | p[1] | p[2] | p[3]) != 0 { return false }
        p += 4
    }
    i += words * 32
    while i < count {
        if base.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }
        i += 1
    }
    return true
}

/// CRC-32 (IEEE, as used by GPT, gzip and zlib's crc32()).
import CZlib
public func crc32(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
    guard let base = bytes.baseAddress, bytes.count > 0 else { return seed }
    var crc = UInt(seed)
    var offset = 0
    while offset < bytes.count {
        let n = min(bytes.count - offset, Int(UInt32.max))
        crc = CZlib.crc32(crc, base.assumingMemoryBound(to: UInt8.self) + offset, UInt32(n))
        offset += n
    }
    return UInt32(truncatingIfNeeded: crc)
}

public func crc32(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { crc32($0, seed: seed) }
}
