import Foundation
import XCTest
import CVMSupport
import DiskImage
@testable import DiskUpdate

/// update-disk on raw disks, checked with debugfs/e2fsck: the pre-existing tree survives with
/// its metadata, `/workload` becomes the host folder, old bytes are gone, the rest of the disk
/// is untouched.
final class UpdateDiskTreeTests: XCTestCase {
    static let time: UInt64 = 1_234_567_890

    func options(_ workload: String, output: String? = nil) -> UpdateDisk.Options {
        var o = UpdateDisk.Options()
        o.workloadPath = workload
        o.outputPath = output
        o.timestamp = Self.time
        return o
    }

    func testRawUpdateKeepsTreeReplacesWorkloadAndLeavesNoOldBytes() throws {
        let dir = try Files.tempDir(self)
        let disk = dir + "/disk.raw", before = dir + "/before.raw", workload = dir + "/workload"
        try BaseDisk.make(at: disk)
        try Files.copy(disk, before)
        try Workloads.make(at: workload)
        let parts = try GPTInfo.partitions(disk)
        let data = try XCTUnwrap(parts.first { $0.name == "data" })

        let r = try UpdateDisk.run(disk: disk, options: options(workload))
        XCTAssertEqual(r.format, .raw)
        XCTAssertEqual(r.partition.index, 3)
        XCTAssertEqual(r.partition.offset, data.offset)
        XCTAssertEqual(r.partition.size, data.size)
        XCTAssertEqual(r.filesystem.uuid, BaseDisk.uuid)
        XCTAssertEqual(r.filesystem.label, "data")
        XCTAssertEqual(Files.leftovers(in: dir), [])

        let oldFS = dir + "/old.fs", newFS = dir + "/new.fs"
        try Files.extract(before, offset: data.offset, length: data.size, to: oldFS)
        try Files.extract(disk, offset: data.offset, length: data.size, to: newFS)
        try Debugfs.assertClean(newFS)
        let (oldID, newID) = (try Debugfs.identity(oldFS), try Debugfs.identity(newFS))
        XCTAssertEqual(newID.uuid, BaseDisk.uuid)
        XCTAssertEqual(newID.label, "data")
        // mke2fs picked 1 KiB blocks for this small file system, the formatter 4 KiB: compare bytes.
        XCTAssertEqual(newID.blockCount * newID.blockSize, oldID.blockCount * oldID.blockSize,
                       "the file system keeps the partition's size")
        XCTAssertEqual(newID.blockCount * newID.blockSize, data.size / 4096 * 4096)
        try Checks.assertWorkload(in: newFS, equals: workload, time: Self.time, scratch: dir)
        try Checks.assertKeptTree(old: oldFS, new: newFS, scratch: dir)
        try Checks.assertNoStaleBytes(newFS)
        try Checks.assertOutsideUnchanged(before: before, after: disk, partition: data)
        XCTAssertEqual(try GPTInfo.partitions(disk).map(\.offset), parts.map(\.offset))
        XCTAssertEqual(try GPTInfo.partitions(disk).map(\.size), parts.map(\.size))

        // Updating again with the same folder changes nothing; a changed folder changes only
        // the data partition.
        let once = try Files.sha256(disk)
        _ = try UpdateDisk.run(disk: disk, options: options(workload))
        XCTAssertEqual(try Files.sha256(disk), once, "a second identical update must give identical bytes")
        // The same folder copied elsewhere, with other owners and times on the host: same disk.
        let disk2 = dir + "/disk2.raw", workload2 = dir + "/elsewhere/other-name"
        try FileManager.default.createDirectory(atPath: dir + "/elsewhere", withIntermediateDirectories: true)
        try Files.copy(before, disk2)
        try Run.tool("cp", ["-a", workload, workload2])
        try Run.tool("chown", ["-R", "-h", "1234:5678", workload2])
        try Run.tool("find", [workload2, "-exec", "touch", "-h", "-d", "2001-02-03 04:05:06.789", "{}", "+"])
        _ = try UpdateDisk.run(disk: disk2, options: options(workload2))
        XCTAssertEqual(try Files.sha256(disk2), once, "host owners, times or the folder's name changed the disk")
        unlink(disk2)
        try Files.write("changed\n", to: workload + "/config/web/extra.conf")
        _ = try UpdateDisk.run(disk: disk, options: options(workload))
        XCTAssertNotEqual(try Files.sha256(disk), once)
        try Files.extract(disk, offset: data.offset, length: data.size, to: newFS)
        try Debugfs.assertClean(newFS)
        try Checks.assertWorkload(in: newFS, equals: workload, time: Self.time, scratch: dir)
        try Checks.assertKeptTree(old: oldFS, new: newFS, scratch: dir)
        try Checks.assertOutsideUnchanged(before: before, after: disk, partition: data)
    }

