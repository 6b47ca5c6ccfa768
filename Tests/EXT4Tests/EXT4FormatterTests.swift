import Foundation
import XCTest
@testable import EXT4
import CVMSupport

/// Formats from host trees and in-memory entries; e2fsck, debugfs and dumpe2fs are the referees.
final class EXT4FormatterTests: XCTestCase {
    typealias S = EXT4TestSupport
    let workload: [[UInt8]] = [Array("workload".utf8)]

    func testHostTreeIsCleanAndEveryFileMatches() throws {
        let dir = try S.tempDir(self)
        let tree = dir + "/tree"
        try SampleTree.build(at: tree)
        let image = dir + "/fs.img"
        let entries = try EXT4HostTree.entries(folder: tree, destination: workload, time: S.fixedTime)
        try S.format(entries, image: image, size: 64 << 20, label: "cvm-data")
        try S.assertFsckClean(image)

        let header = try S.run("dumpe2fs", ["-h", image]).stdout
        XCTAssertTrue(header.contains("Filesystem volume name:   cvm-data"), header)
        XCTAssertTrue(header.contains("Filesystem UUID:          \(S.fixedUUIDString)"), header)
        XCTAssertTrue(header.contains("metadata_csum"), header)

        var hardLinkInodes: Set<String> = []
        for sub in try FileManager.default.subpathsOfDirectory(atPath: tree) {
            let host = tree + "/" + sub, path = "/workload/" + sub
            var st = stat()
            XCTAssertEqual(lstat(host, &st), 0)
            let d = try DebugfsStat(image: image, path: path)
            XCTAssertEqual(d.mode, UInt16(st.st_mode & 0o7777), path)
            XCTAssertEqual(d.uid, 0, path)
            XCTAssertEqual(d.gid, 0, path)
            for name in ["atime", "mtime", "ctime", "crtime"] { XCTAssertEqual(d.times[name], S.fixedTime, "\(path) \(name)") }
            switch st.st_mode & S_IFMT {
            case S_IFREG:
                XCTAssertEqual(d.size, UInt64(st.st_size), path)
                XCTAssertEqual(try S.dump(image, path, to: dir + "/out"), try Data(contentsOf: URL(fileURLWithPath: host)), path)
                if sub.hasPrefix("dir/hardlink") {
                    XCTAssertEqual(d.links, 2, path)
                    hardLinkInodes.insert(String(try S.debugfs(image, "stat \"\(path)\"").prefix { $0 != "T" }))
                }
            case S_IFLNK:
                let target = try FileManager.default.destinationOfSymbolicLink(atPath: host)
                if target.utf8.count < 60 {
                    XCTAssertEqual(d.fastLinkTarget, target, path)
                } else {
                    XCTAssertEqual(String(decoding: try S.dump(image, path, to: dir + "/out"), as: UTF8.self), target, path)
                }
            default:
                break
            }
        }
        XCTAssertEqual(hardLinkInodes.count, 1, "both hard links share one inode")
        try assertFreeBlocksAreZero(image)
    }

    /// Every block dumpe2fs lists as free reads as zeros: no stale or stray bytes.
    func assertFreeBlocksAreZero(_ image: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let text = try S.run("dumpe2fs", [image]).stdout
        let handle = try FileDescriptor.openForReading(image)
        var checked = 0
        for row in text.split(separator: "\n") where row.trimmingCharacters(in: .whitespaces).hasPrefix("Free blocks: ") {
            for item in row.split(separator: ":")[1].split(separator: ",") {
                let bounds = item.trimmingCharacters(in: .whitespaces).split(separator: "-").compactMap { UInt64($0) }
                guard let lo = bounds.first else { continue }
                let hi = bounds.count > 1 ? bounds[1] : lo
                var block = lo
                while block <= hi {
                    let n = Int(min(hi - block + 1, 256))
                    let bytes = try handle.read(count: n * 4096, at: block * 4096)
                    XCTAssertTrue(bytes.allSatisfy { $0 == 0 }, "free blocks \(block)..<\(block + UInt64(n)) are not zero", file: file, line: line)
                    checked += n
                    block += UInt64(n)
                }
            }
        }
        XCTAssertGreaterThan(checked, 0, file: file, line: line)
    }

