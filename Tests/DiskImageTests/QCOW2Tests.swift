import Foundation
import XCTest
@testable import DiskImage
import CVMSupport

final class QCOW2Tests: XCTestCase {
    let mib: UInt64 = 1 << 20

    // MARK: helpers

    /// A GPT test disk at `dir/disk.raw`.
    func makeSource(in dir: URL, size: UInt64 = 64 << 20) throws -> String {
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src, size: size)
        return src
    }

    /// Converts `image` to raw with our engine and checks it against qemu's view of the image.
    @discardableResult
    func assertConvertsLikeQemu(_ image: String, in dir: URL, file: StaticString = #filePath, line: UInt = #line) throws -> DiskConverter.Stats {
        let back = dir.appendingPathComponent(URL(fileURLWithPath: image).lastPathComponent + ".back.raw").path
        let stats = try TestSupport.convert(image, to: back, format: .raw)
        try TestSupport.assertSameContent(image, "qcow2", back, "raw", file: file, line: line)
        return stats
    }

    func qemuImg(_ args: [String]) throws { try TestSupport.run("qemu-img", args) }
    func qemuIO(_ image: String, _ commands: [String]) throws {
        try TestSupport.run("qemu-io", ["-f", "qcow2"] + commands.flatMap { ["-c", $0] } + [image])
    }

    func assertOpenFails(_ path: String, kind: CVMError.Kind = .invalidInput, saying fragment: String,
                         file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try DiskImageFile.open(path), file: file, line: line) { error in
            guard let e = error as? CVMError else {
                return XCTFail("not a CVMError: \(error)", file: file, line: line)
            }
            XCTAssertEqual(e.kind, kind, e.message, file: file, line: line)
            XCTAssertTrue(e.message.hasPrefix(path + ":"), "message must name the file: \(e.message)", file: file, line: line)
            XCTAssertTrue(e.message.contains(fragment), "expected '\(fragment)' in: \(e.message)", file: file, line: line)
            XCTAssertFalse(e.message.contains("\n"), "one line: \(e.message)", file: file, line: line)
        }
    }

    /// A copy of `src` with `bytes` written at `offset`.
    func corruptCopy(of src: String, named name: String, in dir: URL, at offset: Int, bytes: [UInt8]) throws -> String {
        var content = [UInt8](try Data(contentsOf: URL(fileURLWithPath: src)))
        content.replaceSubrange(offset..<offset + bytes.count, with: bytes)
        let path = dir.appendingPathComponent(name).path
        try Data(content).write(to: URL(fileURLWithPath: path))
        return path
    }

    func be32(_ v: UInt32) -> [UInt8] { var b = [UInt8](repeating: 0, count: 4); b.putBE32(v, at: 0); return b }
    func be64(_ v: UInt64) -> [UInt8] { var b = [UInt8](repeating: 0, count: 8); b.putBE64(v, at: 0); return b }

    // MARK: reading qemu-made images

    func testPlainVersion3() throws {
        let dir = try TestSupport.tempDir(self)
        let src = try makeSource(in: dir)
        let image = dir.appendingPathComponent("v3.qcow2").path
        try qemuImg(["convert", "-f", "raw", "-O", "qcow2", src, image])
        let reader = try DiskImageFile.open(image)
        XCTAssertEqual(reader.format, .qcow2)
        XCTAssertEqual(reader.virtualSize, 64 * mib)
        XCTAssertEqual((reader as? QCOW2Reader)?.header.version, 3)
        let stats = try assertConvertsLikeQemu(image, in: dir)
        XCTAssertLessThan(stats.bytesRead, 50 * mib, "unallocated clusters must be skipped")
    }

    func testVersion2() throws {
        let dir = try TestSupport.tempDir(self)
        let src = try makeSource(in: dir)
        let image = dir.appendingPathComponent("v2.qcow2").path
        try qemuImg(["convert", "-f", "raw", "-O", "qcow2", "-o", "compat=0.10", src, image])
        let reader = try DiskImageFile.open(image)
        XCTAssertEqual((reader as? QCOW2Reader)?.header.version, 2)
        try assertConvertsLikeQemu(image, in: dir)
    }

    func testCompressedClusters() throws {
        let dir = try TestSupport.tempDir(self)
        let src = try makeSource(in: dir)
        let image = dir.appendingPathComponent("compressed.qcow2").path
        try qemuImg(["convert", "-c", "-f", "raw", "-O", "qcow2", src, image])
        try assertConvertsLikeQemu(image, in: dir)
    }

    func testSmallClustersAndUnalignedSize() throws {
        let dir = try TestSupport.tempDir(self)
        let src = try makeSource(in: dir, size: 64 * mib + 4096)
        let image = dir.appendingPathComponent("small-clusters.qcow2").path
        try qemuImg(["convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", src, image])
        XCTAssertEqual(try DiskImageFile.open(image).virtualSize, 64 * mib + 4096)
        try assertConvertsLikeQemu(image, in: dir)
    }

    func testStoredRangesSkipUnallocatedClusters() throws {
        let dir = try TestSupport.tempDir(self)
        let image = dir.appendingPathComponent("sparse.qcow2").path
        try qemuImg(["create", "-f", "qcow2", image, "4G"])
        try qemuIO(image, ["write -P 0x5a 0 64k", "write -P 0x33 1G 1M", "write -P 0x77 4095M 1M"])
        let reader = try DiskImageFile.open(image)
        XCTAssertEqual(reader.virtualSize, 4 << 30)
        let ranges = try reader.storedRanges()
        XCTAssertEqual(ranges, [0..<mib, (1 << 30)..<(1 << 30) + mib, (4 << 30) - mib..<(4 << 30)])
        XCTAssertEqual(try reader.bytes(count: 4, at: 1 << 30), [0x33, 0x33, 0x33, 0x33])
        XCTAssertEqual(try reader.bytes(count: 4, at: 2 << 30), [0, 0, 0, 0])
        XCTAssertThrowsError(try reader.bytes(count: 1, at: 4 << 30))
        try assertConvertsLikeQemu(image, in: dir)
    }

    func testZeroFlagClustersReadAsZeros() throws {
        let dir = try TestSupport.tempDir(self)
        let image = dir.appendingPathComponent("zeros.qcow2").path
        try qemuImg(["create", "-f", "qcow2", image, "8M"])
        // Data everywhere, then zero-flagged clusters on top (allocated: the offset stays).
        try qemuIO(image, ["write -P 0xab 0 4M", "write -z 1M 128k", "write -z 3M 1M"])
        let reader = try DiskImageFile.open(image)
        XCTAssertEqual(try reader.bytes(count: 2, at: mib - 1), [0xab, 0])
        XCTAssertEqual(try reader.bytes(count: 1, at: mib + 128 * 1024), [0xab])
        XCTAssertEqual(try reader.bytes(count: Int(mib), at: 3 * mib), [UInt8](repeating: 0, count: Int(mib)))
        try assertConvertsLikeQemu(image, in: dir)
    }

    // MARK: backing files

    func testQcow2BackingFile() throws {
        let dir = try TestSupport.tempDir(self)
        let src = try makeSource(in: dir)
        let base = dir.appendingPathComponent("base.qcow2").path
        try qemuImg(["convert", "-f", "raw", "-O", "qcow2", src, base])
        let top = dir.appendingPathComponent("top.qcow2").path
        // Relative backing name: resolved against the top image's folder.
        try qemuImg(["create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top])
        try qemuIO(top, ["write -P 0xab 5M 1M", "write -z 9M 1M"])
        let reader = try DiskImageFile.open(top)
        XCTAssertTrue((reader as? QCOW2Reader)?.backing is QCOW2Reader)
        XCTAssertEqual(try reader.bytes(count: 1, at: 5 * mib), [0xab])
        XCTAssertEqual(try reader.bytes(count: 16, at: 9 * mib), [UInt8](repeating: 0, count: 16), "zero flag hides backing data")
        // Stored ranges: the backing file's data plus the overlay.
        let baseRanges = try DiskImageFile.open(base).storedRanges()
        let ranges = try reader.storedRanges()
        XCTAssertTrue(ranges.contains { $0.contains(5 * mib) })
        for r in baseRanges {
            XCTAssertTrue(ranges.contains { $0.lowerBound <= r.lowerBound && r.upperBound <= $0.upperBound })
        }
        try assertConvertsLikeQemu(top, in: dir)
    }

    func testRawBackingFile() throws {
        let dir = try TestSupport.tempDir(self)
        let src = try makeSource(in: dir)
        let top = dir.appendingPathComponent("top.qcow2").path
        try qemuImg(["create", "-f", "qcow2", "-b", src, "-F", "raw", top])
        try qemuIO(top, ["write -P 0xab 5M 1M"])
        let reader = try DiskImageFile.open(top)
        XCTAssertTrue((reader as? QCOW2Reader)?.backing is RawReader)
        XCTAssertLessThan(try reader.allocatedBytes(), 50 * mib, "holes of the raw backing file stay unstored")
        try assertConvertsLikeQemu(top, in: dir)
    }

    func testBackingChainIsLimitedAndLoopsAreRefused() throws {
        let dir = try TestSupport.tempDir(self)
        // a → b → a
        let a = dir.appendingPathComponent("a.qcow2").path
        let b = dir.appendingPathComponent("b.qcow2").path
        try qemuImg(["create", "-f", "qcow2", "-u", "-b", "b.qcow2", "-F", "qcow2", a, "1M"])
        try qemuImg(["create", "-f", "qcow2", "-u", "-b", "a.qcow2", "-F", "qcow2", b, "1M"])
        assertOpenFails(a, saying: "loop")

        // c0 ← c1 ← … ← c9: ten files, deeper than 8 backing files.
        var previous = dir.appendingPathComponent("c0.qcow2").path
        try qemuImg(["create", "-f", "qcow2", previous, "1M"])
        for i in 1...9 {
            let next = dir.appendingPathComponent("c\(i).qcow2").path
            try qemuImg(["create", "-f", "qcow2", "-u", "-b", "c\(i - 1).qcow2", "-F", "qcow2", next, "1M"])
            previous = next
        }
        assertOpenFails(previous, saying: "deeper than 8")
        // Eight backing files are fine.
        XCTAssertNoThrow(try DiskImageFile.open(dir.appendingPathComponent("c8.qcow2").path))

        // A missing backing file names the image and the backing path.
        let orphan = dir.appendingPathComponent("orphan.qcow2").path
        try qemuImg(["create", "-f", "qcow2", "-u", "-b", "missing.raw", "-F", "raw", orphan, "1M"])
        assertOpenFails(orphan, kind: .io, saying: "missing.raw")
    }

    // MARK: damaged and unsupported input

    func testDamagedHeadersAreRejected() throws {
        let dir = try TestSupport.tempDir(self)
        let src = try makeSource(in: dir)
        let image = dir.appendingPathComponent("good.qcow2").path
        try qemuImg(["convert", "-f", "raw", "-O", "qcow2", src, image])
        let content = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))

        assertOpenFails(try corruptCopy(of: image, named: "version.qcow2", in: dir, at: 4, bytes: be32(9)),
                        kind: .unsupported, saying: "version 9")
        assertOpenFails(try corruptCopy(of: image, named: "v1.qcow2", in: dir, at: 4, bytes: be32(1)),
                        kind: .unsupported, saying: "version 1")
        assertOpenFails(try corruptCopy(of: image, named: "cluster-bits.qcow2", in: dir, at: 20, bytes: be32(40)),
                        saying: "cluster_bits 40")
        assertOpenFails(try corruptCopy(of: image, named: "encrypted.qcow2", in: dir, at: 32, bytes: be32(2)),
                        kind: .unsupported, saying: "encrypted")
        assertOpenFails(try corruptCopy(of: image, named: "l1-beyond.qcow2", in: dir, at: 40, bytes: be64(1 << 40)),
                        saying: "L1 table")
        assertOpenFails(try corruptCopy(of: image, named: "l1-small.qcow2", in: dir, at: 36, bytes: be32(0)),
                        saying: "L1 table has 0 entries")
        assertOpenFails(try corruptCopy(of: image, named: "size.qcow2", in: dir, at: 24, bytes: be64(UInt64.max)),
                        saying: "L1 table")
        var features = content.be64(72)
        features |= 1 << 2
        assertOpenFails(try corruptCopy(of: image, named: "external.qcow2", in: dir, at: 72, bytes: be64(features)),
                        kind: .unsupported, saying: "external data file")
        assertOpenFails(try corruptCopy(of: image, named: "unknown-feature.qcow2", in: dir, at: 72, bytes: be64(1 << 40)),
                        kind: .unsupported, saying: "unknown incompatible feature")
        assertOpenFails(try corruptCopy(of: image, named: "header-length.qcow2", in: dir, at: 100, bytes: be32(3)),
                        saying: "header_length")
        assertOpenFails(try corruptCopy(of: image, named: "backing-name.qcow2", in: dir, at: 8, bytes: be64(1 << 30) + be32(20)),
                        saying: "backing file name")
        // A truncated header: the content is no longer qcow2, the name says it should be.
        let cut = dir.appendingPathComponent("cut.qcow2").path
        try Data(content[0..<40]).write(to: URL(fileURLWithPath: cut))
        assertOpenFails(cut, saying: "truncated")
    }

    func testDamagedTablesAreRejected() throws {
        let dir = try TestSupport.tempDir(self)
        let src = try makeSource(in: dir)
        let image = dir.appendingPathComponent("good.qcow2").path
        try qemuImg(["convert", "-f", "raw", "-O", "qcow2", src, image])
        let content = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
        let l1Offset = Int(content.be64(40))
        let l2Offset = Int(content.be64(l1Offset) & QCOW2ClusterMap.offsetMask)
        XCTAssertGreaterThan(l2Offset, 0)

        // L1 entry pointing past the end of the file.
        let badL1 = try corruptCopy(of: image, named: "bad-l1.qcow2", in: dir, at: l1Offset,
                                    bytes: be64((1 << 63) | (1 << 40)))
        assertReadFails(badL1, saying: "L1 entry 0")

        // An allocated L2 entry pointing past the end of the file.
        var slot = 0
        while content.be64(l2Offset + slot * 8) == 0 { slot += 1 }
        let badL2 = try corruptCopy(of: image, named: "bad-l2.qcow2", in: dir, at: l2Offset + slot * 8,
                                    bytes: be64((1 << 63) | (1 << 44)))
        assertReadFails(badL2, saying: "L2 entry for virtual offset \(slot * 65536)")
    }

    /// The image opens (tables are read lazily) but listing or reading it fails naming the file.
    func assertReadFails(_ path: String, saying fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        let checks: [(String, (DiskReader) throws -> Void)] = [
            ("storedRanges", { _ = try $0.storedRanges() }),
            ("read", { _ = try $0.bytes(count: 65536, at: 0) }),
        ]
        for (what, check) in checks {
            XCTAssertThrowsError(try check(try DiskImageFile.open(path)), what, file: file, line: line) { error in
                let message = (error as? CVMError)?.message ?? "\(error)"
                XCTAssertTrue(message.hasPrefix(path + ":") && message.contains(fragment),
                              "\(what): expected '\(fragment)' naming the file in: \(message)", file: file, line: line)
            }
        }
        let back = URL(fileURLWithPath: path).deletingPathExtension().path + ".raw"
        XCTAssertThrowsError(try TestSupport.convert(path, to: back, format: .raw), file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: back), "no partial output", file: file, line: line)
    }
}