    /// A data partition that starts off the 4 KiB grid and whose size is not a whole number of
    /// blocks: the formatter's trailing bytes must read as zeros too, in raw and VMDK.
    func testOddPartitionGeometry() throws {
        let dir = try Files.tempDir(self)
        let disk = dir + "/odd.raw", workload = dir + "/workload"
        try Files.setSize(disk, 48 * Files.mib)
        let first: UInt64 = 2081, sectors: UInt64 = 32768 + 5
        try Run.tool("sgdisk", ["--clear", "--set-alignment=1", "--new=1:\(first):\(first + sectors - 1)",
                                "--typecode=1:8300", "--change-name=1:data", disk])
        let fs = BaseDisk.FS(gptName: "data", label: "data", sizeMiB: 16, extraBytes: 5 * 512)
        try BaseDisk.makeFileSystem(fs, into: disk, at: first * 512, seed: 3)
        try Files.write(Array("AFTER-THE-PARTITION".utf8), to: disk, at: (first + sectors) * 512)
        try Workloads.make(at: workload)
        let data = try XCTUnwrap(try GPTInfo.partitions(disk).first)
        XCTAssertEqual(data.offset, first * 512)
        XCTAssertEqual(data.size, fs.bytes)
        let vmdk = dir + "/odd.vmdk", before = dir + "/before.raw"
        try Files.copy(disk, before)
        let c = try Run.cli(["convert", disk, vmdk, "--force"])
        XCTAssertEqual(c.status, 0, c.stderr)

        _ = try UpdateDisk.run(disk: disk, options: options(workload))
        _ = try UpdateDisk.run(disk: vmdk, options: options(workload))
        let back = dir + "/back.raw"
        let b = try Run.cli(["convert", vmdk, back, "--force"])
        XCTAssertEqual(b.status, 0, b.stderr)
        XCTAssertEqual(try Files.sha256(back), try Files.sha256(disk), "VMDK and raw updates differ")
        let oldFS = dir + "/old.fs", newFS = dir + "/new.fs"
        try Files.extract(before, offset: data.offset, length: data.size, to: oldFS)
        try Files.extract(disk, offset: data.offset, length: data.size, to: newFS)
        try Debugfs.assertClean(newFS)
        try Checks.assertWorkload(in: newFS, equals: workload, time: Self.time, scratch: dir)
        try Checks.assertKeptTree(old: oldFS, new: newFS, scratch: dir)
        try Checks.assertNoStaleBytes(newFS)
        try Checks.assertOutsideUnchanged(before: before, after: disk, partition: data)
    }

    /// One disk for the heavy cases: a 300 MiB image archive, 10,000 small files in one folder,
    /// 40 nested folders, empty files, names with spaces and UTF-8, symlinks, odd modes.
    func testLargeWorkload() throws {
        let dir = try Files.tempDir(self)
        let disk = dir + "/big.raw", workload = dir + "/workload"
        try BaseDisk.make(at: disk, sizeMiB: 600, fileSystems: [.init(gptName: "data", label: "data", sizeMiB: 520)])
        let data = try XCTUnwrap(try GPTInfo.partitions(disk).first { $0.name == "data" })
        let before = dir + "/before.raw"
        try Files.copy(disk, before)
        try Workloads.make(at: workload)
        try Workloads.makeImageArchive(at: workload + "/app image.tar", mib: 300)
        let many = workload + "/config/many"
        try FileManager.default.createDirectory(atPath: many, withIntermediateDirectories: true)
        let noise = Files.pseudoRandomBytes(count: 1024, seed: 7)
        for i in 0..<10_000 {
            // Every tenth file empty, the others small and distinct.
            let bytes = i % 10 == 0 ? [] : Array("file \(i)\n".utf8) + noise[0..<(i % 700)]
            try Files.create(many + "/f\(i).txt", bytes)
        }
        var deep = workload + "/config/deep"
        for level in 0..<40 { deep += "/level \(level)" }
        try FileManager.default.createDirectory(atPath: deep, withIntermediateDirectories: true)
        try Files.write("at the bottom\n", to: deep + "/bottom.txt")
        try FileManager.default.createSymbolicLink(atPath: deep + "/up", withDestinationPath: "../../..")
        let utf8 = workload + "/config/Ünïcödé folder — 日本語"
        try FileManager.default.createDirectory(atPath: utf8, withIntermediateDirectories: true)
        try Files.write("ü\n", to: utf8 + "/naïve file with spaces.txt")
        FileManager.default.createFile(atPath: utf8 + "/empty ☃", contents: nil)
        try FileManager.default.createSymbolicLink(atPath: utf8 + "/link → file", withDestinationPath: "naïve file with spaces.txt")
        chmod(utf8 + "/naïve file with spaces.txt", 0o600)

        let r = try UpdateDisk.run(disk: disk, options: options(workload))
        XCTAssertEqual(r.partition.index, 3)
        XCTAssertGreaterThan(r.usedBlocks * 4096, 300 << 20)
        let newFS = dir + "/new.fs", oldFS = dir + "/old.fs"
        try Files.extract(disk, offset: data.offset, length: data.size, to: newFS)
        try Files.extract(before, offset: data.offset, length: data.size, to: oldFS)
        try Debugfs.assertClean(newFS)
        try Checks.assertWorkload(in: newFS, equals: workload, time: Self.time, scratch: dir)
        try Checks.assertKeptTree(old: oldFS, new: newFS, scratch: dir)
        XCTAssertFalse(try Files.contains(newFS, BaseDisk.staleMarker), "old free-space bytes survived")
        XCTAssertFalse(try Files.contains(newFS, BaseDisk.oldWorkloadMarker), "old workload bytes survived")
        try Checks.assertOutsideUnchanged(before: before, after: disk, partition: data)
        XCTAssertEqual(Files.leftovers(in: dir), [])
    }
}
