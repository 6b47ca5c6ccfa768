// Fuzz harness for the disk-format parsers.
//
// Two builds (docs/fuzzing.md):
// - libFuzzer: swift build --product cvm-fuzz -Xswiftc -sanitize=fuzzer,address
//              -Xswiftc -DCVM_LIBFUZZER
//   then `.build/debug/cvm-fuzz CORPUS_DIR` (libFuzzer's own main and flags).
// - plain: `cvm-fuzz --seed S --iterations N FILE...` runs a deterministic mutation loop over
//   the seed files; the test suite runs this short seeded run.
import DiskImage
import EXT4
#if canImport(Glibc)
import Glibc
#endif

#if CVM_LIBFUZZER
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    FuzzTarget.parse(bytes)
    EXT4FuzzTarget.parse(bytes)
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

// SwiftPM links an executable's entry point as `<module>_main`; hand control to libFuzzer's driver.
@_cdecl("cvm_fuzz_main")
public func cvmFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var vector = argv
    return LLVMFuzzerRunDriver(&count, &vector, fuzzOneInput)
}
#else
@main
struct FuzzMain {
    static func main() {
        var seed: UInt64 = 1
        var iterations = 1000
        var files: [String] = []
        var args = CommandLine.arguments.dropFirst()
        while let a = args.popFirst() {
            switch a {
            case "--seed": seed = UInt64(args.popFirst() ?? "") ?? seed
            case "--iterations": iterations = Int(args.popFirst() ?? "") ?? iterations
            default: files.append(a)
            }
        }
        var corpus: [[UInt8]] = []
        for f in files {
            guard let source = try? FileByteSource(path: f),
                  let bytes = try? source.bytes(count: Int(source.size), at: 0) else {
                let msg = "cvm-fuzz: cannot read seed file \(f)\n"
                _ = msg.withCString { write(2, $0, strlen($0)) }
                exit(2)
            }
            corpus.append(bytes)
        }
        if corpus.isEmpty { corpus = [[]] }
        var mutator = FuzzMutator(seed: seed)
        for i in 0..<iterations {
            let input = mutator.mutate(corpus[i % corpus.count])
            FuzzTarget.parse(input)
            EXT4FuzzTarget.parse(input)
        }
        print("cvm-fuzz: \(iterations) inputs from \(corpus.count) seeds (seed \(seed)): no crash")
    }
}
#endif
