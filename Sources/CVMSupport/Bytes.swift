/// Fixed-width integer access at byte offsets of on-disk structures. VHD, qcow2 and the jbd2
/// journal are big-endian; VMDK, GPT and ext4 little-endian.
///
/// Reads past the end return 0 instead of trapping: parsers validate sizes first, and a bug
/// there must not turn a malformed file into a crash.
extension Array where Element == UInt8 {
    @inline(__always) public func le8(_ o: Int) -> UInt8 { o >= 0 && o < count ? self[o] : 0 }
    @inline(__always) public func le16(_ o: Int) -> UInt16 {
        guard o >= 0, o + 2 <= count else { return 0 }
        return UInt16(self[o]) | UInt16(self[o + 1]) << 8
    }
    @inline(__always) public func le32(_ o: Int) -> UInt32 {
        guard o >= 0, o + 4 <= count else { return 0 }
        return UInt32(self[o]) | UInt32(self[o + 1]) << 8 | UInt32(self[o + 2]) << 16 | UInt32(self[o + 3]) << 24
    }
    @inline(__always) public func le64(_ o: Int) -> UInt64 { UInt64(le32(o)) | UInt64(le32(o + 4)) << 32 }
    @inline(__always) public func be16(_ o: Int) -> UInt16 {
        guard o >= 0, o + 2 <= count else { return 0 }
        return UInt16(self[o]) << 8 | UInt16(self[o + 1])
    }
    @inline(__always) public func be32(_ o: Int) -> UInt32 {
        guard o >= 0, o + 4 <= count else { return 0 }
        return UInt32(self[o]) << 24 | UInt32(self[o + 1]) << 16 | UInt32(self[o + 2]) << 8 | UInt32(self[o + 3])
    }
    @inline(__always) public func be64(_ o: Int) -> UInt64 { UInt64(be32(o)) << 32 | UInt64(be32(o + 4)) }

    public mutating func put8(_ v: UInt8, at o: Int) { self[o] = v }
    public mutating func putLE16(_ v: UInt16, at o: Int) { for i in 0..<2 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
    public mutating func putLE32(_ v: UInt32, at o: Int) { for i in 0..<4 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
    public mutating func putLE64(_ v: UInt64, at o: Int) { for i in 0..<8 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
    public mutating func putBE16(_ v: UInt16, at o: Int) { for i in 0..<2 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * (1 - i))) } }
    public mutating func putBE32(_ v: UInt32, at o: Int) { for i in 0..<4 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * (3 - i))) } }
    public mutating func putBE64(_ v: UInt64, at o: Int) { for i in 0..<8 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * (7 - i))) } }

    /// ASCII bytes `[o, o+n)` as a string (for magics and text fields); empty past the end.
    public func ascii(_ o: Int, _ n: Int) -> String {
        guard o >= 0, n >= 0, o + n <= count else { return "" }
        return String(decoding: self[o..<o + n], as: UTF8.self)
    }
}
