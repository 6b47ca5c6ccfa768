import CVMSupport

/// Entry points for fuzzing the format parsers (see docs/fuzzing.md).
///
/// `parse` runs everything a user's file goes through — detection, the container parser,
/// reads of the virtual disk, GPT and filesystem probing — on bytes in memory. Any error is
/// fine; a crash, trap or hang is a bug.
public enum FuzzTarget {
    /// Bounds the work per input so huge claimed sizes cannot make a run slow.
    static let maxReadPerInput = 1 << 20

    public static func parse(_ bytes: [UInt8]) {
        let source = MemoryByteSource(bytes, name: "fuzz-input")
        do {
            let reader = try DiskImageFile.open(source: source, path: nil)
            _ = try? DiskInspection.inspect(reader, name: source.name)
            let ranges = (try? reader.storedRanges()) ?? []
            var budget = maxReadPerInput
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            for range in ranges.prefix(16) where budget > 0 {
                let count = Int(min(UInt64(buffer.count), range.upperBound - range.lowerBound))
                budget -= count
                _ = try? buffer.withUnsafeMutableBytes {
                    try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<count]), at: range.lowerBound)
                }
            }
        } catch {
            // Rejected input: expected for most mutations.
        }
    }
}

/// A deterministic mutator (xorshift), so a seeded run reproduces exactly.
/// Mutations favour the first and last 4 KiB, where headers and footers live.
public struct FuzzMutator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed | 1 }

    public mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }

    mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(next() % UInt64(n)) }

    mutating func position(in count: Int) -> Int {
        guard count > 0 else { return 0 }
        switch below(10) {
        case 0..<5: return below(min(count, 4096))
        case 5..<8: return count - 1 - below(min(count, 4096))
        default: return below(count)
        }
    }

    /// Returns a mutated copy of `input`: 1–4 of bit flips, interesting values, truncation,
    /// duplication or deletion.
    public mutating func mutate(_ input: [UInt8]) -> [UInt8] {
        var b = input
        let interesting: [UInt64] = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF,
                                     0x8000_0000_0000_0000, UInt64.max, 512, 65536, 1 << 30]
        for _ in 0...below(4) {
            if b.isEmpty { b = [UInt8(truncatingIfNeeded: next())]; continue }
            switch below(6) {
            case 0:
                let p = position(in: b.count)
                b[p] ^= UInt8(1 << below(8))
            case 1:
                let p = position(in: b.count)
                b[p] = UInt8(truncatingIfNeeded: next())
            case 2:
                let v = interesting[below(interesting.count)]
                let width = [1, 2, 4, 8][below(4)]
                let p = position(in: b.count)
                let bigEndian = below(2) == 0
                for i in 0..<width where p + i < b.count {
                    let shift = bigEndian ? 8 * (width - 1 - i) : 8 * i
                    b[p + i] = UInt8(truncatingIfNeeded: v >> UInt64(shift))
                }
            case 3:
                b.removeLast(min(b.count, 1 + below(max(1, b.count / 2))))
            case 4:
                let p = position(in: b.count)
                let n = min(b.count - p, 1 + below(64))
                b.insert(contentsOf: b[p..<p + n], at: position(in: b.count))
            default:
                let p = position(in: b.count)
                let n = min(b.count - p, 1 + below(512))
                b.removeSubrange(p..<p + n)
            }
        }
        return b
    }
}
