/// Little-endian field access on byte arrays. Reads are bounds-checked by the callers'
/// structure sizes; `field(...)` helpers return 0 past the end so a short buffer can never trap.
extension Array where Element == UInt8 {
    @inline(__always) func le8(_ at: Int) -> UInt8 {
        at >= 0 && at < count ? self[at] : 0
    }

    @inline(__always) func le16(_ at: Int) -> UInt16 {
        guard at >= 0, at + 2 <= count else { return 0 }
        return UInt16(self[at]) | UInt16(self[at + 1]) << 8
    }

    @inline(__always) func le32(_ at: Int) -> UInt32 {
        guard at >= 0, at + 4 <= count else { return 0 }
        return UInt32(self[at]) | UInt32(self[at + 1]) << 8 | UInt32(self[at + 2]) << 16 | UInt32(self[at + 3]) << 24
    }

    @inline(__always) func le64(_ at: Int) -> UInt64 {
        UInt64(le32(at)) | UInt64(le32(at + 4)) << 32
    }

    @inline(__always) mutating func put8(_ v: UInt8, at: Int) {
        self[at] = v
    }

    @inline(__always) mutating func put16(_ v: UInt16, at: Int) {
        self[at] = UInt8(truncatingIfNeeded: v)
        self[at + 1] = UInt8(truncatingIfNeeded: v >> 8)
    }

    @inline(__always) mutating func put32(_ v: UInt32, at: Int) {
        for i in 0..<4 { self[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }

    @inline(__always) mutating func put64(_ v: UInt64, at: Int) {
        put32(UInt32(truncatingIfNeeded: v), at: at)
        put32(UInt32(truncatingIfNeeded: v >> 32), at: at + 4)
    }

    /// Big-endian 32-bit store (the jbd2 journal superblock is big-endian).
    @inline(__always) mutating func putBE32(_ v: UInt32, at: Int) {
        for i in 0..<4 { self[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(3 - i))) }
    }

    @inline(__always) func be32(_ at: Int) -> UInt32 {
        guard at >= 0, at + 4 <= count else { return 0 }
        return UInt32(self[at]) << 24 | UInt32(self[at + 1]) << 16 | UInt32(self[at + 2]) << 8 | UInt32(self[at + 3])
    }
}
