import Foundation
import XCTest
@testable import EXT4
import CVMSupport

/// The running kernel as a referee: it mounts what we write, checks every metadata checksum it
/// reads, writes to it, and e2fsck must still find it clean. Skipped where loop mounts are not
/// allowed (unprivileged CI).
final class EXT4KernelTests: XCTestCase {
    typealias S = EXT4TestSupport

    func mount(_ image: String, at point: String, readOnly: Bool) throws {
        try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true)
        let r = try S.run("mount", ["-o", "loop," + (readOnly ? "ro" : "rw"), image, point], allowFailure: true)
        if r.status != 0 { throw XCTSkip("loop mount not available here: \(r.stderr)") }
        // A failing assertion must not leave the image mounted.
        addTeardownBlock { _ = try? S.run("umount", [point], allowFailure: true) }
    }

    func unmount(_ point: String) throws {
        try S.run("umount", [point])
    }

    func testKernelMountsReadsAndWrites() throws {
        let dir = try S.tempDir(self)
        let tree = dir + "/tree"
        try SampleTree.build(at: tree, bigSize: 3 << 20)
        try FileManager.default.createDirectory(atPath: tree + "/many", withIntermediateDirectories: true)
        for i in 0..<1500 { try S.write(Array("\(i)\n".utf8), to: tree + "/many/entry-\(i)") }
        let image = dir + "/fs.img"
        var entries = try EXT4HostTree.entries(folder: tree, destination: [Array("workload".utf8)], time: S.fixedTime)
        entries.append(EXT4NewEntry(path: "/attrs", metadata: EXT4Metadata(
            type: .regular, permissions: 0o644, times: EXT4Times(all: S.fixedTime),
            xattrs: [EXT4Xattr(fullName: "user.small", value: Array("v".utf8)),
                     EXT4Xattr(fullName: "user.large", value: Array(repeating: 0x61, count: 2000))])))
        let file = try S.sparseFile(image, size: 128 << 20)
        var options = EXT4FormatOptions(size: 128 << 20, uuid: S.fixedUUID, label: Array("kernel".utf8), timestamp: S.fixedTime, name: image)
        options.maxExtentBlocks = 2            // many extents: index blocks with checksums
        try EXT4Formatter(options: options).format(entries, to: EXT4FileRange(file: file, size: 128 << 20))
        file.close()
        try S.assertFsckClean(image)

        let point = dir + "/mnt"
        try mount(image, at: point, readOnly: true)
        let diff = try S.run("diff", ["-r", "--no-dereference", tree, point + "/workload"], allowFailure: true)
        let attr = try S.run("python3", ["-c", "import os,sys; print(len(os.getxattr(sys.argv[1], 'user.large')))", point + "/attrs"], allowFailure: true)
        let modes = try S.run("stat", ["-c", "%a %u %g %Y", point + "/workload/setuid-tool"], allowFailure: true)
        try unmount(point)
        // diff reports fifos it cannot compare; anything else is a difference.
        let differences = diff.stdout.split(separator: "\n").filter { !($0.contains("is a fifo while file") && $0.hasSuffix("is a fifo")) }
        XCTAssertTrue(diff.status <= 1 && differences.isEmpty, diff.stdout + diff.stderr)
        XCTAssertEqual(attr.stdout, "2000\n", attr.stderr)
        XCTAssertEqual(modes.stdout, "4755 0 0 \(S.fixedTime.seconds)\n")

        // The kernel allocates, grows directories and frees blocks in our file system.
        try mount(image, at: point, readOnly: false)
        try S.write(S.bytes(count: 5 << 20, seed: 11), to: point + "/workload/new.bin")
        for i in 0..<500 { try S.write([1], to: point + "/workload/many/added-\(i)") }
        try FileManager.default.removeItem(atPath: point + "/workload/big.bin")
        try FileManager.default.createDirectory(atPath: point + "/new-dir/sub", withIntermediateDirectories: true)
        try S.write(Array("appended".utf8), to: point + "/workload/dir/hardlink-a")
        try S.run("sync", [])
        try unmount(point)
        try S.assertFsckClean(image)
    }
}
