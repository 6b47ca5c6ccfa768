/// The order in which Azure Storage sorts `x-ms-*` header names for SharedKey. The service sorts
/// with a culture-aware collation, not by bytes: at the first level `-` and `'` are ignored and
/// letters compare case-insensitively (so `x-ms-meta-ab` sorts before `x-ms-meta-a-z`); only
/// when names tie there do `'` and `-` count. Microsoft's SDKs emulate it with weight tables;
/// this is the same ordering, expressed as ranks.
enum AzureHeaderOrder {
    /// First-level weights, ascending; characters not listed (including `-` and `'`) are ignorable.
    private static let primaryOrder = Array("!#$%&*.^_`|~+0123456789abcdefghijklmnopqrstuvwxyz".utf8)

    private static let primaryWeights: [UInt16] = {
        var weights = [UInt16](repeating: 0, count: 128)
        for (rank, c) in primaryOrder.enumerated() { weights[Int(c)] = UInt16(rank + 2) }
        for c in UInt8(ascii: "A")...UInt8(ascii: "Z") { weights[Int(c)] = weights[Int(c + 32)] }
        return weights
    }()

    /// Second-level weights: only `'` and `-` (in that order) carry weight.
    private static func secondaryWeight(_ c: UInt8) -> UInt16 {
        c == UInt8(ascii: "'") ? 2 : (c == UInt8(ascii: "-") ? 3 : 0)
    }

    private static func primaryWeight(_ c: UInt8) -> UInt16 {
        c < 128 ? primaryWeights[Int(c)] : 0
    }

    /// True when `a` sorts before `b`.
    static func precedes(_ a: String, _ b: String) -> Bool { compare(Array(a.utf8), Array(b.utf8)) < 0 }

    /// -1, 0 or 1. Weight 1 marks the end of a name (lower than any character); weight 0 is an
    /// ignorable character, skipped on its own side.
    static func compare(_ lhs: [UInt8], _ rhs: [UInt8]) -> Int {
        // Level 1: skip ignorables independently, compare the first differing weight.
        var i = 0, j = 0
        while true {
            let w1: UInt16 = i < lhs.count ? primaryWeight(lhs[i]) : 1
            let w2: UInt16 = j < rhs.count ? primaryWeight(rhs[j]) : 1
            if w1 == 1 && w2 == 1 { break }
            if w1 == w2 { i += 1; j += 1 }
            else if w1 == 0 { i += 1 }
            else if w2 == 0 { j += 1 }
            else { return w1 < w2 ? -1 : 1 }
        }
        // Level 2: walk in step; the first place where only one side has a weighted (`'`/`-`)
        // or only one side has ended decides — the side that moved on first sorts first.
        i = 0; j = 0
        while true {
            if i != j { return i > j ? -1 : 1 }
            let w1: UInt16 = i < lhs.count ? secondaryWeight(lhs[i]) : 1
            let w2: UInt16 = j < rhs.count ? secondaryWeight(rhs[j]) : 1
            if w1 == 1 && w2 == 1 { return 0 }
            if w1 == w2 { i += 1; j += 1 }
            else if w1 == 0 { i += 1 }
            else if w2 == 0 { j += 1 }
            else { return w1 < w2 ? -1 : 1 }
        }
    }
}
