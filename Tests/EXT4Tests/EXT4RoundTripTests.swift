import Foundation
import XCTest
@testable import EXT4
import CVMSupport

/// mke2fs -d → our reader → our formatter: everything must come through unchanged.
final class EXT4RoundTripTests: XCTestCase {
    typealias S = EXT4TestSupport

    func content(_ reader: EXT4Reader, _ inode: UInt32) throws -> [UInt8] {
        let f = try reader.openFile(inode)
        var out = [UInt8](repeating: 0, count: Int(f.size))
        try out.withUnsafeMutableBytes { try f.read(into: $0, at: 0) }
        return out
    }

    func makeOracleImage(_ dir: String, extraMkfs: [String] = []) throws -> String {
        let tree = dir + "/tree"
        try SampleTree.build(at: tree, bigSize: 2 << 20 | 5)
        try FileManager.default.createDirectory(atPath: tree + "/workload/old", withIntermediateDirectories: true)
        try S.write(Array("old workload\n".utf8), to: tree + "/workload/old/file.txt")
        try FileManager.default.createDirectory(atPath: tree + "/etc", withIntermediateDirectories: true)
        try S.write(Array("keep me\n".utf8), to: tree + "/etc/config")
        chown(tree + "/etc/config", 99, 98)
        chmod(tree + "/etc/config", 0o640)
        let image = dir + "/old.img"
        try S.run("mke2fs", ["-F", "-q", "-t", "ext4", "-I", "256"] + extraMkfs + ["-U", S.fixedUUIDString, "-L", "cvm-data", "-d", tree, image, "64M"])
        // Give the old file system nanosecond times and a creation time that differ per file,
        // as a real system's would (mke2fs -d copies whole seconds only).
        try S.run("debugfs", ["-w", "-R", "set_inode_field /etc/config mtime 20200102030405", image])
        try S.run("debugfs", ["-w", "-R", "set_inode_field /etc/config mtime_extra \(123_456_789 << 2)", image])
        try S.run("debugfs", ["-w", "-R", "set_inode_field /etc/config crtime 20190102030405", image])
        try S.run("debugfs", ["-w", "-R", "ea_set /etc/config trusted.origin debugfs", image])
        return image
    }

    func testCarriesEverythingOver() throws {
        try checkCarryOver(extraMkfs: [])
    }

    func testCarriesInlineDataFileSystemOver() throws {
        try checkCarryOver(extraMkfs: ["-O", "inline_data"])
    }

    func checkCarryOver(extraMkfs: [String]) throws {
        let dir = try S.tempDir(self)
        let old = try makeOracleImage(dir, extraMkfs: extraMkfs)
        let reader = try S.reader(old)
        let entries = try reader.entries()
        let newImage = dir + "/new.img"
        try S.format(entries.map { EXT4NewEntry(carryingOver: $0, from: reader) }, image: newImage, size: 64 << 20,
                     uuid: reader.uuid, label: reader.label)
        try S.assertFsckClean(newImage)

        let again = try S.reader(newImage)
        let newEntries = try again.entries()
        XCTAssertEqual(newEntries.map(\.path), entries.map(\.path))
        XCTAssertEqual(again.uuid, reader.uuid)
        XCTAssertEqual(again.label, "cvm-data")
        var inodeMap: [UInt32: UInt32] = [:]
        for (a, b) in zip(entries, newEntries) {
            XCTAssertEqual(b.metadata.type, a.metadata.type, a.path)
            XCTAssertEqual(b.metadata.permissions, a.metadata.permissions, a.path)
            XCTAssertEqual(b.metadata.uid, a.metadata.uid, a.path)
            XCTAssertEqual(b.metadata.gid, a.metadata.gid, a.path)
            XCTAssertEqual(b.metadata.times, a.metadata.times, a.path)
            XCTAssertEqual(Set(b.metadata.xattrs), Set(a.metadata.xattrs), a.path)
            XCTAssertEqual(b.symlinkTarget, a.symlinkTarget, a.path)
            XCTAssertEqual(b.linkCount, a.linkCount, a.path)
            if a.metadata.type == .regular {
                XCTAssertEqual(b.size, a.size, a.path)
                XCTAssertEqual(try content(again, b.inodeNumber), try content(reader, a.inodeNumber), a.path)
            }
            // Hard links stay hard links: the inode mapping is one-to-one.
            if let mapped = inodeMap[a.inodeNumber] { XCTAssertEqual(mapped, b.inodeNumber, a.path) }
            inodeMap[a.inodeNumber] = b.inodeNumber
        }
        XCTAssertEqual(Set(inodeMap.values).count, inodeMap.count)
        // debugfs agrees on both images.
        for path in ["/etc/config", "/hello.txt", "/dir/sub", "/short-link", "/long-link", "/xattr.txt", "/fifo", "/setuid-tool"] {
            let a = try DebugfsStat(image: old, path: path), b = try DebugfsStat(image: newImage, path: path)
            XCTAssertEqual(b.mode, a.mode, path)
            XCTAssertEqual(b.uid, a.uid, path)
            XCTAssertEqual(b.gid, a.gid, path)
            XCTAssertEqual(b.times, a.times, path)
            if path != "/dir/sub" { XCTAssertEqual(b.size, a.size, path) }   // directory sizes follow the layout
            XCTAssertEqual(b.links, a.links, path)
        }
        let config = try DebugfsStat(image: newImage, path: "/etc/config")
        XCTAssertEqual(config.times["mtime"]?.nanoseconds, 123_456_789)
        XCTAssertTrue(try S.debugfs(newImage, "ea_list /etc/config").contains("trusted.origin (7) = \"debugfs\""))
        // Same attributes; where they live (inode or block) and so their order may differ.
        func attrs(_ image: String) throws -> Set<Substring> {
            Set(try S.debugfs(image, "ea_list /xattr.txt").split(separator: "\n").filter { !$0.contains("system.data") })
        }
        XCTAssertEqual(try attrs(newImage), try attrs(old))
    }

