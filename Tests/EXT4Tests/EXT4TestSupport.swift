import Foundation
import XCTest
@testable import EXT4
import CVMSupport

/// Helpers for the ext4 tests: running e2fsprogs oracles, building host trees, formatting.
enum EXT4TestSupport {
    struct CommandResult {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs a tool found on PATH (never through a shell).
    @discardableResult
    static func run(_ tool: String, _ args: [String], allowFailure: Bool = false,
                    file: StaticString = #filePath, line: UInt = #line) throws -> CommandResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [tool] + args
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = (env["PATH"] ?? "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        env["E2FSPROGS_FAKE_TIME"] = nil
        p.environment = env
        let dir = FileManager.default.temporaryDirectory
        let outURL = dir.appendingPathComponent("ext4-run-\(UUID().uuidString).out")
        let errURL = dir.appendingPathComponent("ext4-run-\(UUID().uuidString).err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outURL); try? FileManager.default.removeItem(at: errURL) }
        p.standardOutput = try FileHandle(forWritingTo: outURL)
        p.standardError = try FileHandle(forWritingTo: errURL)
        try p.run()
        p.waitUntilExit()
        let result = CommandResult(status: p.terminationStatus,
                                   stdout: String(decoding: (try? Data(contentsOf: outURL)) ?? Data(), as: UTF8.self),
                                   stderr: String(decoding: (try? Data(contentsOf: errURL)) ?? Data(), as: UTF8.self))
        if !allowFailure && result.status != 0 {
            XCTFail("\(tool) \(args.joined(separator: " ")) failed (\(result.status)): \(result.stdout) \(result.stderr)", file: file, line: line)
            throw CVMError.io("\(tool) failed")
        }
        return result
    }

    /// A fresh temporary folder, removed when the test ends.
    static func tempDir(_ testCase: XCTestCase) throws -> String {
        let path = NSTemporaryDirectory() + "ext4-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        testCase.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// Deterministic pseudo-random bytes (xorshift).
    static func bytes(count: Int, seed: UInt64) -> [UInt8] {
        var state = seed | 1
        var out = [UInt8](repeating: 0, count: count)
        var i = 0
        while i < count {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            var v = state
            for _ in 0..<8 where i < count { out[i] = UInt8(truncatingIfNeeded: v); v >>= 8; i += 1 }
        }
        return out
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// A new sparse file of `size` bytes to format into.
    static func sparseFile(_ path: String, size: UInt64) throws -> FileDescriptor {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CVMError.io("\(path): cannot create") }
        let file = FileDescriptor(fd: fd, path: path)
        try file.truncate(to: size)
        return file
    }

    /// Formats `entries` into a new image file of `size` bytes.
    @discardableResult
    static func format(_ entries: [EXT4NewEntry], image: String, size: UInt64, uuid: [UInt8] = fixedUUID,
                       label: String = "data", time: EXT4Timestamp = fixedTime) throws -> EXT4FormatSummary {
        let file = try sparseFile(image, size: size)
        defer { file.close() }
        let output = EXT4FileRange(file: file, size: size)
        let formatter = try EXT4Formatter(options: EXT4FormatOptions(size: size, uuid: uuid, label: Array(label.utf8),
                                                                      timestamp: time, name: image))
        return try formatter.format(entries, to: output)
    }

    static let fixedUUID: [UInt8] = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x80, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07]
    static let fixedUUIDString = "12345678-9abc-4def-8001-020304050607"
    static let fixedTime = EXT4Timestamp(seconds: 1_700_000_000, nanoseconds: 0)

    /// Opens an image file with the reader.
    static func reader(_ image: String) throws -> EXT4Reader {
        let file = try FileDescriptor.openForReading(image)
        return try EXT4Reader(source: EXT4FileRange(file: file, size: try file.size()), name: image)
    }

    /// `e2fsck -fn`; fails the test unless it reports a clean file system.
    static func assertFsckClean(_ image: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try run("e2fsck", ["-fn", image], allowFailure: true)
        XCTAssertEqual(r.status, 0, "e2fsck -fn: \(r.stdout) \(r.stderr)", file: file, line: line)
        if ProcessInfo.processInfo.environment["EXT4_TEST_VERBOSE"] != nil { print("e2fsck -fn \(image):\n\(r.stdout)\(r.stderr)") }
        if let keep = ProcessInfo.processInfo.environment["EXT4_TEST_KEEP"] { _ = try? run("cp", ["--sparse=always", image, keep]) }
    }

    static func debugfs(_ image: String, _ request: String) throws -> String {
        try run("debugfs", ["-R", request, image]).stdout
    }

    /// Extracts `path` from the image with `debugfs dump` and returns its bytes.
    static func dump(_ image: String, _ path: String, to host: String) throws -> Data {
        try run("debugfs", ["-R", "dump \"\(path)\" \(host)", image])
        return try Data(contentsOf: URL(fileURLWithPath: host))
    }

    static func sha256(_ path: String) throws -> String {
        String(try run("sha256sum", [path]).stdout.prefix(64))
    }

    /// Sets an extended attribute on a host file (the C call is not in Swift's Glibc module,
    /// so Python's `os.setxattr` does it). Returns false when the host refuses.
    static func setXattr(_ path: String, _ name: String, _ value: [UInt8]) -> Bool {
        let hex = value.map { String(format: "%02x", $0) }.joined()
        let script = "import os,sys; os.setxattr(sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), follow_symlinks=False)"
        return (try? run("python3", ["-c", script, path, name, hex], allowFailure: true).status) == 0
    }
}

/// A sample host tree covering the cases the reader and formatter must handle.
enum SampleTree {
    static let longTarget = String(repeating: "long/", count: 40) + "target.txt"   // 210 bytes: a slow symlink
    static let unicodeName = "ünïcødé – ファイル.txt"

    /// Builds the tree at `root`. Owners and modes vary so carrying them over is visible.
    /// Returns whether extended attributes could be set on the host.
    @discardableResult
    static func build(at root: String, bigSize: Int = 5 << 20 | 17) throws -> Bool {
        typealias S = EXT4TestSupport
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/dir/sub/deeper", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/empty dir", withIntermediateDirectories: true)
        try S.write(Array("hello\n".utf8), to: root + "/hello.txt")
        try S.write([], to: root + "/empty")
        try S.write([0x41], to: root + "/one")
        try S.write(S.bytes(count: 4096, seed: 2), to: root + "/exact4096")
        try S.write(S.bytes(count: 4097, seed: 3), to: root + "/just-over-4096")
        try S.write(S.bytes(count: bigSize, seed: 4), to: root + "/big.bin")
        try S.write(Array("spaces\n".utf8), to: root + "/with space.txt")
        try S.write(Array("unicode\n".utf8), to: root + "/" + unicodeName)
        try S.write(Array("leaf\n".utf8), to: root + "/dir/sub/deeper/leaf.txt")
        try S.write(Array("linked\n".utf8), to: root + "/dir/hardlink-a")
        try fm.linkItem(atPath: root + "/dir/hardlink-a", toPath: root + "/dir/hardlink-b")
        try fm.createSymbolicLink(atPath: root + "/short-link", withDestinationPath: "hello.txt")
        try fm.createSymbolicLink(atPath: root + "/long-link", withDestinationPath: longTarget)
        try S.run("mkfifo", [root + "/fifo"])
        try S.write(Array("#!/bin/sh\n".utf8), to: root + "/setuid-tool")
        try S.write(Array("attrs\n".utf8), to: root + "/xattr.txt")
        chmod(root + "/setuid-tool", 0o4755)
        chmod(root + "/empty", 0o600)
        chmod(root + "/big.bin", 0o750)
        chmod(root + "/empty dir", 0o1777)
        chown(root + "/hello.txt", 1000, 1001)
        chown(root + "/dir/sub", 1234, 5678)
        lchown(root + "/short-link", 42, 43)
        let small = S.setXattr(root + "/xattr.txt", "user.test", Array("value".utf8))
        let big = S.setXattr(root + "/xattr.txt", "user.big", S.bytes(count: 300, seed: 9).map { $0 | 1 })
        _ = S.setXattr(root + "/dir", "user.dir", Array("on a directory".utf8))
        return small && big
    }
}

/// What `debugfs -R stat` reports for one inode.
struct DebugfsStat {
    var mode: UInt16 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    var size: UInt64 = 0
    var links: Int = 0
    var times: [String: EXT4Timestamp] = [:]
    var fastLinkTarget: String?

