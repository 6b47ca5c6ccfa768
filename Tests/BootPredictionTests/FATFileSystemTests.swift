import BootPrediction
import CVMSupport
import DiskImage
import Foundation
import XCTest

/// The FAT reader against file systems made by dosfstools (mkfs.fat) and filled by mtools.
final class FATFileSystemTests: XCTestCase {
    /// Files of every shape: multi-cluster, empty, long and lower-case names, a directory larger
    /// than one cluster, and a file fragmented by a deletion.
    static func makeVolume(fatBits: Int, dir: String) throws -> (image: String, files: [String: [UInt8]]) {
        let image = dir + "/fat\(fatBits).img"
        let mkfs = try BootTestSupport.tool("mkfs.fat", package: "dosfstools")
        try mkfs.run(["-F", String(fatBits), "-S", "512", "-s", "1", "-n", "TESTVOL", "-C", image, fatBits == 32 ? "40960" : "20480"])
        let mmd = try BootTestSupport.tool("mmd", package: "mtools"), mcopy = try BootTestSupport.tool("mcopy", package: "mtools")
        let mdel = try BootTestSupport.tool("mdel", package: "mtools")
        let env = ["MTOOLS_SKIP_CHECK": "1", "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
        var files: [String: [UInt8]] = [:]
        func put(_ path: String, _ content: [UInt8]) throws {
            let local = dir + "/src-" + UUID().uuidString
            try Data(content).write(to: URL(fileURLWithPath: local))
            try mcopy.run(["-i", image, local, "::" + path], environment: env)
            files[path] = content
        }
        try mmd.run(["-i", image, "::EFI", "::EFI/BOOT", "::many", "::Deep", "::Deep/er"], environment: env)
        try put("EFI/BOOT/BOOTX64.EFI", BootTestSupport.pseudoRandom(300_000, seed: 1))
        try put("A Long File Name.txt", Array("long name\n".utf8))
        try put("readme", Array("lower case short name\n".utf8))
        try put("empty.bin", [])
        try put("Deep/er/leaf.dat", BootTestSupport.pseudoRandom(513, seed: 2))
        for i in 0..<40 { try put("many/file-number-\(i).txt", Array("entry \(i)\n".utf8)) }
        // Fragmentation: a hole left by a deleted file is filled first by the next copy.
        try put("first.bin", BootTestSupport.pseudoRandom(10_000, seed: 3))
        try put("second.bin", BootTestSupport.pseudoRandom(10_000, seed: 4))
        try mdel.run(["-i", image, "::first.bin"], environment: env)
        files["first.bin"] = nil
        try put("fragmented.bin", BootTestSupport.pseudoRandom(50_000, seed: 5))
        return (image, files)
    }

    func check(fatBits: Int) throws {
        let dir = try BootTestSupport.temporaryDirectory("fat\(fatBits)")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (image, files) = try Self.makeVolume(fatBits: fatBits, dir: dir)
        let reader = try DiskImageFile.open(image)
        let fat = try FATFileSystem(disk: reader, offset: 0, size: reader.virtualSize, name: image)
        XCTAssertEqual(fat.isFAT32, fatBits == 32)
        for (path, content) in files {
            let entry = try XCTUnwrap(try fat.lookup(path), path)
            XCTAssertFalse(entry.isDirectory)
            XCTAssertEqual(Int(entry.size), content.count, path)
            XCTAssertEqual(try fat.read(entry), content, path)
        }
        // UEFI matches names without regard to case, with either separator.
        XCTAssertEqual(try fat.lookup("\\efi\\boot\\bootx64.efi"), try fat.lookup("EFI/BOOT/BOOTX64.EFI"))
        XCTAssertNil(try fat.lookup("first.bin"), "a deleted file is not listed")
        XCTAssertNil(try fat.lookup("EFI/BOOT/missing.efi"))
        XCTAssertNil(try fat.lookup("readme/below"), "a file has no children")
        XCTAssertEqual(try fat.list(try fat.lookup("many")).count, 40)
        let root = Set(try fat.list(nil).map(\.name))
        XCTAssertEqual(root, ["EFI", "many", "Deep", "A Long File Name.txt", "readme", "empty.bin", "second.bin", "fragmented.bin"])
    }

    func testFAT32() throws { try check(fatBits: 32) }
    func testFAT16() throws { try check(fatBits: 16) }

    func testRefusesWhatIsNotFAT() throws {
        let dir = try BootTestSupport.temporaryDirectory("notfat")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data(count: 1 << 20).write(to: URL(fileURLWithPath: dir + "/zeros.img"))
        let reader = try DiskImageFile.open(dir + "/zeros.img")
        XCTAssertThrowsError(try FATFileSystem(disk: reader, offset: 0, size: reader.virtualSize, name: "zeros.img p1")) { error in
            XCTAssertTrue("\(error)".contains("zeros.img p1: no FAT boot sector"), "\(error)")
        }
    }
}
