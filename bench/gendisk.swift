// Writes the benchmark's data into an existing sparse disk image, deterministically:
// ~730 MiB in 1–8 MiB chunks of random bytes (like compressed packages), text-like bytes
// (like logs and configs, ~3× compressible) and explicitly written zeros, with holes between,
// all between 2 MiB and 4094 MiB — so a 4 GiB and a 30 GiB disk get the same allocated data.
//
// Usage: gendisk <image> [seed]      (compiled by bench/formats.sh with swiftc -O)
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct XorShift {
    var state: UInt64
    init(seed: UInt64) { state = seed | 1 }
    mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }
}

enum Kind: CaseIterable { case random, text, zeros }

let args = CommandLine.arguments
guard args.count >= 2 else {
    fputs("usage: gendisk <image> [seed]\n", stderr)
    exit(64)
}
let path = args[1]
var rng = XorShift(seed: args.count > 2 ? UInt64(args[2]) ?? 42 : 42)
let mib = 1 << 20
let spanStart = 2 * mib, spanEnd = 4094 * mib
var quota: [Kind: Int] = [.random: 330, .text: 300, .zeros: 100]   // MiB

// The chunk list first, then the holes spread between chunks.
var chunks: [(kind: Kind, mib: Int)] = []
while quota.values.contains(where: { $0 > 0 }) {
    let open = Kind.allCases.filter { quota[$0]! > 0 }
    let kind = open[Int(rng.next() % UInt64(open.count))]
    let length = min(1 + Int(rng.next() % 8), quota[kind]!)
    quota[kind]! -= length
    chunks.append((kind, length))
}
let dataMiB = chunks.reduce(0) { $0 + $1.mib }
let holeMiB = (spanEnd - spanStart) / mib - dataMiB
let weights = chunks.map { _ in 1 + Int(rng.next() % 100) }
let weightSum = weights.reduce(0, +)

let fd = open(path, O_WRONLY)
guard fd >= 0 else {
    fputs("gendisk: cannot open \(path)\n", stderr)
    exit(1)
}
let words = ["cvm", "disk", "grain", "sector", "workload", "attest", "measure", "kernel", "initrd",
             "systemd", "docker", "nginx", "compose", "tdx", "snp", "vtpm", "pcr", "sha256", "ok",
             "error", "warning", "info", "debug", "GET", "/api/v1/", "200", "404", "user", "root"]
    .map { Array($0.utf8) }
var buffer = [UInt8](repeating: 0, count: 8 * mib)
var position = spanStart
for (i, chunk) in chunks.enumerated() {
    position += holeMiB * weights[i] / weightSum * mib
    let count = chunk.mib * mib
    buffer.withUnsafeMutableBytes { b in
        switch chunk.kind {
        case .zeros:
            for j in 0..<count { b[j] = 0 }
        case .random:
            var j = 0
            while j < count {
                var v = rng.next()
                for _ in 0..<8 { b[j] = UInt8(truncatingIfNeeded: v); v >>= 8; j += 1 }
            }
        case .text:
            var j = 0
            while j < count {
                let r = rng.next()
                // Numbers and words in lines: a text-like ~3× compression ratio.
                let word = words[Int(r % UInt64(words.count))]
                for c in word where j < count { b[j] = c; j += 1 }
                if j < count { b[j] = r & 0x700 == 0 ? 10 : 32; j += 1 }
                if r & 0x3000 == 0 {
                    for c in String(r >> 40).utf8 where j < count { b[j] = c; j += 1 }
                }
            }
        }
    }
    let written = buffer.withUnsafeBytes { pwrite(fd, $0.baseAddress, count, off_t(position)) }
    guard written == count else {
        fputs("gendisk: write failed at \(position)\n", stderr)
        exit(1)
    }
    position += count
}
close(fd)
print("gendisk: \(dataMiB) MiB of data in \(chunks.count) chunks (random 330, text 300, zeros 100 MiB)")
