/// Deterministic test data shared by the test targets (test targets cannot import each other).
public enum TestData {
    /// Pseudo-random bytes (xorshift), so failures reproduce.
    public static func pseudoRandomBytes(count: Int, seed: UInt64) -> [UInt8] {
        var state = seed | 1
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { buf in
            var i = 0
            while i < count {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                var v = state
                for _ in 0..<8 where i < count { buf[i] = UInt8(truncatingIfNeeded: v); v >>= 8; i += 1 }
            }
        }
        return out
    }

    /// Compressible, text-like bytes.
    public static func compressibleBytes(count: Int, seed: UInt64) -> [UInt8] {
        let words = ["cvm", "disk", "grain", "sector", "workload", "attest", "measure", "\n", " ", "0000"].map { Array($0.utf8) }
        let rng = pseudoRandomBytes(count: count / 3 + 16, seed: seed)
        var out: [UInt8] = []
        out.reserveCapacity(count + 16)
        var i = 0
        while out.count < count { out += words[Int(rng[i % rng.count]) % words.count]; i += 1 }
        return Array(out.prefix(count))
    }
}