    init(image: String, path: String) throws {
        let text = try EXT4TestSupport.debugfs(image, "stat \"\(path)\"")
        func int(after label: String) -> UInt64? {
            guard let r = text.range(of: label) else { return nil }
            let rest = text[r.upperBound...].drop { $0 == " " }
            return UInt64(String(rest.prefix { $0.isNumber }))
        }
        mode = UInt16(String(text.range(of: "Mode:").map { text[$0.upperBound...].drop { $0 == " " }.prefix { $0.isNumber } } ?? ""), radix: 8) ?? 0
        uid = UInt32(int(after: "User:") ?? 0)
        gid = UInt32(int(after: "Group:") ?? 0)
        size = int(after: "Size:") ?? 0
        links = Int(int(after: "Links:") ?? 0)
        for line in text.split(separator: "\n") {
            let t = line.trimmingCharacters(in: .whitespaces)
            for name in ["ctime", "atime", "mtime", "crtime"] where t.hasPrefix(name + ": 0x") {
                let parts = t.dropFirst(name.count + 4).prefix { $0 != " " }.split(separator: ":")
                if parts.count == 2, let base = UInt32(parts[0], radix: 16), let extra = UInt32(parts[1], radix: 16) {
                    times[name] = EXT4Timestamp(base: base, extra: extra)
                }
            }
            if t.hasPrefix("Fast link dest: ") {
                fastLinkTarget = String(t.dropFirst("Fast link dest: ".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
        }
    }
}