    func testTenThousandFilesInOneDirectory() throws {
        let dir = try S.tempDir(self)
        let image = dir + "/fs.img"
        let t = EXT4Times(all: S.fixedTime)
        var entries = [EXT4NewEntry(path: "/many", metadata: EXT4Metadata(type: .directory, permissions: 0o755, times: t))]
        for i in 0..<10_000 {
            entries.append(EXT4NewEntry(path: "/many/file-\(i).txt", metadata: EXT4Metadata(type: .regular, permissions: 0o644, times: t),
                                        content: EXT4BytesContent(Array("content \(i)\n".utf8))))
        }
        let summary = try S.format(entries, image: image, size: 96 << 20)
        XCTAssertEqual(summary.usedInodes, 10_012)
        let fsck = try S.run("e2fsck", ["-fn", image], allowFailure: true)
        XCTAssertEqual(fsck.status, 0, fsck.stdout)
        XCTAssertFalse(fsck.stdout.lowercased().contains("optimiz"), fsck.stdout)
        let listing = try S.debugfs(image, "ls -p /many")
        XCTAssertEqual(listing.split(separator: "\n").filter { $0.hasPrefix("/") }.count, 10_002)    // with . and ..
        XCTAssertEqual(try S.dump(image, "/many/file-9876.txt", to: dir + "/out"), Data("content 9876\n".utf8))
        let reader = try S.reader(image)
        let many = try XCTUnwrap(try reader.entries().first { $0.path == "/many" })
        XCTAssertEqual(try reader.directoryEntries(many.inodeNumber).count, 10_000)
    }

    func testDeepDirectoriesAndEmptyFiles() throws {
        let dir = try S.tempDir(self)
        let image = dir + "/fs.img"
        let t = EXT4Times(all: S.fixedTime)
        var entries: [EXT4NewEntry] = []
        var path = ""
        for level in 0..<150 {
            path += "/level-\(level)"
            entries.append(EXT4NewEntry(path: path, metadata: EXT4Metadata(type: .directory, permissions: 0o750, times: t)))
            entries.append(EXT4NewEntry(path: path + "/empty", metadata: EXT4Metadata(type: .regular, permissions: 0o600, times: t)))
        }
        try S.format(entries, image: image, size: 16 << 20)
        try S.assertFsckClean(image)
        let d = try DebugfsStat(image: image, path: path + "/empty")
        XCTAssertEqual(d.size, 0)
        XCTAssertEqual(d.mode, 0o600)
        XCTAssertEqual(try DebugfsStat(image: image, path: "/level-0").links, 3)
    }

