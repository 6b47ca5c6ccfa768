import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Checks of an updated data partition against its oracles (debugfs, e2fsck, dumpe2fs) and of
/// the bytes around it.
enum Checks {
    /// One entry of a host folder.
    struct HostEntry {
        let relative: String
        let type: String      // as debugfs names it: regular, directory, symlink
        let mode: UInt16
        let size: UInt64
        let target: String?
    }

    /// Every entry under `root` (not following symlinks), sorted.
    static func hostEntries(_ root: String) throws -> [HostEntry] {
        var out: [HostEntry] = []
        func visit(_ rel: String) throws {
            let full = rel.isEmpty ? root : root + "/" + rel
            for name in try FileManager.default.contentsOfDirectory(atPath: full).sorted() {
                let r = rel.isEmpty ? name : rel + "/" + name
                var st = stat()
                guard lstat(root + "/" + r, &st) == 0 else { throw TestFailure("lstat \(r)") }
                let mode = UInt16(truncatingIfNeeded: st.st_mode & 0o7777)
                switch st.st_mode & S_IFMT {
                case S_IFDIR:
                    out.append(HostEntry(relative: r, type: "directory", mode: mode, size: 0, target: nil))
                    try visit(r)
                case S_IFLNK:
                    let t = try FileManager.default.destinationOfSymbolicLink(atPath: root + "/" + r)
                    out.append(HostEntry(relative: r, type: "symlink", mode: mode, size: UInt64(st.st_size), target: t))
                default:
                    out.append(HostEntry(relative: r, type: "regular", mode: mode, size: UInt64(st.st_size), target: nil))
                }
            }
        }
        try visit("")
        return out
    }

    static func timeField(_ seconds: UInt64) -> String { String(format: "0x%08x:00000000", UInt32(truncatingIfNeeded: seconds)) }

    /// `/workload` of the file system in `image` is exactly `host`: same entries (nothing more),
    /// same bytes, modes and symlink targets, owner 0:0, every time `time`.
    static func assertWorkload(in image: String, equals host: String, time: UInt64, scratch: String,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let entries = try hostEntries(host)
        let stats = try Debugfs.stat(image, ["/workload"] + entries.map { "/workload/" + $0.relative })
        let t = timeField(time)
        var hostRoot = stat()
        stat(host, &hostRoot)
        let rootStat = stats["/workload"]
        XCTAssertEqual(rootStat?.type, "directory", "/workload", file: file, line: line)
        XCTAssertEqual(rootStat?.mode, UInt16(truncatingIfNeeded: hostRoot.st_mode & 0o7777), "/workload mode", file: file, line: line)
        XCTAssertEqual(rootStat?.fields["User"], "0", "/workload owner", file: file, line: line)
        XCTAssertEqual(rootStat?.fields["mtime"], timeField(time), "/workload mtime", file: file, line: line)
        var failures = 0
        for e in entries {
            let path = "/workload/" + e.relative
            guard let s = stats[path] else {
                XCTFail("\(path): debugfs has no stat", file: file, line: line); failures += 1; continue
            }
            let expected: [String: String] = ["Type": e.type, "User": "0", "Group": "0",
                                              "mtime": t, "atime": t, "ctime": t, "crtime": t]
            for (k, v) in expected where s.fields[k] != v {
                XCTFail("\(path): \(k) is \(s.fields[k] ?? "missing"), expected \(v)", file: file, line: line)
                failures += 1
            }
            if e.type != "symlink", s.mode != e.mode {
                XCTFail("\(path): mode \(String(s.mode ?? 0, radix: 8)), expected \(String(e.mode, radix: 8))", file: file, line: line)
                failures += 1
            }
            if e.type != "directory", s.fields["Size"] != "\(e.size)" {
                XCTFail("\(path): size \(s.fields["Size"] ?? "?"), expected \(e.size)", file: file, line: line)
                failures += 1
            }
            if failures > 20 { XCTFail("too many differences, stopping", file: file, line: line); return }
        }
        // Content, symlink targets and the exact set of names, through rdump.
        let dump = scratch + "/rdump-workload"
        try? FileManager.default.removeItem(atPath: dump)
        defer { try? FileManager.default.removeItem(atPath: dump) }
        try Debugfs.rdump(image, "/workload", into: dump)
        let dumped = try hostEntries(dump + "/workload")
        XCTAssertEqual(dumped.map(\.relative), entries.map(\.relative), "names under /workload", file: file, line: line)
        for e in entries {
            let a = host + "/" + e.relative, b = dump + "/workload/" + e.relative
            switch e.type {
            case "symlink":
                XCTAssertEqual(try? FileManager.default.destinationOfSymbolicLink(atPath: b), e.target,
                               "/workload/\(e.relative): symlink target", file: file, line: line)
            case "regular":
                if e.size > 8 << 20 {
                    let r = try Run.tool("cmp", [a, b], allowFailure: true)
                    XCTAssertEqual(r.status, 0, "/workload/\(e.relative): content differs: \(r.stdout)", file: file, line: line)
                } else if (try? Data(contentsOf: URL(fileURLWithPath: a))) != (try? Data(contentsOf: URL(fileURLWithPath: b))) {
                    XCTFail("/workload/\(e.relative): content differs", file: file, line: line)
                    failures += 1
                }
            default: break
            }
            if failures > 20 { XCTFail("too many differences, stopping", file: file, line: line); return }
        }
    }

