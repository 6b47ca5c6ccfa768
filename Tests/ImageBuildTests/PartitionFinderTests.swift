import CVMSupport
import DiskImage
import Foundation
@testable import ImageBuild
import XCTest

/// The initramfs's partition finder (BootScripts.partitionFinder), run by the image's own
/// busybox against GPT disks written by GPTLayout and a sysfs tree shaped like the kernel's:
/// root, verity and data by type GUID; missing or duplicated types are refused with a reason.
final class PartitionFinderTests: XCTestCase {
    typealias T = ImageBuilder.PartitionType

    struct Disk {
        var name: String
        var types: [String]     // one 1 MiB partition per type, in order
    }

    /// The image's busybox (from the package cache, fetched once per run).
    nonisolated(unsafe) static var busyboxPath: String?
    func busybox() throws -> String {
        if let path = Self.busyboxPath { return path }
        let cache = try DebianPackageCache(folder: ImageTestSupport.repo + "/images/cache")
        try? cache.loadCandidates(["busybox-static"])
        let path = try cache.fetch("busybox-static").root + "/bin/busybox"
        Self.busyboxPath = path
        return path
    }

    /// Writes the disks and a fake /sys, runs find_partitions, returns (status, output).
    func find(_ disks: [Disk]) throws -> (status: Int32, output: String) {
        let dir = try ImageTestSupport.temporaryDirectory("partfind")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mib: UInt64 = 1 << 20, s = GPT.sectorSize
        for disk in disks {
            let size = UInt64(disk.types.count + 2) * mib
            let layout = GPTLayout(diskGUID: guidFromDigest(Array(disk.name.utf8) + [UInt8](repeating: 1, count: 16)), diskSize: size,
                                   entries: disk.types.enumerated().map { i, type in
                                       .init(name: "p\(i + 1)", typeGUID: type, uniqueGUID: guidFromDigest([UInt8(i + 1)] + Array(disk.name.utf8) + [UInt8](repeating: 7, count: 16)),
                                             firstLBA: UInt64(i + 1) * mib / s, lastLBA: UInt64(i + 2) * mib / s - 1)
                                   })
            let path = dir + "/dev/" + disk.name
            try FileManager.default.createDirectory(atPath: dir + "/dev", withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: path, contents: nil)
            let fd = try FileDescriptor(fd: open(path, O_RDWR), path: path)
            try fd.truncate(to: size)
            for (offset, bytes) in try layout.encoded() { try fd.write(bytes, at: offset) }
            fd.close()
            let sys = dir + "/sys/block/" + disk.name
            try FileManager.default.createDirectory(atPath: sys + "/queue", withIntermediateDirectories: true)
            try "512\n".write(toFile: sys + "/queue/logical_block_size", atomically: true, encoding: .utf8)
            for i in disk.types.indices {
                let part = sys + "/\(disk.name)\(i + 1)"
                try FileManager.default.createDirectory(atPath: part, withIntermediateDirectories: true)
                try "\(i + 1)\n".write(toFile: part + "/partition", atomically: true, encoding: .utf8)
                try "\(UInt64(i + 1) * mib / 512)\n".write(toFile: part + "/start", atomically: true, encoding: .utf8)
            }
        }
        try BootScripts.partitionFinder.write(toFile: dir + "/partitions.sh", atomically: true, encoding: .utf8)
        let script = "SYS=\"$1/sys\" DEV=\"$1/dev\"; . \"$1/partitions.sh\"; find_partitions; rc=$?; echo \"root=$root hash=$hash data=$data why=$why\"; exit $rc"
        let sh = ExternalTool(name: "busybox", package: "busybox-static", path: try busybox())
        let run = try sh.runCapturing(["sh", "-c", script, "sh", dir])
        return (run.status, run.stdout.trimmingCharacters(in: .whitespacesAndNewlines) + run.stderr)
    }

    let image = [T.esp, T.rootX86_64, T.rootX86_64Verity, T.linuxData]

    func testFindsTheImageLayoutByType() throws {
        let found = try find([Disk(name: "vda", types: image)])
        XCTAssertEqual(found.status, 0, found.output)
        XCTAssertEqual(found.output, "root=vda2 hash=vda3 data=vda4 why=")
        // Order on disk does not matter, names do not matter; another disk's Linux data
        // partition is not the image's.
        let shuffled = try find([Disk(name: "vdb", types: [T.linuxData]), Disk(name: "vda", types: [T.linuxData, T.esp, T.rootX86_64Verity, T.rootX86_64])])
        XCTAssertEqual(shuffled.status, 0, shuffled.output)
        XCTAssertEqual(shuffled.output, "root=vda4 hash=vda3 data=vda1 why=")
    }

    func testMissingTypesAreNamed() throws {
        let noVerity = try find([Disk(name: "vda", types: [T.esp, T.rootX86_64, T.linuxData])])
        XCTAssertEqual(noVerity.status, 1, noVerity.output)
        XCTAssertTrue(noVerity.output.contains("no partition of type root-x86-64-verity (2c7357ed-ebd2-46d9-aec1-23d437ec2bf5)"), noVerity.output)
        // The type GUID this project used before (not the specification's) is not accepted.
        let oldGUID = try find([Disk(name: "vda", types: [T.esp, T.rootX86_64, "2C7357ED-EBD2-46D9-AEC9-3A2DFB0A1A4D", T.linuxData])])
        XCTAssertEqual(oldGUID.status, 1, oldGUID.output)
        let noData = try find([Disk(name: "vda", types: [T.esp, T.rootX86_64, T.rootX86_64Verity]), Disk(name: "vdb", types: [T.linuxData])])
        XCTAssertEqual(noData.status, 1, noData.output)
        XCTAssertTrue(noData.output.contains("no partition of type Linux data (0fc63daf-8483-4772-8e79-3d69d8477de4) on vda"), noData.output)
        let noRoot = try find([])
        XCTAssertEqual(noRoot.status, 1, noRoot.output)
        XCTAssertTrue(noRoot.output.contains("no partition of type root-x86-64 (4f68bce3-e8cd-4db1-96e7-fbcaf984b709)"), noRoot.output)
    }

    func testDuplicatedTypesAreRefused() throws {
        let twoDisks = try find([Disk(name: "vda", types: image), Disk(name: "vdb", types: image)])
        XCTAssertEqual(twoDisks.status, 2, twoDisks.output)
        XCTAssertTrue(twoDisks.output.contains("2 partitions of type root-x86-64 (4f68bce3-e8cd-4db1-96e7-fbcaf984b709) (vda2 vdb2); expected exactly one"), twoDisks.output)
        let twoHashes = try find([Disk(name: "vda", types: image + [T.rootX86_64Verity])])
        XCTAssertEqual(twoHashes.status, 2, twoHashes.output)
        XCTAssertTrue(twoHashes.output.contains("2 partitions of type root-x86-64-verity"), twoHashes.output)
        let twoData = try find([Disk(name: "vda", types: image + [T.linuxData])])
        XCTAssertEqual(twoData.status, 2, twoData.output)
        XCTAssertTrue(twoData.output.contains("2 partitions of type Linux data (0fc63daf-8483-4772-8e79-3d69d8477de4) on vda (vda4 vda5)"), twoData.output)
        let split = try find([Disk(name: "vda", types: [T.esp, T.rootX86_64, T.linuxData]), Disk(name: "vdb", types: [T.rootX86_64Verity])])
        XCTAssertEqual(split.status, 2, split.output)
        XCTAssertTrue(split.output.contains("is not on the root's disk vda"), split.output)
    }
}
