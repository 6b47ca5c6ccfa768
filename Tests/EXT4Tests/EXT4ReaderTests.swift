import Foundation
import XCTest
@testable import EXT4
import CVMSupport

/// Reads file systems made by mke2fs (the oracle) and compares with the host tree and debugfs.
final class EXT4ReaderTests: XCTestCase {
    typealias S = EXT4TestSupport

    /// Host view of one path.
    struct HostItem {
        var type: EXT4FileType
        var permissions: UInt16
        var uid: UInt32
        var gid: UInt32
        var size: UInt64
        var mtime: Int64
        var inode: UInt64
        var target: String?
    }

    func hostTree(_ root: String) throws -> [String: HostItem] {
        var out: [String: HostItem] = [:]
        for sub in try FileManager.default.subpathsOfDirectory(atPath: root) {
            var st = stat()
            XCTAssertEqual(lstat(root + "/" + sub, &st), 0)
            let type: EXT4FileType
            switch st.st_mode & S_IFMT {
            case S_IFDIR: type = .directory
            case S_IFLNK: type = .symlink
            case S_IFIFO: type = .fifo
            default: type = .regular
            }
            let target = type == .symlink ? try FileManager.default.destinationOfSymbolicLink(atPath: root + "/" + sub) : nil
            out["/" + sub] = HostItem(type: type, permissions: UInt16(st.st_mode & 0o7777), uid: st.st_uid, gid: st.st_gid,
                                      size: UInt64(st.st_size), mtime: Int64(st.st_mtim.tv_sec), inode: UInt64(st.st_ino),
                                      target: target)
        }
        return out
    }

    /// Reads a whole file through the chunked reader, in odd-sized pieces.
    func content(_ reader: EXT4Reader, _ inode: UInt32) throws -> [UInt8] {
        let file = try reader.openFile(inode)
        var out: [UInt8] = []
        var offset: UInt64 = 0
        while offset < file.size {
            let n = Int(min(777_777, file.size - offset))
            var chunk = [UInt8](repeating: 0, count: n)
            try chunk.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
            out += chunk
            offset += UInt64(n)
        }
        return out
    }