    /// Devices, fifos, sockets, xattrs in the inode and in a block, odd owners and times.
    func testSpecialNodesXattrsAndMetadata() throws {
        let dir = try S.tempDir(self)
        let image = dir + "/fs.img"
        let times = EXT4Times(access: EXT4Timestamp(seconds: 1, nanoseconds: 2), modification: EXT4Timestamp(seconds: 3_000_000_000, nanoseconds: 999_999_999),
                              change: EXT4Timestamp(seconds: -5, nanoseconds: 0), creation: EXT4Timestamp(seconds: 1_600_000_000, nanoseconds: 7))
        let big = EXT4Xattr(fullName: "user.big", value: S.bytes(count: 1000, seed: 1))
        let entries = [
            EXT4NewEntry(path: "/dev", metadata: EXT4Metadata(type: .directory, permissions: 0o755, times: times)),
            EXT4NewEntry(path: "/dev/null", metadata: EXT4Metadata(type: .characterDevice, permissions: 0o666, times: times, deviceMajor: 1, deviceMinor: 3)),
            EXT4NewEntry(path: "/dev/big", metadata: EXT4Metadata(type: .blockDevice, permissions: 0o660, uid: 6, gid: 6, times: times, deviceMajor: 259, deviceMinor: 70000)),
            EXT4NewEntry(path: "/dev/fifo", metadata: EXT4Metadata(type: .fifo, permissions: 0o644, times: times)),
            EXT4NewEntry(path: "/dev/sock", metadata: EXT4Metadata(type: .socket, permissions: 0o755, times: times)),
            EXT4NewEntry(path: "/small-attrs", metadata: EXT4Metadata(type: .regular, permissions: 0o644, uid: 70000, gid: 80000, times: times,
                                                                      xattrs: [EXT4Xattr(fullName: "user.a", value: Array("1".utf8)),
                                                                               EXT4Xattr(fullName: "security.selinux", value: Array("system_u:object_r:etc_t:s0\0".utf8))]),
                         content: EXT4BytesContent(Array("x".utf8))),
            EXT4NewEntry(path: "/block-attrs", metadata: EXT4Metadata(type: .directory, permissions: 0o755, times: times, xattrs: [big])),
        ]
        try S.format(entries, image: image, size: 16 << 20)
        try S.assertFsckClean(image)
        let reader = try S.reader(image)
        var byPath: [String: EXT4Entry] = [:]
        for e in try reader.entries() { byPath[e.path] = e }
        for entry in entries {
            let got = try XCTUnwrap(byPath[entry.path], entry.path)
            XCTAssertEqual(got.metadata.type, entry.metadata.type, entry.path)
            XCTAssertEqual(got.metadata.permissions, entry.metadata.permissions, entry.path)
            XCTAssertEqual(got.metadata.uid, entry.metadata.uid, entry.path)
            XCTAssertEqual(got.metadata.gid, entry.metadata.gid, entry.path)
            XCTAssertEqual(got.metadata.times, entry.metadata.times, entry.path)
            XCTAssertEqual(Set(got.metadata.xattrs), Set(entry.metadata.xattrs), entry.path)
            XCTAssertEqual(got.metadata.deviceMajor, entry.metadata.deviceMajor, entry.path)
            XCTAssertEqual(got.metadata.deviceMinor, entry.metadata.deviceMinor, entry.path)
        }
        let d = try DebugfsStat(image: image, path: "/small-attrs")
        XCTAssertEqual(d.uid, 70000)
        XCTAssertEqual(d.gid, 80000)
        XCTAssertEqual(d.times["mtime"], times.modification)
        XCTAssertTrue(try S.debugfs(image, "ea_list /small-attrs").contains("user.a (1) = \"1\""))
        XCTAssertTrue(try S.debugfs(image, "ea_list /block-attrs").contains("user.big (1000)"))
        XCTAssertTrue(try S.debugfs(image, "stat /dev/big").contains("Device major/minor number: 259:70000"))
    }

    func testSameInputGivesIdenticalBytes() throws {
        let dir = try S.tempDir(self)
        let tree = dir + "/tree"
        try SampleTree.build(at: tree, bigSize: 1 << 20)
        let first = try EXT4HostTree.entries(folder: tree, destination: workload, time: S.fixedTime)
        try S.format(first, image: dir + "/a.img", size: 48 << 20)
        // Host times change and entries come in another order: the output must not change.
        try S.run("touch", ["-d", "2001-02-03 04:05:06", tree + "/hello.txt", tree + "/dir"])
        let second = try EXT4HostTree.entries(folder: tree, destination: workload, time: S.fixedTime).reversed()
        try S.format(Array(second), image: dir + "/b.img", size: 48 << 20)
        XCTAssertEqual(try S.sha256(dir + "/a.img"), try S.sha256(dir + "/b.img"))
        try S.format(first, image: dir + "/c.img", size: 48 << 20, time: EXT4Timestamp(seconds: 1))
        XCTAssertNotEqual(try S.sha256(dir + "/a.img"), try S.sha256(dir + "/c.img"))
    }

