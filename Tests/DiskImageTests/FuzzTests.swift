import XCTest
@testable import DiskImage
import CVMSupport

/// A short seeded fuzz run over every parser (the long runs use libFuzzer: docs/fuzzing.md).
/// A trap, crash or hang in any parser fails the test run.
final class FuzzTests: XCTestCase {
    /// Small seed images in every readable format, so mutations land in real headers.
    func makeSeeds() throws -> [[UInt8]] {
        let dir = try TestSupport.tempDir(self)
        let raw = dir.appendingPathComponent("seed.raw").path
        FileManager.default.createFile(atPath: raw, contents: nil)
        XCTAssertEqual(truncate(raw, 3 << 20), 0)
        try TestSupport.run("sgdisk", ["--clear", "--new=1:1M:0", "--change-name=1:data", raw])
        try TestSupport.writeBytes(TestSupport.pseudoRandomBytes(count: 70_000, seed: 9), to: raw, at: 1 << 20)
        var seeds: [[UInt8]] = []
        func load(_ path: String) throws {
            let s = try FileByteSource(path: path)
            seeds.append(try s.bytes(count: Int(s.size), at: 0))
        }
        try load(raw)
        for (name, format) in [("seed.vhd", OutputFormat.vhd), ("seed.vmdk", .vmdk), ("seed.tar.gz", .tarGz)] {
            let out = dir.appendingPathComponent(name).path
            do {
                try TestSupport.convert(raw, to: out, format: format)
                try load(out)
            } catch let e as CVMError where e.kind == .unsupported {
                continue  // format not implemented in this build
            }
        }
        let dyn = dir.appendingPathComponent("seed-dynamic.vhd").path
        try TestSupport.run("qemu-img", ["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", raw, dyn])
        try load(dyn)
        return seeds
    }

    func testSeededMutationsNeverCrash() throws {
        let seeds = try makeSeeds()
        XCTAssertGreaterThanOrEqual(seeds.count, 2)
        // Every seed itself must parse (otherwise mutations test nothing).
        for s in seeds {
            XCTAssertNoThrow(try DiskImageFile.open(source: MemoryByteSource(s), path: nil))
        }
        var mutator = FuzzMutator(seed: 20261123)
        let iterations = 1500
        for i in 0..<iterations {
            FuzzTarget.parse(mutator.mutate(seeds[i % seeds.count]))
        }
    }

    func testMutatorIsDeterministic() {
        var a = FuzzMutator(seed: 7), b = FuzzMutator(seed: 7)
        let input = TestSupport.pseudoRandomBytes(count: 10_000, seed: 3)
        for _ in 0..<50 { XCTAssertEqual(a.mutate(input), b.mutate(input)) }
    }
}
