import Foundation
import XCTest
@testable import DiskImage
import CVMSupport

final class GCPTarGzTests: XCTestCase {
    private let gib: UInt64 = 1 << 30
    private let mib: UInt64 = 1 << 20

    // MARK: writing

    func testWriteGPTDiskIsOneGzipMemberHoldingDiskRawRoundedToGiB() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("src.raw").path
        try TestSupport.makeGPTDisk(at: src)
        let tgz = dir.appendingPathComponent("image.tar.gz").path
        try TestSupport.convert(src, to: tgz, format: .tarGz)

        try TestSupport.run("gzip", ["-t", tgz])
        // Extract with a long listing (what tar -tv prints), so the archive is read once.
        let out = dir.appendingPathComponent("x")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let listing = try TestSupport.run("tar", ["-xvvzf", tgz, "-C", out.path]).stdout
        let lines = listing.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, listing)
        XCTAssertTrue(lines.first?.hasSuffix(" disk.raw") ?? false, listing)
        XCTAssertTrue(listing.contains(" \(gib) "), "size must be rounded up to 1 GiB: \(listing)")
        XCTAssertTrue(listing.contains("root/root"), listing)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path), ["disk.raw"])
        let extracted = out.appendingPathComponent("disk.raw").path
        XCTAssertEqual(try FileDescriptor.openForReading(extracted).size(), gib)
        try TestSupport.assertSameContent(src, "raw", extracted, "raw")

        let members = try gzipMemberReport(tgz)
        XCTAssertEqual(members.singleMember, true, "exactly one gzip member, nothing after it")
        XCTAssertEqual(members.tarBytes, DiskGeometry.roundUp(512 + gib + 1024, to: 10240))
        // Holes cost nearly nothing: far smaller than the data it holds plus 1 GiB of zeros.
        XCTAssertLessThan(try FileDescriptor.openForReading(tgz).size(), 8 << 20)
    }

    func testWriteIsReproducibleAndIndependentOfThreads() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("src.raw").path
        try TestSupport.makeGPTDisk(at: src, seed: 7)
        let a = dir.appendingPathComponent("a.tar.gz").path
        let b = dir.appendingPathComponent("b.tar.gz").path
        let c = dir.appendingPathComponent("c.tar.gz").path
        try TestSupport.convert(src, to: a, format: .tarGz, options: WriterOptions(timestamp: 1_700_000_000))
        try TestSupport.convert(src, to: b, format: .tarGz, options: WriterOptions(timestamp: 1_700_000_000))
        try TestSupport.convert(src, to: c, format: .tarGz, options: WriterOptions(threads: 1, timestamp: 1_700_000_000))
        XCTAssertEqual(try TestSupport.sha256(a), try TestSupport.sha256(b))
        XCTAssertEqual(try TestSupport.sha256(a), try TestSupport.sha256(c))
        // The timestamp lands in the tar header (and the gzip header).
        let listing = try TestSupport.run("tar", ["--utc", "-tvzf", a]).stdout
        XCTAssertTrue(listing.contains("2023-11-14 22:13"), listing)
    }

    func testWriteUnalignedSizeAndLevelsRoundTrip() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("odd.raw").path
        // 5 MiB + 4 KiB + 512: the last piece is partial and carries data up to the end.
        let size = 5 * mib + 4096 + 512
        _ = FileManager.default.createFile(atPath: src, contents: nil)
        XCTAssertEqual(truncate(src, off_t(size)), 0)
        try TestSupport.writeBytes(TestSupport.compressibleBytes(count: 2 * Int(mib) + 99, seed: 3), to: src, at: 0)
        try TestSupport.writeBytes(TestSupport.pseudoRandomBytes(count: 5000, seed: 4), to: src, at: size - 5000)
        for level in [1, 9] {
            let tgz = dir.appendingPathComponent("odd-\(level).tar.gz").path
            try TestSupport.convert(src, to: tgz, format: .tarGz, options: WriterOptions(compressionLevel: level))
            let back = dir.appendingPathComponent("back-\(level).raw").path
            try TestSupport.convert(tgz, to: back, format: .raw)
            XCTAssertEqual(try FileDescriptor.openForReading(back).size(), gib)
            try TestSupport.assertSameContent(src, "raw", back, "raw")
        }
    }

    func testLargeSparseDiskUsesBase256SizeAndStaysQuick() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("big.raw").path
        let size = 8 * gib + 3 * mib
        _ = FileManager.default.createFile(atPath: src, contents: nil)
        XCTAssertEqual(truncate(src, off_t(size)), 0)
        try TestSupport.writeBytes(TestSupport.pseudoRandomBytes(count: 2 * Int(mib), seed: 9), to: src, at: 0)
        try TestSupport.writeBytes(TestSupport.compressibleBytes(count: 3 * Int(mib), seed: 10), to: src, at: gib + 5 * mib)
        try TestSupport.writeBytes(TestSupport.pseudoRandomBytes(count: 4096, seed: 11), to: src, at: size - 4096)
        let tgz = dir.appendingPathComponent("big.tar.gz").path
        let start = ProgressReporter.now()
        try TestSupport.convert(src, to: tgz, format: .tarGz)
        let seconds = ProgressReporter.now() - start
        XCTAssertLessThan(seconds, 20, "zero chunks are reused, so 9 GiB of mostly zeros writes fast")

        // The header: GNU base-256 size (0x80 prefix) of 9 GiB; tar lists it from the first blocks.
        let head = try decompressedPrefix(tgz, count: 10240)
        XCTAssertEqual(head[124], 0x80)
        let headerTar = dir.appendingPathComponent("head.tar").path
        try Data(head).write(to: URL(fileURLWithPath: headerTar))
        let listing = try TestSupport.run("tar", ["-tvf", headerTar], allowFailure: true).stdout
        XCTAssertTrue(listing.contains(" \(9 * gib) ") && listing.contains("disk.raw"), listing)

        // Our reader sees the same disk; read a few places (forward, then backward).
        let reader = try DiskImageFile.open(tgz)
        XCTAssertEqual(reader.format, .gcpTarGz)
        XCTAssertEqual(reader.virtualSize, 9 * gib)
        let original = try DiskImageFile.open(src)
        // Ascending reads skip forward; the last one goes back and restarts the stream.
        for offset in [0, 1 * mib, gib + 5 * mib + 100, 4096] {
            XCTAssertEqual(try reader.bytes(count: 4096, at: offset), try original.bytes(count: 4096, at: offset), "offset \(offset)")
        }
    }

    // MARK: reading archives made by other tools

    func testReadsOldGNUSparseArchiveFromTar() throws {
        let dir = try TestSupport.tempDir(self)
        let raw = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: raw, seed: 3)
        let tgz = dir.appendingPathComponent("sparse.tar.gz").path
        try TestSupport.run("tar", ["--format=oldgnu", "-S", "-czf", tgz, "-C", dir.path, "disk.raw"])
        let reader = try DiskImageFile.open(tgz)
        XCTAssertEqual(reader.virtualSize, 64 << 20)
        let ranges = try reader.storedRanges()
        XCTAssertGreaterThan(ranges.count, 4, "enough pieces to need sparse extension blocks")
        XCTAssertLessThan(try reader.allocatedBytes(), 40 << 20)
        let back = dir.appendingPathComponent("back.raw").path
        try TestSupport.convert(tgz, to: back, format: .raw)
        try TestSupport.assertSameContent(raw, "raw", back, "raw")
    }

    func testReadsGNUArchiveCompressedByPigz() throws {
        let dir = try TestSupport.tempDir(self)
        let raw = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: raw, seed: 5)
        let tar = dir.appendingPathComponent("plain.tar").path
        try TestSupport.run("tar", ["--format=gnu", "-cf", tar, "-C", dir.path, "disk.raw"])
        try TestSupport.run("pigz", ["-k", "-6", tar])
        let tgz = tar + ".gz"
        let back = dir.appendingPathComponent("back.raw").path
        try TestSupport.convert(tgz, to: back, format: .raw)
        try TestSupport.assertSameContent(raw, "raw", back, "raw")

        // Reads in any order: backward reads restart the stream.
        let reader = try DiskImageFile.open(tgz)
        let original = try DiskImageFile.open(raw)
        for offset: UInt64 in [40 << 20, 9 << 20, 63 << 20, 0, 16 << 20] {
            XCTAssertEqual(try reader.bytes(count: 8192, at: offset), try original.bytes(count: 8192, at: offset))
        }
    }

    func testReadsConcatenatedGzipMembersAndPosixFormat() throws {
        let dir = try TestSupport.tempDir(self)
        let raw = dir.appendingPathComponent("disk.raw").path
        _ = FileManager.default.createFile(atPath: raw, contents: nil)
        XCTAssertEqual(truncate(raw, off_t(6 * mib)), 0)
        try TestSupport.writeBytes(TestSupport.compressibleBytes(count: 3 * Int(mib), seed: 8), to: raw, at: mib)
        let tar = dir.appendingPathComponent("posix.tar").path
        try TestSupport.run("tar", ["--format=posix", "--pax-option=comment=made-for-a-test", "-cf", tar, "-C", dir.path, "disk.raw"])
        // Split the tar at an odd place and gzip both halves: two members, one stream.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: tar))
        let cut = 2 * Int(mib) + 12345
        let partA = dir.appendingPathComponent("a").path, partB = dir.appendingPathComponent("b").path
        try bytes.prefix(cut).write(to: URL(fileURLWithPath: partA))
        try bytes.dropFirst(cut).write(to: URL(fileURLWithPath: partB))
        try TestSupport.run("gzip", ["-n", partA, partB])
        var joined = try Data(contentsOf: URL(fileURLWithPath: partA + ".gz"))
        joined.append(try Data(contentsOf: URL(fileURLWithPath: partB + ".gz")))
        let tgz = dir.appendingPathComponent("two-members.tar.gz").path
        try joined.write(to: URL(fileURLWithPath: tgz))
        let back = dir.appendingPathComponent("back.raw").path
        try TestSupport.convert(tgz, to: back, format: .raw)
        try TestSupport.assertSameContent(raw, "raw", back, "raw")
    }

    func testReadsPAXSparseArchivesOfEveryVersion() throws {
        let dir = try TestSupport.tempDir(self)
        let raw = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: raw, seed: 4)
        for version in ["1.0", "0.1", "0.0"] {
            let tgz = dir.appendingPathComponent("pax-\(version).tar.gz").path
            try TestSupport.run("tar", ["--format=posix", "-S", "--sparse-version=\(version)", "-czf", tgz, "-C", dir.path, "disk.raw"])
            let reader = try DiskImageFile.open(tgz)
            XCTAssertEqual(reader.virtualSize, 64 << 20, version)
            XCTAssertLessThan(try reader.allocatedBytes(), 40 << 20, version)
            let back = dir.appendingPathComponent("back-\(version).raw").path
            try TestSupport.convert(tgz, to: back, format: .raw)
            try TestSupport.assertSameContent(raw, "raw", back, "raw")
        }
    }

    func testLongNamesFromGNUAndPAXHeaders() throws {
        let dir = try TestSupport.tempDir(self)
        try smallDisk(in: dir)
        // "./" repeated past the 100-byte name field: GNU writes an 'L' header, POSIX a PAX path.
        let longSameName = String(repeating: "./", count: 60) + "disk.raw"
        let deep = String(repeating: "directory-", count: 12)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent(deep), withIntermediateDirectories: true)
        try smallDisk(in: dir.appendingPathComponent(deep), name: "root.img")
        for format in ["gnu", "posix"] {
            let good = dir.appendingPathComponent("long-\(format).tar.gz").path
            try TestSupport.run("tar", ["--format=\(format)", "-czf", good, "-C", dir.path, longSameName])
            let back = dir.appendingPathComponent("back-\(format).raw").path
            try TestSupport.convert(good, to: back, format: .raw)
            try TestSupport.assertSameContent(dir.appendingPathComponent("disk.raw").path, "raw", back, "raw")

            let wrong = dir.appendingPathComponent("wrong-\(format).tar.gz").path
            try TestSupport.run("tar", ["--format=\(format)", "-czf", wrong, "-C", dir.path, deep + "/root.img"])
            try assertOpenFails(wrong, contains: "expected exactly one member disk.raw, found \(deep)/root.img")
        }
    }

    func testReadsOwnOutputBack() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("src.raw").path
        try TestSupport.makeGPTDisk(at: src, seed: 11)
        let tgz = dir.appendingPathComponent("image.tar.gz").path
        try TestSupport.convert(src, to: tgz, format: .tarGz)
        let reader = try DiskImageFile.open(tgz)
        XCTAssertEqual(reader.format, .gcpTarGz)
        XCTAssertTrue(reader.isSequential)
        XCTAssertEqual(reader.virtualSize, gib)
        let back = dir.appendingPathComponent("back.raw").path
        try TestSupport.convert(tgz, to: back, format: .raw)
        try TestSupport.assertSameContent(src, "raw", back, "raw")
    }

    func testReadsLargeOldGNUSparseArchive() throws {
        let dir = try TestSupport.tempDir(self)
        let raw = dir.appendingPathComponent("disk.raw").path
        let size = 9 * gib
        _ = FileManager.default.createFile(atPath: raw, contents: nil)
        XCTAssertEqual(truncate(raw, off_t(size)), 0)
        try TestSupport.writeBytes(TestSupport.pseudoRandomBytes(count: 100_000, seed: 12), to: raw, at: 4096)
        try TestSupport.writeBytes(TestSupport.pseudoRandomBytes(count: 100_000, seed: 13), to: raw, at: 8 * gib + 12345)
        let tgz = dir.appendingPathComponent("big-sparse.tar.gz").path
        try TestSupport.run("tar", ["--format=oldgnu", "-S", "-czf", tgz, "-C", dir.path, "disk.raw"])
        let reader = try DiskImageFile.open(tgz)
        XCTAssertEqual(reader.virtualSize, size, "real size from a base-256 field")
        XCTAssertLessThan(try reader.allocatedBytes(), 1 << 20)
        let back = dir.appendingPathComponent("back.raw").path
        try TestSupport.convert(tgz, to: back, format: .raw)
        try TestSupport.assertSameContent(raw, "raw", back, "raw")
    }

    // MARK: errors

    func testSecondMemberIsRefused() throws {
        let dir = try TestSupport.tempDir(self)
        try smallDisk(in: dir)
        try Data("hello".utf8).write(to: dir.appendingPathComponent("notes.txt"))
        let tgz = dir.appendingPathComponent("two.tar.gz").path
        try TestSupport.run("tar", ["--format=gnu", "-czf", tgz, "-C", dir.path, "disk.raw", "notes.txt"])
        try assertConvertFails(tgz, dir: dir, contains: "tar holds another member notes.txt after disk.raw; GCP images hold exactly one")
        // The same with a second member whose name needs a GNU long-name header.
        let longName = String(repeating: "n", count: 150) + ".txt"
        try Data("hello".utf8).write(to: dir.appendingPathComponent(longName))
        let long = dir.appendingPathComponent("two-long.tar.gz").path
        try TestSupport.run("tar", ["--format=gnu", "-czf", long, "-C", dir.path, "disk.raw", longName])
        try assertConvertFails(long, dir: dir, contains: "tar holds another member \(longName) after disk.raw")
    }

    func testWrongMemberNameIsRefused() throws {
        let dir = try TestSupport.tempDir(self)
        try smallDisk(in: dir, name: "root.img")
        let tgz = dir.appendingPathComponent("wrong.tar.gz").path
        try TestSupport.run("tar", ["-czf", tgz, "-C", dir.path, "root.img"])
        try assertOpenFails(tgz, contains: "expected exactly one member disk.raw, found root.img")
    }

    func testTruncatedGzipIsRefused() throws {
        let dir = try TestSupport.tempDir(self)
        try smallDisk(in: dir)
        let tgz = dir.appendingPathComponent("cut.tar.gz").path
        try TestSupport.run("tar", ["-czf", tgz, "-C", dir.path, "disk.raw"])
        let full = try Data(contentsOf: URL(fileURLWithPath: tgz))
        let cut = full.count / 2
        try full.prefix(cut).write(to: URL(fileURLWithPath: tgz))
        try assertConvertFails(tgz, dir: dir, contains: "gzip stream ends early at compressed byte \(cut): the file is truncated")
    }

    func testCorruptTarHeaderChecksumIsRefused() throws {
        let dir = try TestSupport.tempDir(self)
        try smallDisk(in: dir)
        let tar = dir.appendingPathComponent("bad.tar").path
        try TestSupport.run("tar", ["--format=gnu", "-cf", tar, "-C", dir.path, "disk.raw"])
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: tar)))
        bytes[101] ^= 0x01  // inside the mode field
        try Data(bytes).write(to: URL(fileURLWithPath: tar))
        try TestSupport.run("gzip", ["-n", tar])
        try assertOpenFails(tar + ".gz", contains: "tar header at offset 0 has a bad checksum")
    }

    func testGzipWithoutTarIsRefused() throws {
        let dir = try TestSupport.tempDir(self)
        let file = dir.appendingPathComponent("random.bin").path
        try Data(TestSupport.pseudoRandomBytes(count: 100_000, seed: 2)).write(to: URL(fileURLWithPath: file))
        try TestSupport.run("gzip", ["-n", file])
        try assertOpenFails(file + ".gz", contains: "the gzip data is not a tar archive")
    }

    func testCorruptGzipCRCIsRefused() throws {
        let dir = try TestSupport.tempDir(self)
        try smallDisk(in: dir)
        let tgz = dir.appendingPathComponent("crc.tar.gz").path
        try TestSupport.run("tar", ["-czf", tgz, "-C", dir.path, "disk.raw"])
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: tgz)))
        bytes[bytes.count - 8] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: tgz))
        try assertConvertFails(tgz, dir: dir, contains: "incorrect data check")
        // The length (ISIZE) is checked too.
        bytes[bytes.count - 8] ^= 0xFF
        bytes[bytes.count - 1] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: tgz))
        try assertConvertFails(tgz, dir: dir, contains: "incorrect length check")
    }

    // MARK: in-memory parsing (no tools)

    func testNumericFieldsOctalAndBase256() {
        var block = [UInt8](repeating: 0, count: 512)
        TarBlock.putNumber(8 * gib - 1, into: &block, at: TarBlock.sizeRange)
        XCTAssertEqual(block[124], UInt8(ascii: "7"))
        XCTAssertEqual(TarBlock.parseNumber(block, TarBlock.sizeRange), 8 * gib - 1)
        TarBlock.putNumber(8 * gib, into: &block, at: TarBlock.sizeRange)
        XCTAssertEqual(block[124], 0x80)
        XCTAssertEqual(TarBlock.parseNumber(block, TarBlock.sizeRange), 8 * gib)
        block[124] = 0xFF  // negative
        XCTAssertNil(TarBlock.parseNumber(block, TarBlock.sizeRange))
        let text = Array("  123 \0\0\0\0\0\0".utf8)
        XCTAssertEqual(TarBlock.parseNumber(text, 0..<12), 0o123)
        XCTAssertNil(TarBlock.parseNumber(Array("12x4\0".utf8), 0..<5))
        XCTAssertNil(TarBlock.parseNumber(Array("\0\0\0\0".utf8), 0..<4))
        let header = TarBlock.gnuRegularFileHeader(name: "disk.raw", size: gib, mtime: 0)
        XCTAssertEqual(TarBlock.verifyChecksum(header), .valid)
    }

    func testMutatedArchivesNeverTrap() throws {
        // A small archive of our own, then single-byte mutations of its compressed bytes and of
        // the tar header inside: every outcome is a value or a CVMError.
        let header = TarBlock.gnuRegularFileHeader(name: "disk.raw", size: 4096, mtime: 0)
        var tar = header + TestSupport.compressibleBytes(count: 4096, seed: 1) + [UInt8](repeating: 0, count: 1024)
        var rng = TestSupport.pseudoRandomBytes(count: 4000, seed: 99)
        for i in 0..<600 {
            var mutated = tar
            let at = Int(rng[i % rng.count]) * 2 + (i % 2)  // mostly the header
            mutated[at % mutated.count] ^= rng[(i * 7) % rng.count] | 1
            let gz = try gzipInMemory(mutated)
            exercise(MemoryByteSource(gz, name: "mutated-\(i).tar.gz"))
            var damaged = try gzipInMemory(tar)
            damaged[(i * 13) % damaged.count] ^= 0x5A
            exercise(MemoryByteSource(damaged, name: "damaged-\(i).tar.gz"))
        }
        tar.removeAll(); rng.removeAll()
    }

    func testMutatedSparseHeadersNeverTrap() throws {
        // Sparse maps long enough for extension blocks (old GNU) and a PAX 1.0 map, mutated in
        // their header blocks: every outcome is a value or a CVMError naming the file.
        let dir = try TestSupport.tempDir(self)
        let raw = dir.appendingPathComponent("disk.raw").path
        _ = FileManager.default.createFile(atPath: raw, contents: nil)
        XCTAssertEqual(truncate(raw, off_t(4 * mib)), 0)
        for i in 0..<30 {
            try TestSupport.writeBytes(TestSupport.pseudoRandomBytes(count: 4096, seed: UInt64(i + 20)), to: raw, at: UInt64(i) * 128 * 1024)
        }
        let rng = TestSupport.pseudoRandomBytes(count: 4096, seed: 77)
        for format in [["--format=oldgnu"], ["--format=posix", "--sparse-version=1.0"]] {
            let tar = dir.appendingPathComponent("s.tar").path
            try TestSupport.run("tar", format + ["-S", "-cf", tar, "-C", dir.path, "disk.raw"])
            let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: tar)))
            // The unmutated archive reads back.
            let clean = try GCPTarGzReader(source: MemoryByteSource(try gzipInMemory(original), name: "clean.tar.gz"))
            XCTAssertEqual(try clean.storedRanges().count, 30)
            XCTAssertEqual(try clean.bytes(count: 4096, at: 29 * 128 * 1024), TestSupport.pseudoRandomBytes(count: 4096, seed: 49))
            for i in 0..<300 {
                var mutated = original
                let at = (Int(rng[(2 * i) % rng.count]) << 3 | Int(rng[(2 * i + 1) % rng.count]) & 7) % 2048
                mutated[at] ^= rng[(i * 5) % rng.count] | 1
                exercise(MemoryByteSource(try gzipInMemory(mutated), name: "mutated-\(i).tar.gz"))
            }
        }
    }

    // MARK: helpers

    private func exercise(_ source: MemoryByteSource) {
        do {
            let reader = try GCPTarGzReader(source: source)
            let ranges = try reader.storedRanges()
            for r in ranges.prefix(4) {
                let n = Int(min(r.upperBound - r.lowerBound, 8192))
                _ = try reader.bytes(count: n, at: r.lowerBound)
                _ = try reader.bytes(count: n, at: r.lowerBound)
            }
            // The end of the last stored range: reaching the member's end checks the archive's end.
            if let last = ranges.last {
                let n = min(last.upperBound - last.lowerBound, 8192)
                _ = try reader.bytes(count: Int(n), at: last.upperBound - n)
            }
            if reader.virtualSize > 0, reader.virtualSize < 1 << 20 {
                _ = try reader.bytes(count: Int(reader.virtualSize), at: 0)
            }
        } catch let error as CVMError {
            XCTAssertTrue(error.message.hasPrefix(source.name), error.message)
        } catch {
            XCTFail("unexpected error type: \(error)")
        }
    }

    /// One gzip member built with the writer's chunk machinery (no tools, so it can run often).
    private func gzipInMemory(_ bytes: [UInt8]) throws -> [UInt8] {
        var out = GzipFraming.memberHeader(mtime: 0, level: 6)
        var body = [UInt8](repeating: 0, count: GzipFraming.outputCapacity(forChunkOf: bytes.count))
        let n = try bytes.withUnsafeBytes { data in
            try body.withUnsafeMutableBytes { try RawDeflater(level: 6).compress(data, into: $0) }
        }
        out += body.prefix(n) + GzipFraming.finalEmptyBlock
        out += GzipFraming.memberTrailer(crc: crc32(bytes), length: UInt64(bytes.count))
        return out
    }

    /// A 3 MiB disk with some data, named `name` in `dir`.
    private func smallDisk(in dir: URL, name: String = "disk.raw") throws {
        let path = dir.appendingPathComponent(name).path
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        XCTAssertEqual(truncate(path, off_t(3 * mib)), 0)
        try TestSupport.writeBytes(TestSupport.pseudoRandomBytes(count: Int(mib) + 3, seed: 6), to: path, at: 4096)
    }

    private func assertOpenFails(_ path: String, contains text: String, file: StaticString = #filePath, line: UInt = #line) throws {
        do {
            _ = try DiskImageFile.open(path)
            XCTFail("opening \(path) should fail", file: file, line: line)
        } catch let error as CVMError {
            XCTAssertTrue(error.message.hasPrefix(path), error.message, file: file, line: line)
            XCTAssertTrue(error.message.contains(text), error.message, file: file, line: line)
        }
    }

    private func assertConvertFails(_ path: String, dir: URL, contains text: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let out = dir.appendingPathComponent("out.raw").path
        do {
            try TestSupport.convert(path, to: out, format: .raw)
            XCTFail("converting \(path) should fail", file: file, line: line)
        } catch let error as CVMError {
            XCTAssertTrue(error.message.hasPrefix(path), error.message, file: file, line: line)
            XCTAssertTrue(error.message.contains(text), error.message, file: file, line: line)
        }
    }

    /// The first `count` bytes of the decompressed stream (python's zlib, an independent reader).
    private func decompressedPrefix(_ path: String, count: Int) throws -> [UInt8] {
        let script = """
        import sys, zlib
        d = zlib.decompressobj(31)
        f = open(sys.argv[1], 'rb')
        out = b''
        while len(out) < int(sys.argv[2]):
            chunk = d.unconsumed_tail or f.read(65536)
            if not chunk: break
            out += d.decompress(chunk, int(sys.argv[2]) - len(out))
        sys.stdout.write(out.hex())
        """
        let hex = try TestSupport.run("python3", ["-c", script, path, String(count)]).stdout
        var out: [UInt8] = []
        var it = hex.utf8.makeIterator()
        while let hi = it.next(), let lo = it.next() {
            out.append(UInt8(String(decoding: [hi, lo], as: UTF8.self), radix: 16) ?? 0)
        }
        return out
    }

    /// Decompresses one gzip member with python's zlib and reports whether anything follows it.
    private func gzipMemberReport(_ path: String) throws -> (singleMember: Bool, tarBytes: UInt64) {
        let script = """
        import sys, zlib
        d = zlib.decompressobj(31)
        f = open(sys.argv[1], 'rb')
        total = 0
        while not d.eof:
            chunk = d.unconsumed_tail or f.read(65536)
            if not chunk: break
            total += len(d.decompress(chunk, 1 << 24))
        rest = len(d.unused_data) + len(f.read())
        print(int(d.eof), rest, total)
        """
        let fields = try TestSupport.run("python3", ["-c", script, path]).stdout
            .split(separator: " ").map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) }
        XCTAssertEqual(fields.count, 3)
        return (fields.first == "1" && fields.dropFirst().first == "0", UInt64(fields.last ?? "") ?? 0)
    }
}
