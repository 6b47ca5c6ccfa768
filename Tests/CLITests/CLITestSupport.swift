import Foundation
import XCTest
import CVMTestData
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs the built `cvm-cli` and the oracle tools (qemu-img, sgdisk, mke2fs, tar, gzip) for the
/// end-to-end tests. Children are started with posix_spawn and reaped with wait4 so the tests
/// see the exit status and death by signal exactly, and can signal a running conversion.
enum CLI {
    struct Result {
        /// Exit status; 128+signal when the process died from a signal.
        let status: Int32
        /// The signal that killed the process, if any.
        let signal: Int32?
        let stdout: String
        let stderr: String
        /// Peak resident set size in KiB: from `/usr/bin/time` when the run was measured, else
        /// wait4's ru_maxrss (which also counts the test process's RSS at spawn: posix_spawn
        /// uses vfork, and Linux carries the pre-exec high-water mark into the child).
        let peakRSSKiB: Int
        let seconds: Double

        var stderrLines: [String] { stderr.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty } }
        var peakRSSMiB: Double { Double(peakRSSKiB) / 1024 }
    }

    /// The `cvm-cli` executable built next to the test bundle (or `$CVM_CLI_BINARY`).
    static func binary(file: StaticString = #filePath, line: UInt = #line) throws -> String {
        if let path = TestProcess.cvmCLI() { return path }
        XCTFail("cvm-cli not found next to the tests; run `swift build --build-tests` first", file: file, line: line)
        throw TestFailure("cvm-cli missing")
    }

    /// Runs `cvm-cli args…` to completion.
    static func run(_ args: [String], timeout: Double = 900) throws -> Result {
        try Child(executable: binary(), args: args).wait(timeout: timeout)
    }

    /// Runs `cvm-cli args…` under `/usr/bin/time`, which forks it from a small process, so
    /// `peakRSSKiB` is cvm-cli's own peak RSS.
    static func runMeasured(_ args: [String], timeout: Double = 900) throws -> Result {
        try Child(executable: binary(), args: args, measureRSS: true).wait(timeout: timeout)
    }

    /// Runs a tool found on PATH; fails the test on a non-zero exit unless `allowFailure`.
    @discardableResult
    static func tool(_ name: String, _ args: [String], allowFailure: Bool = false,
                     file: StaticString = #filePath, line: UInt = #line) throws -> Result {
        let r = try Child(executable: "/usr/bin/env", args: [name] + args).wait(timeout: 900)
        if !allowFailure && r.status != 0 {
            XCTFail("\(name) \(args.joined(separator: " ")) failed (\(r.status)): \(r.stderr)", file: file, line: line)
            throw TestFailure("\(name) failed")
        }
        return r
    }

    /// Runs a /bin/sh script; paths are passed as "$1", "$2", … so they need no quoting.
    @discardableResult
    static func shell(_ script: String, _ args: [String] = [], allowFailure: Bool = false,
                      file: StaticString = #filePath, line: UInt = #line) throws -> Result {
        try tool("sh", ["-c", script, "sh"] + args, allowFailure: allowFailure, file: file, line: line)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A child process with stdin from /dev/null and stdout/stderr captured in temp files.
final class Child {
    let pid: pid_t
    private let outPath: String
    private let errPath: String
    private let start = Date()
    private let rssPath: String?
    private var reaped: CLI.Result?

    init(executable: String, args: [String], measureRSS: Bool = false) throws {
        let base = NSTemporaryDirectory() + "cvm-child-\(UUID().uuidString)"
        outPath = base + ".out"
        errPath = base + ".err"
        rssPath = measureRSS ? base + ".rss" : nil
        var executable = executable, args = args
        if let rssPath {
            args = ["-f", "%M", "-o", rssPath, executable] + args
            executable = "/usr/bin/time"
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + args).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, executable, &actions, nil, argv, environ)
        guard rc == 0 else { throw TestFailure("cannot start \(executable): \(String(cString: strerror(rc)))") }
        pid = child
    }

    func send(_ signal: Int32) { kill(pid, signal) }

    /// The result if the child has exited (reaping it), else nil.
    func poll() throws -> CLI.Result? {
        if let reaped { return reaped }
        var status: Int32 = 0
        var usage = rusage()
        let r = wait4(pid, &status, WNOHANG, &usage)
        if r < 0 && errno != EINTR { throw TestFailure("wait4 failed: \(String(cString: strerror(errno)))") }
        guard r == pid else { return nil }
        defer { unlink(outPath); unlink(errPath); rssPath.map { _ = unlink($0) } }
        let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        var peak = Int(usage.ru_maxrss)
        if let rssPath {
            // The last line is %M; an earlier one may say how the command ended.
            let text = (try? String(contentsOfFile: rssPath, encoding: .utf8)) ?? ""
            guard let kib = text.split(separator: "\n").last.flatMap({ Int($0) }) else {
                throw TestFailure("/usr/bin/time wrote no peak RSS: \(text)")
            }
            peak = kib
        }
        let sig = status & 0x7F
        reaped = CLI.Result(status: sig != 0 ? 128 + sig : (status >> 8) & 0xFF, signal: sig != 0 ? sig : nil,
                            stdout: out, stderr: err, peakRSSKiB: peak,
                            seconds: Date().timeIntervalSince(start))
        return reaped
    }

    /// Reaps the child; kills it after `timeout` seconds.
    func wait(timeout: Double) throws -> CLI.Result {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let r = try poll() { return r }
            if Date() > deadline { kill(pid, SIGKILL) }
            usleep(20_000)
        }
    }
}