    /// The pre-existing tree outside `/workload` reads the same in `new` as in `old`: stat
    /// fields (type, mode, owner, size, links, the four times with nanoseconds, symlink
    /// targets), xattrs, and content (rdump + diff -r).
    static func assertKeptTree(old: String, new: String, scratch: String,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let before = try Debugfs.stat(old, BaseDisk.keptPaths)
        let after = try Debugfs.stat(new, BaseDisk.keptPaths)
        for p in BaseDisk.keptPaths {
            guard var a = before[p], var b = after[p] else {
                XCTFail("\(p): missing from debugfs output", file: file, line: line); continue
            }
            XCTAssertNotNil(a.fields["mtime"], "\(p): debugfs stat not parsed: \(a)", file: file, line: line)
            XCTAssertNotNil(a.fields["Mode"], "\(p): debugfs stat not parsed: \(a)", file: file, line: line)
            if a.type == "directory" {
                // A directory's size is its block count, a layout choice of the formatter;
                // its entries are compared below.
                a.fields["Size"] = nil; b.fields["Size"] = nil
            }
            if p == "/" { a.fields["Links"] = nil; b.fields["Links"] = nil }
            XCTAssertEqual(a, b, "\(p) changed", file: file, line: line)
        }
        XCTAssertEqual(after["/var/lib/app.db"]?.fields["User"], "70000", file: file, line: line)
        XCTAssertEqual(after["/home/user/notes.txt"]?.fields["Group"], "1001", file: file, line: line)
        XCTAssertTrue(after["/etc/hostname"]?.xattrs.contains { $0.hasPrefix("user.comment (14)") } ?? false,
                      "user.comment xattr: \(after["/etc/hostname"]?.xattrs ?? [])", file: file, line: line)
        XCTAssertTrue(try Debugfs.eaGet(new, "/etc/hostname", "trusted.big").contains(BaseDisk.bigXattrValue),
                      "trusted.big xattr (in a block)", file: file, line: line)
        XCTAssertEqual(after["/etc/os-release"]?.fields["mtime"], before["/etc/os-release"]?.fields["mtime"], file: file, line: line)
        XCTAssertNotEqual(before["/etc/os-release"]?.fields["mtime"]?.hasSuffix(":00000000"), true,
                          "test setup: os-release should have nanoseconds", file: file, line: line)
        let oldDump = scratch + "/rdump-old", newDump = scratch + "/rdump-new"
        defer { try? FileManager.default.removeItem(atPath: oldDump); try? FileManager.default.removeItem(atPath: newDump) }
        for d in ["/etc", "/home", "/var"] {
            try Debugfs.rdump(old, d, into: oldDump)
            try Debugfs.rdump(new, d, into: newDump)
        }
        let diff = try Run.tool("diff", ["-r", "--no-dereference", oldDump, newDump], allowFailure: true)
        XCTAssertEqual(diff.status, 0, "kept tree differs: \(diff.stdout)", file: file, line: line)
    }

    /// Every block dumpe2fs reports free, and everything after the last block, reads as zeros;
    /// and no stale bytes of the old partition are left anywhere in it.
    static func assertNoStaleBytes(_ image: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertFalse(try Files.contains(image, BaseDisk.staleMarker), "old free-space bytes survived", file: file, line: line)
        XCTAssertFalse(try Files.contains(image, BaseDisk.oldWorkloadMarker), "old workload bytes survived", file: file, line: line)
        let fd = open(image, O_RDONLY)
        guard fd >= 0 else { throw TestFailure("open \(image)") }
        defer { close(fd) }
        let size = Files.size(image)
        let id = try Debugfs.identity(image)
        let bs = id.blockSize
        var ranges = try Debugfs.freeBlocks(image).map { ($0.lowerBound * bs)..<(($0.upperBound + 1) * bs) }
        if id.blockCount * bs < size { ranges.append((id.blockCount * bs)..<size) }
        XCTAssertFalse(ranges.isEmpty, "no free blocks reported", file: file, line: line)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        for r in ranges {
            var pos = r.lowerBound
            while pos < r.upperBound {
                let n = Int(min(UInt64(buffer.count), r.upperBound - pos))
                let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, n, off_t(pos)) }
                guard got == n else { throw TestFailure("pread \(image) at \(pos)") }
                if buffer[0..<n].contains(where: { $0 != 0 }) {
                    XCTFail("free space at byte \(pos) of the data partition is not zero", file: file, line: line)
                    return
                }
                pos += UInt64(n)
            }
        }
    }

    /// Everything of `after` outside `partition` equals `before` (same size too).
    static func assertOutsideUnchanged(before: String, after: String, partition: PartitionInfo,
                                       file: StaticString = #filePath, line: UInt = #line) throws {
        let size = Files.size(before)
        XCTAssertEqual(Files.size(after), size, "disk size", file: file, line: line)
        XCTAssertEqual(try Files.sha256(after, offset: 0, length: partition.offset),
                       try Files.sha256(before, offset: 0, length: partition.offset),
                       "bytes before the data partition differ", file: file, line: line)
        XCTAssertEqual(try Files.sha256(after, offset: partition.end, length: size - partition.end),
                       try Files.sha256(before, offset: partition.end, length: size - partition.end),
                       "bytes after the data partition differ", file: file, line: line)
    }
}