    /// Builds the sample tree, runs mke2fs with `options`, and checks everything the reader reports.
    func checkReader(mkfsOptions: [String], size: String = "64M", afterMkfs: ((String) throws -> Void)? = nil) throws {
        let dir = try S.tempDir(self)
        let tree = dir + "/tree"
        let xattrs = try SampleTree.build(at: tree)
        let image = dir + "/fs.img"
        try S.run("mke2fs", ["-F", "-q"] + mkfsOptions + ["-U", S.fixedUUIDString, "-L", "sample", "-d", tree, image, size])
        try afterMkfs?(image)
        let reader = try S.reader(image)
        XCTAssertEqual(reader.label, "sample")
        XCTAssertEqual(reader.uuid, S.fixedUUID)

        let host = try hostTree(tree)
        let entries = try reader.entries()
        var byPath: [String: EXT4Entry] = [:]
        for e in entries { byPath[e.path] = e }
        XCTAssertEqual(entries.first?.path, "/")
        XCTAssertNotNil(byPath["/lost+found"])
        // Every host path is present with the same type, mode, owner, size, target and content.
        for (path, h) in host {
            guard let e = byPath[path] else { XCTFail("\(path) missing"); continue }
            XCTAssertEqual(e.metadata.type, h.type, path)
            XCTAssertEqual(e.metadata.permissions, h.permissions, path)
            XCTAssertEqual(e.metadata.uid, h.uid, path)
            XCTAssertEqual(e.metadata.gid, h.gid, path)
            XCTAssertEqual(e.metadata.times.modification.seconds, h.mtime, path)
            if h.type == .regular {
                XCTAssertEqual(e.size, h.size, path)
                let expected = [UInt8](try Data(contentsOf: URL(fileURLWithPath: tree + path)))
                XCTAssertEqual(try content(reader, e.inodeNumber), expected, path)
            }
            if h.type == .symlink { XCTAssertEqual(e.symlinkTarget.map { String(decoding: $0, as: UTF8.self) }, h.target, path) }
        }
        XCTAssertEqual(Set(byPath.keys), Set(host.keys).union(["/", "/lost+found"]))
        // Hard links: one inode, two paths.
        let a = try XCTUnwrap(byPath["/dir/hardlink-a"]), b = try XCTUnwrap(byPath["/dir/hardlink-b"])
        XCTAssertEqual(a.inodeNumber, b.inodeNumber)
        XCTAssertEqual(a.linkCount, 2)
        // Owners and all four times agree with debugfs.
        for path in ["/hello.txt", "/dir/sub", "/short-link", "/big.bin", "/" + SampleTree.unicodeName, "/empty dir"] {
            let e = try XCTUnwrap(byPath[path])
            let d = try DebugfsStat(image: image, path: path)
            XCTAssertEqual(e.metadata.mode, d.mode | e.metadata.type.modeBits, path)
            XCTAssertEqual(e.metadata.uid, d.uid, path)
            XCTAssertEqual(e.metadata.gid, d.gid, path)
            XCTAssertEqual(e.size, d.size, path)
            if let t = d.times["mtime"] { XCTAssertEqual(e.metadata.times.modification, t, path) }
            if let t = d.times["ctime"] { XCTAssertEqual(e.metadata.times.change, t, path) }
            if let t = d.times["atime"] { XCTAssertEqual(e.metadata.times.access, t, path) }
            if let t = d.times["crtime"] { XCTAssertEqual(e.metadata.times.creation, t, path) }
        }
        if xattrs {
            let x = try XCTUnwrap(byPath["/xattr.txt"]).metadata.xattrs
            XCTAssertEqual(x.first { $0.fullName == "user.test" }?.value, Array("value".utf8))
            XCTAssertEqual(x.first { $0.fullName == "user.big" }?.value, S.bytes(count: 300, seed: 9).map { $0 | 1 })
            XCTAssertEqual(try XCTUnwrap(byPath["/dir"]).metadata.xattrs.first { $0.fullName == "user.dir" }?.value,
                           Array("on a directory".utf8))
        }
    }

    func testReadsDefaultExt4() throws {
        try checkReader(mkfsOptions: ["-t", "ext4"])
    }

    /// ext2 with 1 KiB blocks and 128-byte inodes: block maps with double-indirect blocks,
    /// first data block 1, no extra inode fields.
    func testReadsExt2BlockMaps() throws {
        try checkReader(mkfsOptions: ["-t", "ext2", "-b", "1024", "-I", "128"])
    }

    /// ext3 with 4 KiB blocks (indirect block maps, journal).
    func testReadsExt3() throws {
        try checkReader(mkfsOptions: ["-t", "ext3"])
    }

    func testReadsInlineData() throws {
        try checkReader(mkfsOptions: ["-t", "ext4", "-O", "inline_data"])
    }

    /// Directories indexed by `e2fsck -D` (htree) are read through their leaf blocks.
    func testReadsHtreeDirectories() throws {
        let dir = try S.tempDir(self)
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree + "/many", withIntermediateDirectories: true)
        for i in 0..<1200 { try S.write(Array("\(i)".utf8), to: tree + "/many/file-\(i)-with-a-longer-name") }
        let image = dir + "/fs.img"
        try S.run("mke2fs", ["-F", "-q", "-t", "ext4", "-d", tree, image, "32M"])
        let fix = try S.run("e2fsck", ["-fyD", image], allowFailure: true)
        XCTAssertLessThanOrEqual(fix.status, 1, fix.stdout)
        XCTAssertTrue(try S.debugfs(image, "htree /many").contains("Root node dump"), "directory is not indexed")
        let reader = try S.reader(image)
        let many = try XCTUnwrap(try reader.entries().first { $0.path == "/many" })
        let names = try reader.directoryEntries(many.inodeNumber).map { String(decoding: $0.name, as: UTF8.self) }
        XCTAssertEqual(names.count, 1200)
        XCTAssertEqual(Set(names), Set((0..<1200).map { "file-\($0)-with-a-longer-name" }))
    }
}