/// Files, disks and oracle checks.
enum Disk {
    static let mib: UInt64 = 1 << 20
    static let gib: UInt64 = 1 << 30
    /// Size of the ext4 "data" filesystem in every test disk, whatever the disk size, so a
    /// large sparse disk holds the same allocated data as a small one.
    static let filesystemSize: UInt64 = 22 << 20

    /// A fresh temporary folder, removed when the test ends.
    static func tempDir(_ testCase: XCTestCase) throws -> URL {
        let url = try makeDir()
        testCase.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    static func makeDir() throws -> URL {
        let url = URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("cvm-cli-test-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
    static func pseudoRandomBytes(count: Int, seed: UInt64) -> [UInt8] { TestData.pseudoRandomBytes(count: count, seed: seed) }

    /// Compressible text-like bytes.
    static func compressibleBytes(count: Int, seed: UInt64) -> [UInt8] { TestData.compressibleBytes(count: count, seed: seed) }

    /// Writes `bytes` at `offset` of `path` (creating/extending it; holes stay holes).
    static func write(_ bytes: [UInt8], to path: String, at offset: UInt64) throws {
        let fd = open(path, O_WRONLY | O_CREAT, 0o644)
        guard fd >= 0 else { throw TestFailure("open \(path)") }
        defer { close(fd) }
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard n == bytes.count else { throw TestFailure("pwrite \(path)") }
    }

    static func read(_ path: String, count: Int, at offset: UInt64) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw TestFailure("open \(path)") }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: count)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
        guard n == count else { throw TestFailure("pread \(path)") }
        return out
    }

