import XCTest
@testable import DiskImage
import CVMSupport

final class GPTTests: XCTestCase {
    func makeDisk() throws -> String {
        let dir = try TestSupport.tempDir(self)
        let path = dir.appendingPathComponent("gpt disk.raw").path   // a space in the name on purpose
        try TestSupport.makeGPTDisk(at: path)
        return path
    }

    func testPartitionsMatchSgdisk() throws {
        let path = try makeDisk()
        let gpt = try GPT.read(from: try DiskImageFile.open(path), name: path)
        XCTAssertEqual(gpt.diskGUID, "11111111-2222-3333-4444-555555555555")
        XCTAssertEqual(gpt.partitions.map(\.name), ["esp", "root", "data"])
        XCTAssertEqual(gpt.partitions.map(\.index), [1, 2, 3])
        for p in gpt.partitions {
            let info = try TestSupport.run("sgdisk", ["-i", "\(p.index)", path]).stdout
            XCTAssertTrue(info.contains("Partition unique GUID: \(p.uniqueGUID)"), info)
            XCTAssertTrue(info.contains("Partition GUID code: \(p.typeGUID)"), info)
            XCTAssertTrue(info.contains("First sector: \(p.firstLBA) "), info)
            XCTAssertTrue(info.contains("Last sector: \(p.lastLBA) "), info)
        }
        XCTAssertEqual(gpt.partitions[0].typeGUID, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
        XCTAssertEqual(gpt.partitions[0].offset, 1 << 20)
        XCTAssertEqual(gpt.partitions[0].size, 8 << 20)
    }

    func testInspectionFindsExt4LabelAndUUID() throws {
        let path = try makeDisk()
        let info = try DiskInspection.inspect(try DiskImageFile.open(path), name: path)
        XCTAssertEqual(info.format, .raw)
        XCTAssertEqual(info.virtualSize, 64 << 20)
        XCTAssertLessThan(info.allocatedBytes, 40 << 20)
        XCTAssertGreaterThan(info.allocatedBytes, 7 << 20)
        let data = try XCTUnwrap(info.partitions?.first { $0.partition.name == "data" })
        XCTAssertEqual(data.filesystem, FilesystemProbe(type: "ext4", label: "data", uuid: "0ddba11e-0000-4000-8000-000000000001"))
        XCTAssertNil(info.partitions?.first { $0.partition.name == "esp" }?.filesystem)
    }

    func testDiskWithoutGPTHasNoPartitions() throws {
        let dir = try TestSupport.tempDir(self)
        let path = dir.appendingPathComponent("plain.img").path
        try TestSupport.writeBytes(TestSupport.pseudoRandomBytes(count: 1 << 20, seed: 5), to: path, at: 0)
        let info = try DiskInspection.inspect(try DiskImageFile.open(path), name: path)
        XCTAssertNil(info.partitions)
    }

    /// Each corruption must be refused with a message naming the file and the problem.
    func testCorruptTablesAreRefused() throws {
        let cases: [(String, UInt64, [UInt8], String)] = [
            ("primary header CRC", 512 + 16, [0xDE, 0xAD], "primary GPT header CRC mismatch"),
            ("primary signature", 512, Array("EFI BART".utf8), "no primary GPT header"),
            ("entries CRC", 1024 + 60, [0x41], "primary GPT partition entries CRC mismatch"),
            ("backup header CRC", (64 << 20) - 512 + 16, [0x01], "backup GPT header CRC mismatch"),
            ("protective MBR", 510, [0, 0], "no protective MBR"),
        ]
        for (label, offset, patch, expected) in cases {
            let path = try makeDisk()
            try TestSupport.writeBytes(patch, to: path, at: offset)
            XCTAssertThrowsError(try GPT.read(from: try DiskImageFile.open(path), name: path), label) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains(expected), "\(label): \(message)")
                XCTAssertTrue(message.hasPrefix(path), "\(label): \(message)")
            }
        }
    }
}
