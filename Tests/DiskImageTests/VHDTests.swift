import Foundation
import XCTest
@testable import DiskImage
import CVMSupport

final class VHDTests: XCTestCase {
    let mib: UInt64 = 1 << 20

    // MARK: helpers

    func readFile(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    func fileSize(_ path: String) throws -> UInt64 {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
    }

    func qemuVirtualSize(_ path: String, format: String) throws -> UInt64 {
        let r = try TestSupport.run("qemu-img", ["info", "--output=json", "-f", format, path])
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        return (json?["virtual-size"] as? NSNumber)?.uint64Value ?? 0
    }

    /// Opening `path` fails with a CVMError of `kind` whose message names the file and says `fragment`.
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

    /// Writes `bytes` into a copy of `src` at `offset` and returns the copy's path.
    func corruptCopy(of src: String, named name: String, in dir: URL, at offset: Int, bytes: [UInt8]) throws -> String {
        var content = try readFile(src)
        content.replaceSubrange(offset..<offset + bytes.count, with: bytes)
        let path = dir.appendingPathComponent(name).path
        try Data(content).write(to: URL(fileURLWithPath: path))
        return path
    }

    func be32(_ v: UInt32) -> [UInt8] { var b = [UInt8](repeating: 0, count: 4); b.putBE32(v, at: 0); return b }

    /// Independent footer checksum: one's complement of the byte sum, checksum bytes skipped.
    func referenceChecksum(_ footer: ArraySlice<UInt8>) -> UInt32 {
        var sum: UInt32 = 0
        for (i, b) in footer.enumerated() where !(64..<68).contains(i) { sum = sum &+ UInt32(b) }
        return ~sum
    }

    // MARK: writing

    func testRawToFixedVHDRoundsUpToMiBAndQemuAgrees() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        let inputSize = 64 * mib + 4096                      // not a whole MiB
        try TestSupport.makeGPTDisk(at: src, size: inputSize)
        let out = dir.appendingPathComponent("disk.vhd").path
        try TestSupport.convert(src, to: out, format: .vhd)

        let rounded = 65 * mib
        XCTAssertEqual(try fileSize(out), rounded + 512)
        XCTAssertEqual(try qemuVirtualSize(out, format: "vpc"), rounded)
        try TestSupport.assertSameContent(src, "raw", out, "vpc")
        // The padding and holes stay sparse.
        var st = stat()
        XCTAssertEqual(stat(out, &st), 0)
        XCTAssertLessThan(UInt64(st.st_blocks) * 512, 40 * mib)

        // Our reader sees the rounded size, the format, and skips the holes.
        let reader = try DiskImageFile.open(out)
        XCTAssertEqual(reader.format, .vhdFixed)
        XCTAssertEqual(reader.virtualSize, rounded)
        XCTAssertLessThan(try reader.allocatedBytes(), 40 * mib)
        XCTAssertTrue(try reader.storedRanges().allSatisfy { $0.upperBound <= rounded })
        let back = dir.appendingPathComponent("back.raw").path
        try TestSupport.convert(out, to: back, format: .raw)
        XCTAssertEqual(try fileSize(back), rounded)
        try TestSupport.assertSameContent(src, "raw", back, "raw")
    }