    /// Several groups: superblock backups, metadata spread over group boundaries.
    func testMultiGroupFileSystemAndBackupSuperblock() throws {
        let dir = try S.tempDir(self)
        let image = dir + "/fs.img"
        let t = EXT4Times(all: S.fixedTime)
        var entries: [EXT4NewEntry] = []
        for i in 0..<20 {
            entries.append(EXT4NewEntry(path: "/f\(i)", metadata: EXT4Metadata(type: .regular, permissions: 0o644, times: t),
                                        content: EXT4BytesContent(S.bytes(count: 100_000 * (i + 1), seed: UInt64(i)))))
        }
        try S.format(entries, image: image, size: (1 << 30) + (5 << 20))
        try S.assertFsckClean(image)
        let backup = try S.run("e2fsck", ["-fn", "-b", "32768", "-B", "4096", image], allowFailure: true)
        XCTAssertEqual(backup.status, 0, backup.stdout)
        XCTAssertEqual(try S.dump(image, "/f19", to: dir + "/out"), Data(S.bytes(count: 2_000_000, seed: 19)))
    }

    /// One-block extents turn an 8 MiB file into 2048 extents: a tree of depth 2 (6 leaves
    /// under 2 index blocks), which e2fsck must accept and both debugfs and our reader must follow.
    func testDeepExtentTrees() throws {
        let dir = try S.tempDir(self)
        let image = dir + "/fs.img"
        let t = EXT4Times(all: S.fixedTime)
        let content = S.bytes(count: 8 << 20, seed: 5)
        let entries = [
            EXT4NewEntry(path: "/fragmented", metadata: EXT4Metadata(type: .regular, permissions: 0o644, times: t), content: EXT4BytesContent(content)),
            EXT4NewEntry(path: "/medium", metadata: EXT4Metadata(type: .regular, permissions: 0o644, times: t),
                         content: EXT4BytesContent(Array(content.prefix(100 * 4096 + 5)))),
        ]
        let file = try S.sparseFile(image, size: 32 << 20)
        var options = EXT4FormatOptions(size: 32 << 20, uuid: S.fixedUUID, label: [], timestamp: S.fixedTime, name: image)
        options.maxExtentBlocks = 1
        try EXT4Formatter(options: options).format(entries, to: EXT4FileRange(file: file, size: 32 << 20))
        file.close()
        try S.assertFsckClean(image)
        let tree = try S.debugfs(image, "ex /fragmented")
        XCTAssertTrue(tree.contains(" 0/ 2 "), "expected an extent tree of depth 2: \(tree.prefix(300))")
        XCTAssertEqual(try S.dump(image, "/fragmented", to: dir + "/out"), Data(content))
        let reader = try S.reader(image)
        for e in try reader.entries() where e.metadata.type == .regular {
            let f = try reader.openFile(e.inodeNumber)
            var back = [UInt8](repeating: 0, count: Int(f.size))
            try back.withUnsafeMutableBytes { try f.read(into: $0, at: 0) }
            XCTAssertEqual(back, Array(content.prefix(Int(f.size))), e.path)
        }
    }