    /// The update-disk operation: old tree kept, /workload replaced by a host folder.
    func testReplacesWorkloadAndKeepsTheRest() throws {
        let dir = try S.tempDir(self)
        let old = try makeOracleImage(dir)
        let workload = dir + "/new-workload"
        try FileManager.default.createDirectory(atPath: workload + "/bin", withIntermediateDirectories: true)
        try S.write(Array("#!/bin/sh\necho hi\n".utf8), to: workload + "/bin/run.sh")
        chmod(workload + "/bin/run.sh", 0o755)
        try FileManager.default.createSymbolicLink(atPath: workload + "/current", withDestinationPath: "bin/run.sh")
        let newImage = dir + "/new.img"
        let source = try FileDescriptor.openForReading(old)
        let output = try S.sparseFile(newImage, size: try source.size())
        let time = EXT4Timestamp(seconds: 1_234_567_890)
        try EXT4Rebuild.rebuild(source: EXT4FileRange(file: source, size: try source.size()), sourceName: old,
                                output: EXT4FileRange(file: output, size: try source.size()), outputName: newImage,
                                replacing: [Array("workload".utf8)], withHostFolder: workload, time: time)
        output.close()
        try S.assertFsckClean(newImage)
        let header = try S.run("dumpe2fs", ["-h", newImage]).stdout
        XCTAssertTrue(header.contains(S.fixedUUIDString) && header.contains("cvm-data"), header)
        XCTAssertEqual(try S.dump(newImage, "/workload/bin/run.sh", to: dir + "/out"), Data("#!/bin/sh\necho hi\n".utf8))
        let run = try DebugfsStat(image: newImage, path: "/workload/bin/run.sh")
        XCTAssertEqual(run.mode, 0o755)
        XCTAssertEqual(run.uid, 0)
        XCTAssertEqual(run.times["mtime"], time)
        XCTAssertEqual(try DebugfsStat(image: newImage, path: "/workload/current").fastLinkTarget, "bin/run.sh")
        let keptOld = try DebugfsStat(image: old, path: "/etc/config"), keptNew = try DebugfsStat(image: newImage, path: "/etc/config")
        XCTAssertEqual(keptNew.times, keptOld.times)
        XCTAssertEqual(keptNew.uid, 99)
        XCTAssertEqual(try S.dump(newImage, "/etc/config", to: dir + "/out2"), Data("keep me\n".utf8))
        let names = try S.reader(newImage).entries().map(\.path)
        XCTAssertFalse(names.contains("/workload/old/file.txt"))
        XCTAssertTrue(names.contains("/big.bin"))
    }
}
