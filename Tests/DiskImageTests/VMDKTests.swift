import Foundation
import XCTest
@testable import DiskImage
import CVMSupport

/// Stream-optimized VMDK: qemu-img is the referee for what we write, and writes the
/// independent inputs we read.
final class VMDKTests: XCTestCase {
    // MARK: writing

    func testRawToVMDKIsStreamOptimizedAndMatchesSource() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src)
        let out = dir.appendingPathComponent("disk.vmdk").path
        try TestSupport.convert(src, to: out, format: .vmdk)

        try TestSupport.assertSameContent(src, "raw", out, "vmdk")
        let info = try qemuInfo(out)
        XCTAssertEqual(info["format"] as? String, "vmdk")
        XCTAssertEqual(info["virtual-size"] as? Int, 64 << 20)
        let specific = (info["format-specific"] as? [String: Any])?["data"] as? [String: Any]
        XCTAssertEqual(specific?["create-type"] as? String, "streamOptimized")
        let extents = specific?["extents"] as? [[String: Any]]
        XCTAssertEqual(extents?.first?["compressed"] as? Bool, true)
        XCTAssertEqual(extents?.first?["cluster-size"] as? Int, 65536)
        let check = try TestSupport.run("qemu-img", ["check", "-f", "vmdk", out], allowFailure: true)
        XCTAssertEqual(check.status, 0, "qemu-img check: \(check.stdout) \(check.stderr)")

        // The layout the format (and AWS) expects: header with GD_AT_END, the descriptor,
        // and footer marker + footer + end-of-stream marker as the last three sectors.
        let file = try FileByteSource(path: out)
        let head = try file.bytes(count: 512, at: 0)
        let header = try XCTUnwrap(VMDK.SparseExtentHeader(decoding: head))
        XCTAssertEqual(header.version, 3)
        XCTAssertEqual(header.flags, 0x30001)
        XCTAssertEqual(header.gdOffset, VMDK.gdAtEnd)
        XCTAssertEqual(header.grainSize, 128)
        XCTAssertEqual(header.capacity, (64 << 20) / 512)
        let descriptor = String(decoding: try file.bytes(count: 20 * 512, at: 512).prefix { $0 != 0 }, as: UTF8.self)
        XCTAssertTrue(descriptor.hasPrefix("# Disk DescriptorFile\n"))
        XCTAssertTrue(descriptor.contains("createType=\"streamOptimized\""))
        XCTAssertTrue(descriptor.contains("RDONLY 131072 SPARSE \"disk.vmdk\""))
        XCTAssertTrue(descriptor.contains("ddb.adapterType = \"lsilogic\""))
        let tail = try file.bytes(count: 1536, at: file.size - 1536)
        XCTAssertEqual(tail.le32(12), 3, "footer marker")
        let footer = try XCTUnwrap(VMDK.SparseExtentHeader(decoding: Array(tail[512..<1024])))
        XCTAssertNotEqual(footer.gdOffset, VMDK.gdAtEnd)
        XCTAssertEqual(Array(tail[1024..<1536]), [UInt8](repeating: 0, count: 512), "end-of-stream marker")
        XCTAssertEqual(file.size % 512, 0)
    }

    func testSizeNotAGrainMultiple() throws {
        let dir = try TestSupport.tempDir(self)
        // A whole number of sectors but not of grains, with data in the last, short grain.
        let src = dir.appendingPathComponent("odd.raw").path
        let size: UInt64 = (3 << 20) + 7 * 512
        try makeRaw(src, size: size, chunks: [(0, 100_000), (size - 3000, 3000), (1 << 20, 70_000)])
        let out = dir.appendingPathComponent("odd.vmdk").path
        try TestSupport.convert(src, to: out, format: .vmdk)
        try TestSupport.assertSameContent(src, "raw", out, "vmdk")
        XCTAssertEqual(try qemuInfo(out)["virtual-size"] as? Int, Int(size))
        let back = dir.appendingPathComponent("odd-back.raw").path
        try TestSupport.convert(out, to: back, format: .raw)
        XCTAssertEqual(try TestSupport.sha256(back), try TestSupport.sha256(src))

        // qemu stores the short last grain short; we accept that as well.
        let qemu = dir.appendingPathComponent("odd-qemu.vmdk").path
        try TestSupport.run("qemu-img", ["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", src, qemu])
        let fromQemu = dir.appendingPathComponent("odd-qemu.raw").path
        try TestSupport.convert(qemu, to: fromQemu, format: .raw)
        XCTAssertEqual(try TestSupport.sha256(fromQemu), try TestSupport.sha256(src))

        // Not even a sector multiple: the disk grows to the next sector, padded with zeros.
        let src2 = dir.appendingPathComponent("odd2.raw").path
        let size2: UInt64 = (2 << 20) + 1000
        try makeRaw(src2, size: size2, chunks: [(size2 - 900, 900)])
        let out2 = dir.appendingPathComponent("odd2.vmdk").path
        try TestSupport.convert(src2, to: out2, format: .vmdk)
        XCTAssertEqual(try qemuInfo(out2)["virtual-size"] as? Int, Int(DiskGeometry.roundUp(size2, to: 512)))
        try TestSupport.assertSameContent(src2, "raw", out2, "vmdk")
        let reader = try DiskImageFile.open(out2)
        XCTAssertEqual(reader.virtualSize, DiskGeometry.roundUp(size2, to: 512))
        let expected = try Array(Data(contentsOf: URL(fileURLWithPath: src2)))
        XCTAssertEqual(try reader.bytes(count: Int(size2), at: 0), expected)
        XCTAssertEqual(try reader.bytes(count: 24, at: size2), [UInt8](repeating: 0, count: 24))
    }

    func testRoundTripThroughOurVMDK() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src, seed: 7)
        let vmdk = dir.appendingPathComponent("disk.vmdk").path
        try TestSupport.convert(src, to: vmdk, format: .vmdk)
        let back = dir.appendingPathComponent("back.raw").path
        try TestSupport.convert(vmdk, to: back, format: .raw)
        XCTAssertEqual(try TestSupport.sha256(back), try TestSupport.sha256(src))
    }

    func testOutputIsReproducible() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src)
        let a = dir.appendingPathComponent("a.vmdk").path
        let b = dir.appendingPathComponent("b.vmdk").path
        try TestSupport.convert(src, to: a, format: .vmdk)
        // Thread count must not change the bytes.
        try TestSupport.convert(src, to: b, format: .vmdk, options: WriterOptions(threads: 1))
        XCTAssertEqual(try TestSupport.sha256(a), try TestSupport.sha256(b))
    }

    func testSparseDiskStoresOnlyDataGrains() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src, size: 256 << 20)
        let out = dir.appendingPathComponent("disk.vmdk").path
        let stats = try TestSupport.convert(src, to: out, format: .vmdk)
        let reader = try DiskImageFile.open(out)
        XCTAssertTrue(reader is VMDKStreamReader)
        XCTAssertEqual(reader.virtualSize, 256 << 20)
        let allocated = try reader.allocatedBytes()
        XCTAssertEqual(allocated, stats.dataBytes, "exactly the non-zero grains are stored")
        XCTAssertLessThan(allocated, 64 << 20)
        var st = stat()
        XCTAssertEqual(stat(out, &st), 0)
        XCTAssertLessThan(UInt64(st.st_size), 32 << 20)
    }

    func testEmptyDiskHasNoGrains() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("empty.raw").path
        try makeRaw(src, size: 40 << 20, chunks: [])
        let out = dir.appendingPathComponent("empty.vmdk").path
        try TestSupport.convert(src, to: out, format: .vmdk)
        try TestSupport.assertSameContent(src, "raw", out, "vmdk")
        XCTAssertEqual(try DiskImageFile.open(out).allocatedBytes(), 0)
    }

    // MARK: reading what others wrote

    func testReadsQemuStreamOptimized() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src, seed: 3)
        let vmdk = dir.appendingPathComponent("qemu.vmdk").path
        try TestSupport.run("qemu-img", ["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", src, vmdk])
        let reader = try DiskImageFile.open(vmdk)
        XCTAssertEqual(reader.format, .vmdkStream)
        XCTAssertEqual(reader.virtualSize, 64 << 20)
        XCTAssertLessThan(try reader.allocatedBytes(), 40 << 20)
        let back = dir.appendingPathComponent("back.raw").path
        try TestSupport.convert(vmdk, to: back, format: .raw)
        XCTAssertEqual(try TestSupport.sha256(back), try TestSupport.sha256(src))
        // Small reads across grain boundaries (how GPT and filesystem code read).
        let expected = try Array(Data(contentsOf: URL(fileURLWithPath: src)))
        for (offset, count) in [(0, 512), (512, 33 * 512), (65_536 - 100, 300), ((9 << 20) + 12_345, 200_000), ((64 << 20) - 512, 512)] {
            XCTAssertEqual(try reader.bytes(count: count, at: UInt64(offset)), Array(expected[offset..<offset + count]), "at \(offset)")
        }
    }

    func testReadsQemuMonolithicSparse() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src, seed: 5)
        let vmdk = dir.appendingPathComponent("sparse.vmdk").path
        try TestSupport.run("qemu-img", ["convert", "-f", "raw", "-O", "vmdk", src, vmdk])
        let back = dir.appendingPathComponent("back.raw").path
        try TestSupport.convert(vmdk, to: back, format: .raw)
        XCTAssertEqual(try TestSupport.sha256(back), try TestSupport.sha256(src))
    }

    func testRefusesOtherVMDKTypes() throws {
        let dir = try TestSupport.tempDir(self)
        let vmdk = dir.appendingPathComponent("split.vmdk").path
        try TestSupport.run("qemu-img", ["create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", vmdk, "64M"])
        assertRejected(try DiskImageFile.open(vmdk), path: vmdk, mentioning: "descriptor file")

        // Our file with another createType in its descriptor.
        let good = try makeOurVMDK(dir)
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: good)))
        let text = Array("createType=\"vmfs\"\n".utf8)
        let typeLine = try XCTUnwrap(find(Array("createType=\"streamOptimized\"\n".utf8), in: bytes))
        bytes.replaceSubrange(typeLine..<typeLine + 29, with: text + [UInt8](repeating: 0x20, count: 29 - text.count))
        let other = try write(bytes, dir, "other.vmdk")
        assertRejected(try VMDKStreamReader(source: FileByteSource(path: other)), path: other, mentioning: "createType \"vmfs\"")
    }

    func testDescriptorParsing() throws {
        let text = "# Disk DescriptorFile\r\nversion=1\r\nCID=2bdc5c77\r\nparentCID=ffffffff\r\n" +
            "createType=streamOptimized\r\n\r\n# Extent description\r\nRDONLY 16777216 SPARSE \"dest 0.vmdk\"\r\n"
        let d = VMDK.Descriptor(parsing: Array(text.utf8) + [0, 0x41])
        XCTAssertEqual(d.createType, "streamOptimized")
        XCTAssertEqual(d.parentCID, 0xFFFF_FFFF)
        XCTAssertEqual(d.extents, [.init(access: "RDONLY", sectors: 16_777_216, type: "SPARSE")])
        XCTAssertNoThrow(try d.checkSupported(capacity: 16_777_216, name: "x.vmdk"))
        XCTAssertThrowsError(try d.checkSupported(capacity: 8, name: "x.vmdk"))

        let delta = VMDK.Descriptor(parsing: Array("parentCID=1234abcd\ncreateType=\"monolithicSparse\"\n".utf8))
        XCTAssertThrowsError(try delta.checkSupported(capacity: 0, name: "x.vmdk")) { error in
            XCTAssertTrue((error as? CVMError)?.message.contains("delta disk") == true, "\(error)")
        }
        let ours = VMDK.Descriptor(parsing: Array(VMDK.Descriptor.render(capacitySectors: 131_072).utf8))
        XCTAssertEqual(ours.createType, "streamOptimized")
        XCTAssertNoThrow(try ours.checkSupported(capacity: 131_072, name: "x.vmdk"))
        XCTAssertEqual(VMDK.Descriptor.render(capacitySectors: 131_072), VMDK.Descriptor.render(capacitySectors: 131_072))
    }

    func testHeaderRoundTrip() throws {
        let h = VMDK.SparseExtentHeader(version: 3, flags: 0x30001, capacity: 123_456, grainSize: 128,
                                        descriptorOffset: 1, descriptorSize: 20, numGTEsPerGT: 512,
                                        rgdOffset: 0, gdOffset: VMDK.gdAtEnd, overHead: 128, compressAlgorithm: 1)
        let bytes = h.encoded()
        XCTAssertEqual(bytes.count, 512)
        XCTAssertEqual(Array(bytes[0..<4]), Array("KDMV".utf8))
        XCTAssertEqual(Array(bytes[73..<77]), [0x0A, 0x20, 0x0D, 0x0A])
        XCTAssertEqual(VMDK.SparseExtentHeader(decoding: bytes), h)
        XCTAssertNoThrow(try h.validate(name: "x"))
        XCTAssertEqual(h.grainCount, 965)
        XCTAssertEqual(h.tableCount, 2)
    }

    // MARK: corrupt input

    func testCorruptInputsNameTheFile() throws {
        let dir = try TestSupport.tempDir(self)
        let good = try makeOurVMDK(dir)
        let original = try Array(Data(contentsOf: URL(fileURLWithPath: good)))
        let footerAt = original.count - 1024
        let firstGrain = 128 * 512
        XCTAssertEqual(original.le64(firstGrain), 0, "the first stored grain is LBA 0 (protective MBR)")

        func variant(_ name: String, _ edit: (inout [UInt8]) -> Void) throws -> String {
            var b = original
            edit(&b)
            return try write(b, dir, name)
        }
        func openAndReadAll(_ path: String) throws {
            let reader = try VMDKStreamReader(source: FileByteSource(path: path))
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            for range in try reader.storedRanges() {
                var at = range.lowerBound
                while at < range.upperBound {
                    let n = Int(min(UInt64(buffer.count), range.upperBound - at))
                    try buffer.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: at) }
                    at += UInt64(n)
                }
            }
        }

        let badMagic = try variant("magic.vmdk") { $0[0] = UInt8(ascii: "X") }
        assertRejected(try openAndReadAll(badMagic), path: badMagic, mentioning: "KDMV")
        let badVersion = try variant("version.vmdk") { $0.putLE32(9, at: 4) }
        assertRejected(try openAndReadAll(badVersion), path: badVersion, mentioning: "version 9")
        let textMode = try variant("newline.vmdk") { $0[75] = 0x0A }
        assertRejected(try openAndReadAll(textMode), path: textMode, mentioning: "newline")

        let truncated = try write(Array(original[0..<original.count / 2]), dir, "truncated.vmdk")
        assertRejected(try openAndReadAll(truncated), path: truncated, mentioning: "truncated")
        let tiny = try write(Array(original[0..<100]), dir, "tiny.vmdk")
        assertRejected(try openAndReadAll(tiny), path: tiny, mentioning: "truncated")

        let gdBeyond = try variant("gd.vmdk") { $0.putLE64(1 << 40, at: footerAt + 56) }
        assertRejected(try openAndReadAll(gdBeyond), path: gdBeyond, mentioning: "grain directory")
        let gdWrap = try variant("gdwrap.vmdk") { $0.putLE64(UInt64.max - 3, at: footerAt + 56) }
        assertRejected(try openAndReadAll(gdWrap), path: gdWrap, mentioning: "grain directory")

        let lbaBeyond = try variant("lba.vmdk") { $0.putLE64(1 << 40, at: firstGrain) }
        assertRejected(try openAndReadAll(lbaBeyond), path: lbaBeyond, mentioning: "is beyond the capacity")
        let lbaOther = try variant("lba2.vmdk") { $0.putLE64(128, at: firstGrain) }
        assertRejected(try openAndReadAll(lbaOther), path: lbaOther, mentioning: "marker for LBA 128")
        // A capacity smaller than the stored grains: the last grain table lists grains past it.
        let shrunk = try variant("capacity.vmdk") { b in
            for at in [12, footerAt + 12] { b.putLE64(4 << 11, at: at) }   // 4 MiB in sectors
            if let line = self.find(Array("RDONLY 131072 ".utf8), in: b) {
                b.replaceSubrange(line..<line + 14, with: Array("RDONLY 8192   ".utf8))
            }
        }
        assertRejected(try openAndReadAll(shrunk), path: shrunk, mentioning: "is beyond the capacity")

        let badDeflate = try variant("deflate.vmdk") { b in
            for i in 0..<64 { b[firstGrain + 12 + 2 + i] ^= 0xA5 }
        }
        assertRejected(try openAndReadAll(badDeflate), path: badDeflate, mentioning: "decompress")
        let hugeSize = try variant("size.vmdk") { $0.putLE32(0xFFFF_FF00, at: firstGrain + 8) }
        assertRejected(try openAndReadAll(hugeSize), path: hugeSize, mentioning: "compressed size")
        let noFooter = try variant("footer.vmdk") { $0[footerAt - 512 + 12] = 7 }
        assertRejected(try openAndReadAll(noFooter), path: noFooter, mentioning: "footer")
        let grainSize = try variant("grainsize.vmdk") { b in for at in [20, footerAt + 20] { b.putLE64(100, at: at) } }
        assertRejected(try openAndReadAll(grainSize), path: grainSize, mentioning: "grain size")

        // The unmodified file passes the same reading.
        XCTAssertNoThrow(try openAndReadAll(good))
    }

    /// Random byte flips on a small image: the reader must throw or succeed, never trap.
    func testMutatedImagesNeverTrap() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("small.raw").path
        try makeRaw(src, size: 4 << 20, chunks: [(0, 70_000), (3 << 20, 5_000)])
        let ours = dir.appendingPathComponent("small.vmdk").path
        try TestSupport.convert(src, to: ours, format: .vmdk)
        let qemuStream = dir.appendingPathComponent("small-qemu.vmdk").path
        try TestSupport.run("qemu-img", ["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", src, qemuStream])
        let qemuSparse = dir.appendingPathComponent("small-sparse.vmdk").path
        try TestSupport.run("qemu-img", ["convert", "-f", "raw", "-O", "vmdk", src, qemuSparse])
        let seeds = try [ours, qemuStream, qemuSparse].map { try Array(Data(contentsOf: URL(fileURLWithPath: $0))) }
        let iterations = Int(ProcessInfo.processInfo.environment["CVM_VMDK_FUZZ_ITERATIONS"] ?? "") ?? 1500
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Int(truncatingIfNeeded: state >> 33)
        }
        var opened = 0
        for i in 0..<iterations {
            let original = seeds[i % seeds.count]
            // Bias mutations towards the metadata: header, descriptor, first grain, tail.
            let hot = [0..<96, 512..<900, 65_536..<65_600, (original.count - 4096)..<original.count]
            var bytes = original
            for _ in 0..<(1 + next() % 4) {
                let region = hot[next() % hot.count]
                bytes[region.lowerBound + next() % region.count] = UInt8(truncatingIfNeeded: next())
            }
            let source = MemoryByteSource(bytes, name: "mutant.vmdk")
            guard let reader = try? VMDKStreamReader(source: source) else { continue }
            opened += 1
            guard let ranges = try? reader.storedRanges() else { continue }
            for range in ranges.prefix(8) {
                let n = Int(min(range.upperBound - range.lowerBound, 1 << 20))
                _ = try? reader.bytes(count: n, at: range.lowerBound)
            }
        }
        XCTAssertGreaterThan(opened, iterations / 10)
    }

    // MARK: throughput (printed, not asserted)

    func testThroughputSanity() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("mixed.raw").path
        let mib = 1 << 20
        var chunks: [(UInt64, Int)] = []
        for i in 0..<48 { chunks.append((UInt64(i) * 2 * UInt64(mib), mib)) }   // 48 MiB of data in 96 MiB
        try makeRaw(src, size: 96 << 20, chunks: chunks, compressible: true)
        let out = dir.appendingPathComponent("mixed.vmdk").path
        let t0 = ProgressReporter.now()
        try TestSupport.convert(src, to: out, format: .vmdk)
        let t1 = ProgressReporter.now()
        let back = dir.appendingPathComponent("back.raw").path
        try TestSupport.convert(out, to: back, format: .raw)
        let t2 = ProgressReporter.now()
        XCTAssertEqual(try TestSupport.sha256(back), try TestSupport.sha256(src))
        var st = stat()
        _ = stat(out, &st)
        print(String(format: "VMDK throughput: raw→vmdk %.0f MiB/s of data (%.2f s, ratio %.2f), vmdk→raw %.0f MiB/s (%.2f s), %d cores",
                     48 / (t1 - t0), t1 - t0, Double(st.st_size) / Double(48 * mib), 48 / (t2 - t1), t2 - t1,
                     SystemInfo.activeProcessorCount))
    }

    /// `CVM_VMDK_BENCH=/path/disk.raw swift test -c release --filter VMDKTests/testBenchmarkFile`
    /// times raw→VMDK→raw on a real image (skipped without the variable).
    func testBenchmarkFile() throws {
        guard let src = ProcessInfo.processInfo.environment["CVM_VMDK_BENCH"] else {
            throw XCTSkip("set CVM_VMDK_BENCH to a raw disk image to time it")
        }
        let dir = try TestSupport.tempDir(self)
        let out = dir.appendingPathComponent("bench.vmdk").path
        let back = dir.appendingPathComponent("bench.raw").path
        func cpuSeconds() -> Double {
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        }
        let (t0, c0) = (ProgressReporter.now(), cpuSeconds())
        let stats = try TestSupport.convert(src, to: out, format: .vmdk)
        let (t1, c1) = (ProgressReporter.now(), cpuSeconds())
        try TestSupport.convert(out, to: back, format: .raw)
        let (t2, c2) = (ProgressReporter.now(), cpuSeconds())
        var st = stat()
        _ = stat(out, &st)
        print(String(format: "VMDK bench: %@ data %.0f MiB → %.0f MiB; raw→vmdk %.2f s (cpu %.2f s), vmdk→raw %.2f s (cpu %.2f s)",
                     src, Double(stats.dataBytes) / 1048576, Double(st.st_size) / 1048576, t1 - t0, c1 - c0, t2 - t1, c2 - c1))
        try TestSupport.assertSameContent(src, "raw", out, "vmdk")
    }

    // MARK: helpers

    private func qemuInfo(_ path: String) throws -> [String: Any] {
        let r = try TestSupport.run("qemu-img", ["info", "--output=json", path])
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    }

    /// A sparse raw file of `size` bytes with data chunks (offset, length).
    private func makeRaw(_ path: String, size: UInt64, chunks: [(UInt64, Int)], compressible: Bool = false) throws {
        FileManager.default.createFile(atPath: path, contents: nil)
        guard truncate(path, off_t(size)) == 0 else { throw CVMError.io("truncate \(path)") }
        for (i, (offset, count)) in chunks.enumerated() {
            let bytes = compressible && i % 2 == 0
                ? TestSupport.compressibleBytes(count: count, seed: UInt64(i + 1))
                : TestSupport.pseudoRandomBytes(count: count, seed: UInt64(i + 1))
            try TestSupport.writeBytes(bytes, to: path, at: offset)
        }
    }

    /// A small image of ours: data in the first grain and a few more spots.
    private func makeOurVMDK(_ dir: URL) throws -> String {
        let src = dir.appendingPathComponent("base.raw").path
        try makeRaw(src, size: 64 << 20, chunks: [(0, 20_000), (5 << 20, 200_000), (40 << 20, 70_000)])
        let out = dir.appendingPathComponent("base.vmdk").path
        try TestSupport.convert(src, to: out, format: .vmdk)
        return out
    }

    private func write(_ bytes: [UInt8], _ dir: URL, _ name: String) throws -> String {
        let path = dir.appendingPathComponent(name).path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    private func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if Array(haystack[i..<i + needle.count]) == needle { return i }
        }
        return nil
    }

    private func assertRejected(_ body: @autoclosure () throws -> Any, path: String, mentioning text: String,
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard let e = error as? CVMError else { return XCTFail("not a CVMError: \(error)", file: file, line: line) }
            XCTAssertTrue(e.message.hasPrefix(path + ":"), "message should start with the file: \(e.message)", file: file, line: line)
            XCTAssertTrue(e.message.contains(text), "message should mention \"\(text)\": \(e.message)", file: file, line: line)
            XCTAssertFalse(e.message.contains("\n"), "one line: \(e.message)", file: file, line: line)
        }
    }
}