    /// All-zero blocks become holes: they read back as zeros and take no space.
    func testZeroBlocksBecomeHoles() throws {
        let dir = try S.tempDir(self)
        let image = dir + "/fs.img"
        let t = EXT4Times(all: S.fixedTime)
        var content = [UInt8](repeating: 0, count: (3 << 20) + 1000)
        content.replaceSubrange((1 << 20)..<((1 << 20) + 5000), with: S.bytes(count: 5000, seed: 3))   // straddles 2 blocks
        content[content.count - 1] = 7                                                              // short last block
        let zeros = [UInt8](repeating: 0, count: 100_000)
        let entries = [
            EXT4NewEntry(path: "/sparse", metadata: EXT4Metadata(type: .regular, permissions: 0o644, times: t), content: EXT4BytesContent(content)),
            EXT4NewEntry(path: "/zeros", metadata: EXT4Metadata(type: .regular, permissions: 0o644, times: t), content: EXT4BytesContent(zeros)),
        ]
        try S.format(entries, image: image, size: 16 << 20)
        try S.assertFsckClean(image)
        XCTAssertEqual(try S.dump(image, "/sparse", to: dir + "/o1"), Data(content))
        XCTAssertEqual(try S.dump(image, "/zeros", to: dir + "/o2"), Data(zeros))
        XCTAssertTrue(try S.debugfs(image, "stat /sparse").contains("Blockcount: 24\n"))   // 3 blocks of 8 sectors
        XCTAssertTrue(try S.debugfs(image, "stat /zeros").contains("Blockcount: 0\n"))
    }

    /// A 300 MiB file streams through without being held in memory.
    func testLargeFileStreams() throws {
        let dir = try S.tempDir(self)
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        let big = tree + "/large.bin"
        // Deterministic content: each 4 KiB block is a SHA-256 chain of its index, repeated.
        let script = """
        import hashlib,sys
        with open(sys.argv[1],'wb') as f:
            for i in range(300*256):
                f.write(hashlib.sha256(i.to_bytes(8,'little')).digest()*128)
        """
        try S.run("python3", ["-c", script, big])
        let image = dir + "/fs.img"
        let entries = try EXT4HostTree.entries(folder: tree, destination: workload, time: S.fixedTime)
        let before = Self.peakRSS()
        try S.format(entries, image: image, size: 400 << 20)
        let growth = Self.peakRSS() - before
        XCTAssertLessThan(growth, 64 << 20, "peak RSS grew by \(growth) bytes")
        try S.assertFsckClean(image)
        _ = try S.run("debugfs", ["-R", "dump /workload/large.bin \(dir)/out", image])
        XCTAssertEqual(try S.sha256(dir + "/out"), try S.sha256(big))
    }

    static func peakRSS() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }

    func testRefusesWhatDoesNotFit() throws {
        let dir = try S.tempDir(self)
        let t = EXT4Times(all: S.fixedTime)
        let tooBig = [EXT4NewEntry(path: "/big", metadata: EXT4Metadata(type: .regular, permissions: 0o644, times: t),
                                   content: EXT4BytesContent(S.bytes(count: 3 << 20, seed: 1)))]
        XCTAssertThrowsError(try S.format(tooBig, image: dir + "/a.img", size: 2 << 20)) { error in
            XCTAssertTrue("\(error)".contains("do not fit"), "\(error)")
        }
        let orphan = [EXT4NewEntry(path: "/missing/child", metadata: EXT4Metadata(type: .regular, permissions: 0o644, times: t))]
        XCTAssertThrowsError(try S.format(orphan, image: dir + "/b.img", size: 8 << 20)) { error in
            XCTAssertTrue("\(error)".contains("parent directory"), "\(error)")
        }
        let lying = [EXT4NewEntry(path: "/short", metadata: EXT4Metadata(type: .regular, permissions: 0o644, times: t),
                                  content: LyingContent())]
        XCTAssertThrowsError(try S.format(lying, image: dir + "/c.img", size: 8 << 20)) { error in
            XCTAssertTrue("\(error)".contains("/short"), "\(error)")
        }
    }

    /// Claims 10 bytes, delivers 5.
    struct LyingContent: EXT4FileContent {
        var size: UInt64 { 10 }
        func stream(to sink: (UnsafeRawBufferPointer) throws -> Void) throws {
            try [1, 2, 3, 4, 5].withUnsafeBytes { try sink($0) }
        }
    }
}