    func testFooterFieldsByteByByte() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src, size: 64 * mib + 4096)
        let out = dir.appendingPathComponent("disk.vhd").path
        let unixTime: UInt64 = 1_700_000_000
        try TestSupport.convert(src, to: out, format: .vhd, options: WriterOptions(timestamp: unixTime))
        let file = try readFile(out)
        XCTAssertEqual((file.count - 512) % Int(mib), 0, "disk bytes before the footer must be whole MiB")
        let f = Array(file[(file.count - 512)...])
        let size = 65 * mib

        XCTAssertEqual(Array(f[0..<8]), Array("conectix".utf8))
        XCTAssertEqual(Array(f[8..<12]), [0, 0, 0, 2], "features")
        XCTAssertEqual(Array(f[12..<16]), [0, 1, 0, 0], "file format version")
        XCTAssertEqual(Array(f[16..<24]), [UInt8](repeating: 0xFF, count: 8), "data offset of a fixed disk")
        XCTAssertEqual(f.be32(24), UInt32(unixTime - 946_684_800), "timestamp since 2000-01-01")
        XCTAssertEqual(Array(f[28..<32]), Array("cvmc".utf8), "creator application")
        XCTAssertEqual(Array(f[32..<36]), [0, 1, 0, 0], "creator version")
        XCTAssertEqual(Array(f[36..<40]), Array("Wi2k".utf8), "creator host OS")
        XCTAssertEqual(f.be64(40), size, "original size")
        XCTAssertEqual(f.be64(48), size, "current size")
        XCTAssertEqual(Array(f[56..<60]), [0xFF, 0xFF, 16, 255], "maximum CHS geometry")
        XCTAssertEqual(Array(f[60..<64]), [0, 0, 0, 2], "disk type fixed")
        XCTAssertEqual(f.be32(64), referenceChecksum(f[0..<512]), "checksum")
        let uuid = Array(f[68..<84])
        XCTAssertNotEqual(uuid, [UInt8](repeating: 0, count: 16))
        XCTAssertEqual(uuid[6] >> 4, 8, "UUID version")
        XCTAssertEqual(uuid[8] >> 6, 2, "UUID variant")
        XCTAssertEqual(f[84], 0, "saved state")
        XCTAssertEqual(Array(f[85..<512]), [UInt8](repeating: 0, count: 427), "reserved")

        // A timestamp before 2000 clamps to 0.
        XCTAssertEqual(VHDFooter.vhdTime(unixSeconds: 0), 0)
        XCTAssertEqual(VHDFooter.vhdTime(unixSeconds: 946_684_801), 1)
        // Our own parser accepts what we wrote.
        XCTAssertEqual(try VHDFooter.parse(f, name: out, where: "test").currentSize, size)
    }

    func testOutputIsReproducibleAndIDFollowsContent() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src)
        let a = dir.appendingPathComponent("a.vhd").path
        let b = dir.appendingPathComponent("b.vhd").path
        try TestSupport.convert(src, to: a, format: .vhd)
        try TestSupport.convert(src, to: b, format: .vhd, options: WriterOptions(threads: 1))
        XCTAssertEqual(try TestSupport.sha256(a), try TestSupport.sha256(b))

        // Different content, same size: a different unique ID.
        let other = dir.appendingPathComponent("other.raw").path
        try TestSupport.makeGPTDisk(at: other, seed: 2)
        let c = dir.appendingPathComponent("c.vhd").path
        try TestSupport.convert(other, to: c, format: .vhd)
        let idA = Array(Array(try readFile(a).suffix(512))[68..<84])
        let idC = Array(Array(try readFile(c).suffix(512))[68..<84])
        XCTAssertNotEqual(idA, idC)
    }

    // MARK: reading VHDs made by qemu-img

    func testReadsQemuFixedVHD() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src)
        let vhd = dir.appendingPathComponent("qemu-fixed.vhd").path
        try TestSupport.run("qemu-img", ["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", src, vhd])
        let reader = try DiskImageFile.open(vhd)
        XCTAssertEqual(reader.format, .vhdFixed)
        XCTAssertEqual(reader.virtualSize, 64 * mib)
        let back = dir.appendingPathComponent("back.raw").path
        try TestSupport.convert(vhd, to: back, format: .raw)
        try TestSupport.assertSameContent(src, "raw", back, "raw")
        try TestSupport.assertSameContent(vhd, "vpc", back, "raw")
    }

    func testReadsQemuDynamicVHD() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src)
        let vhd = dir.appendingPathComponent("qemu-dynamic.vhd").path
        try TestSupport.run("qemu-img", ["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", src, vhd])
        let reader = try DiskImageFile.open(vhd)
        XCTAssertEqual(reader.format, .vhdDynamic)
        // qemu writes the CHS-rounded size as the current size; both readers agree on it.
        XCTAssertEqual(reader.virtualSize, try qemuVirtualSize(vhd, format: "vpc"))
        XCTAssertGreaterThanOrEqual(reader.virtualSize, 64 * mib)
        // Only allocated 2 MiB blocks are stored: far less than the disk.
        let allocated = try reader.allocatedBytes()
        XCTAssertGreaterThan(allocated, 0)
        XCTAssertLessThan(allocated, 50 * mib)

        let back = dir.appendingPathComponent("back.raw").path
        let stats = try TestSupport.convert(vhd, to: back, format: .raw)
        XCTAssertLessThanOrEqual(stats.bytesRead, allocated + 2 * mib)
        try TestSupport.assertSameContent(src, "raw", back, "raw")
        try TestSupport.assertSameContent(vhd, "vpc", back, "raw")

        // Dynamic → fixed VHD round trip through our writer.
        let fixed = dir.appendingPathComponent("fixed.vhd").path
        try TestSupport.convert(vhd, to: fixed, format: .vhd)
        try TestSupport.assertSameContent(vhd, "vpc", fixed, "vpc")
    }

    // MARK: damaged input

    func testBadFooterChecksumIsRejected() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src)
        let vhd = dir.appendingPathComponent("good.vhd").path
        try TestSupport.convert(src, to: vhd, format: .vhd)
        let footer = Int(try fileSize(vhd)) - 512
        let bad = try corruptCopy(of: vhd, named: "bad-checksum.vhd", in: dir, at: footer + 28, bytes: Array("XXXX".utf8))
        assertOpenFails(bad, saying: "bad VHD footer checksum: stored 0x")
    }

    func testTruncatedFixedVHDIsRejected() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src)
        let vhd = dir.appendingPathComponent("good.vhd").path
        try TestSupport.convert(src, to: vhd, format: .vhd)
        let content = try readFile(vhd)
        // Disk bytes cut short, footer intact.
        let cut = dir.appendingPathComponent("cut.vhd").path
        try Data(content[0..<(32 << 20)] + content.suffix(512)).write(to: URL(fileURLWithPath: cut))
        assertOpenFails(cut, saying: "fixed VHD is truncated")
        // Footer lost: content looks raw but the name says VHD.
        let noFooter = dir.appendingPathComponent("no-footer.vhd").path
        try Data(content[0..<(content.count - 4096)]).write(to: URL(fileURLWithPath: noFooter))
        assertOpenFails(noFooter, saying: "VHD")
    }

    func testDynamicVHDDamageIsRejected() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src)
        let vhd = dir.appendingPathComponent("dynamic.vhd").path
        try TestSupport.run("qemu-img", ["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", src, vhd])
        let content = try readFile(vhd)
        let headerOffset = Int(content.be64(16))
        let tableOffset = Int(content.be64(headerOffset + 16))
        // Find an allocated BAT entry and point it past the end of the file.
        var allocated = 0
        while content.be32(tableOffset + allocated * 4) == 0xFFFF_FFFF { allocated += 1 }
        let beyond = try corruptCopy(of: vhd, named: "bat-beyond.vhd", in: dir,
                                     at: tableOffset + allocated * 4, bytes: be32(0x00FF_FFFF))
        assertOpenFails(beyond, saying: "BAT entry \(allocated)")

        let badCookie = try corruptCopy(of: vhd, named: "bad-cookie.vhd", in: dir, at: headerOffset, bytes: Array("xxsparse".utf8))
        assertOpenFails(badCookie, saying: "cxsparse")

        // A header field change without a checksum update.
        let badHeaderSum = try corruptCopy(of: vhd, named: "bad-header-sum.vhd", in: dir, at: headerOffset + 32, bytes: be32(1 << 20))
        assertOpenFails(badHeaderSum, saying: "dynamic header checksum")

        // A block size that is not a power of two, with a valid checksum.
        var header = Array(content[headerOffset..<headerOffset + 1024])
        header.putBE32(3 << 20, at: 32)
        header.putBE32(VHDFooter.onesComplementSum(header, checksumOffset: 36), at: 36)
        let badBlock = try corruptCopy(of: vhd, named: "bad-block.vhd", in: dir, at: headerOffset, bytes: header)
        assertOpenFails(badBlock, saying: "block size")

        // BAT table that does not fit in the file.
        header = Array(content[headerOffset..<headerOffset + 1024])
        header.putBE64(UInt64(content.count - 8), at: 16)
        header.putBE32(VHDFooter.onesComplementSum(header, checksumOffset: 36), at: 36)
        let badTable = try corruptCopy(of: vhd, named: "bad-table.vhd", in: dir, at: headerOffset, bytes: header)
        assertOpenFails(badTable, saying: "beyond the end of the file")

        // Differencing disks are refused as unsupported.
        var footer = Array(content[0..<512])
        footer.putBE32(4, at: 60)
        footer.putBE32(VHDFooter.checksum(of: footer), at: 64)
        let differencing = try corruptCopy(of: vhd, named: "differencing.vhd", in: dir, at: 0, bytes: footer)
        assertOpenFails(differencing, kind: .unsupported, saying: "differencing")
    }

    func testOld511ByteFooterIsAccepted() throws {
        // Old Virtual PC versions wrote a 511-byte footer; the checksum covers those bytes.
        let dir = try TestSupport.tempDir(self)
        var footer = VHDFooter()
        footer.currentSize = 4096
        footer.originalSize = 4096
        var bytes = Array(footer.encoded()[0..<511])
        bytes.putBE32(VHDFooter.checksum(of: bytes), at: 64)
        let disk = TestSupport.pseudoRandomBytes(count: 4096, seed: 5)
        let path = dir.appendingPathComponent("old.vhd").path
        try Data(disk + bytes).write(to: URL(fileURLWithPath: path))
        let reader = try DiskImageFile.open(path)
        XCTAssertEqual(reader.format, .vhdFixed)
        XCTAssertEqual(reader.virtualSize, 4096)
        XCTAssertEqual(try reader.bytes(count: 4096, at: 0), disk)
        XCTAssertThrowsError(try reader.bytes(count: 1, at: 4096))
    }
}