    static func size(_ path: String) -> UInt64 {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_size) : 0
    }

    static func setSize(_ path: String, _ size: UInt64) throws {
        if access(path, F_OK) != 0 { FileManager.default.createFile(atPath: path, contents: nil) }
        guard truncate(path, off_t(size)) == 0 else { throw TestFailure("truncate \(path)") }
    }

    static func sha256(_ path: String) throws -> String {
        String(try CLI.tool("sha256sum", [path]).stdout.prefix(64))
    }

    /// A sparse raw disk of `size` bytes shaped like the confidential base images: a GPT
    /// (sgdisk) with p1 "esp" 1–9 MiB (some random bytes), p2 "root" 9–41 MiB (random data, an
    /// explicit zero run, compressible data, holes) and p3 "data" 41 MiB–end−1 MiB holding an
    /// ext4 filesystem labelled `data` (mke2fs -d) of `filesystemSize`. Holes everywhere else.
    static func makeGPTDisk(at path: String, size: UInt64 = 64 << 20, seed: UInt64 = 1) throws {
        try setSize(path, size)
        let lastMiB = size / mib - 1
        try CLI.tool("sgdisk", ["--clear", "--disk-guid=11111111-2222-3333-4444-555555555555",
                                "--new=1:1M:+8M", "--typecode=1:ef00", "--change-name=1:esp",
                                "--partition-guid=1:aaaaaaaa-0000-0000-0000-000000000001",
                                "--new=2:9M:+32M", "--typecode=2:8304", "--change-name=2:root",
                                "--partition-guid=2:aaaaaaaa-0000-0000-0000-000000000002",
                                "--new=3:41M:\(lastMiB * 1024 - 1)K", "--typecode=3:8300", "--change-name=3:data",
                                "--partition-guid=3:aaaaaaaa-0000-0000-0000-000000000003", path])
        try write(pseudoRandomBytes(count: 300_000, seed: seed), to: path, at: 1 * mib)
        try write(pseudoRandomBytes(count: 3 * Int(mib) + 12345, seed: seed + 1), to: path, at: 9 * mib)
        try write([UInt8](repeating: 0, count: 2 * Int(mib)), to: path, at: 13 * mib)
        try write(compressibleBytes(count: 4 * Int(mib) + 777, seed: seed + 2), to: path, at: 16 * mib)
        try write(pseudoRandomBytes(count: 100, seed: seed + 3), to: path, at: 40 * mib - 100)
        let tree = path + ".tree"
        try FileManager.default.createDirectory(atPath: tree + "/workload/config", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tree) }
        try Data("services:\n  app:\n    image: docker.io/library/nginx:1.27\n".utf8)
            .write(to: URL(fileURLWithPath: tree + "/workload/docker-compose.yml"))
        try Data(pseudoRandomBytes(count: 200_000, seed: seed + 4)).write(to: URL(fileURLWithPath: tree + "/workload/config/blob.bin"))
        let fs = path + ".p3"
        defer { unlink(fs) }
        try setSize(fs, filesystemSize)
        try CLI.tool("mke2fs", ["-q", "-F", "-t", "ext4", "-L", "data", "-U", "0ddba11e-0000-4000-8000-000000000001",
                                "-E", "root_owner=0:0", "-d", tree, fs])
        try CLI.tool("dd", ["if=\(fs)", "of=\(path)", "bs=1M", "seek=41", "conv=notrunc,sparse", "status=none"])
    }

    /// `qemu-img compare` (formats as qemu names them: raw, vpc, vmdk, qcow2). Sizes may differ
    /// when the extra area of the larger image is zeros.
    static func assertSameContent(_ a: String, _ fa: String, _ b: String, _ fb: String, _ what: String,
                                  file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try CLI.tool("qemu-img", ["compare", "-f", fa, "-F", fb, a, b], allowFailure: true)
        XCTAssertEqual(r.status, 0, "\(what): qemu-img compare \(a) \(b): \(r.stdout) \(r.stderr)", file: file, line: line)
    }

    /// `qemu-img info --output=json`.
    static func qemuInfo(_ path: String, format: String) throws -> [String: Any] {
        let r = try CLI.tool("qemu-img", ["info", "--output=json", "-f", format, path])
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
    }

    /// Names of the entries of a folder, sorted.
    static func listing(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
    }

    static func roundUp(_ v: UInt64, _ m: UInt64) -> UInt64 { (v + m - 1) / m * m }
}

extension XCTestCase {
    /// Converts with cvm-cli and fails the test (with its stderr) unless it succeeds.
    @discardableResult
    func convertOK(_ input: String, _ output: String, _ extra: [String] = [], measureRSS: Bool = false,
                   file: StaticString = #filePath, line: UInt = #line) throws -> CLI.Result {
        let args = ["convert", input, output, "--force"] + extra
        let r = measureRSS ? try CLI.runMeasured(args) : try CLI.run(args)
        guard r.status == 0 else {
            XCTFail("cvm-cli convert \(input) \(output) failed (\(r.status)): \(r.stderr)", file: file, line: line)
            throw TestFailure("convert failed")
        }
        return r
    }
}
