import Foundation
import XCTest
import CVMTestData
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Helpers for the update-disk tests: running the built cvm-cli and the oracle tools (sgdisk,
// mke2fs, debugfs, e2fsck, dumpe2fs, qemu-img), building base disks with a pre-existing tree,
// workload folders, and comparing byte ranges. Test targets cannot import each other, so the
// few process helpers of Tests/CLITests are repeated here in a smaller form.

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// How a child process ended and what it printed.
struct ProcessResult {
    /// Exit status; 128+signal when the process died from a signal.
    let status: Int32
    let signal: Int32?
    let stdout: String
    let stderr: String
}

/// A child process (posix_spawn, reaped with wait4) with stdin from /dev/null and
/// stdout/stderr captured in temp files, so pipes can never fill up and the tests see death
/// by signal exactly.
final class Child {
    let pid: pid_t
    private let outPath: String
    private let errPath: String
    private var reaped: ProcessResult?

    init(executable: String, args: [String], environment: [String: String] = [:]) throws {
        let base = NSTemporaryDirectory() + "cvm-upd-child-\(UUID().uuidString)"
        outPath = base + ".out"
        errPath = base + ".err"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + args).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, executable, &actions, nil, argv, envp)
        guard rc == 0 else { throw TestFailure("cannot start \(executable): \(String(cString: strerror(rc)))") }
        pid = child
    }

    func send(_ signal: Int32) { kill(pid, signal) }

    /// The result if the child has exited (reaping it), else nil.
    func poll() throws -> ProcessResult? {
        if let reaped { return reaped }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r < 0 && errno != EINTR { throw TestFailure("waitpid failed: \(String(cString: strerror(errno)))") }
        guard r == pid else { return nil }
        defer { unlink(outPath); unlink(errPath) }
        let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        let sig = status & 0x7F
        reaped = ProcessResult(status: sig != 0 ? 128 + sig : (status >> 8) & 0xFF, signal: sig != 0 ? sig : nil,
                               stdout: out, stderr: err)
        return reaped
    }

    /// Reaps the child; kills it after `timeout` seconds.
    func wait(timeout: Double = 600) throws -> ProcessResult {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let r = try poll() { return r }
            if Date() > deadline { kill(pid, SIGKILL) }
            usleep(5_000)
        }
    }
}

enum Run {
    /// The `cvm-cli` executable built next to the test bundle (or `$CVM_CLI_BINARY`).
    static func binary(file: StaticString = #filePath, line: UInt = #line) throws -> String {
        if let path = TestProcess.cvmCLI() { return path }
        XCTFail("cvm-cli not found next to the tests; run `swift build --build-tests` first", file: file, line: line)
        throw TestFailure("cvm-cli missing")
    }

    /// Runs `cvm-cli args…` to completion.
    static func cli(_ args: [String], environment: [String: String] = [:]) throws -> ProcessResult {
        try Child(executable: binary(), args: args, environment: environment).wait()
    }

    /// Runs a tool found on PATH; fails the test on a non-zero exit unless `allowFailure`.
    @discardableResult
    static func tool(_ name: String, _ args: [String], allowFailure: Bool = false,
                     file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let r = try Child(executable: "/usr/bin/env", args: [name] + args).wait()
        if !allowFailure && r.status != 0 {
            XCTFail("\(name) \(args.joined(separator: " ")) failed (\(r.status)): \(r.stderr)", file: file, line: line)
            throw TestFailure("\(name) failed: \(r.stderr)")
        }
        return r
    }

    /// Runs a /bin/sh script; paths are passed as "$1", "$2", … so they need no quoting.
    @discardableResult
    static func shell(_ script: String, _ args: [String] = [], allowFailure: Bool = false,
                      file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        try tool("sh", ["-c", script, "sh"] + args, allowFailure: allowFailure, file: file, line: line)
    }
}

/// Files and byte ranges.
enum Files {
    static let mib: UInt64 = 1 << 20

    /// A fresh temporary folder, removed when the test ends.
    static func tempDir(_ testCase: XCTestCase) throws -> String {
        let url = URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("cvm-upd-test-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        testCase.addTeardownBlock { _ = try? Run.tool("rm", ["-rf", url.path]) }
        return url.path
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

    /// Creates (or replaces) a file with `bytes`: plain open/write, fast for many small files.
    static func create(_ path: String, _ bytes: [UInt8]) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw TestFailure("create \(path)") }
        defer { close(fd) }
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw TestFailure("write \(path)") }
    }

    static func write(_ text: String, to path: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    static func setSize(_ path: String, _ size: UInt64) throws {
        if access(path, F_OK) != 0 { FileManager.default.createFile(atPath: path, contents: nil) }
        guard truncate(path, off_t(size)) == 0 else { throw TestFailure("truncate \(path)") }
    }

    static func size(_ path: String) -> UInt64 {
        var st = stat()
        return lstat(path, &st) == 0 ? UInt64(st.st_size) : 0
    }

    static func sha256(_ path: String) throws -> String {
        String(try Run.tool("sha256sum", [path]).stdout.prefix(64))
    }

    /// SHA-256 of `length` bytes of `path` from `offset` (zeros past the end of the file).
    static func sha256(_ path: String, offset: UInt64, length: UInt64) throws -> String {
        let r = try Run.shell("""
            { dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none; \
              head -c "$3" /dev/zero; } | head -c "$3" | sha256sum
            """, [path, "\(offset)", "\(length)"])
        return String(r.stdout.prefix(64))
    }

    /// Copies `length` bytes of `path` from `offset` into a new file `to` (holes kept).
    static func extract(_ path: String, offset: UInt64, length: UInt64, to: String) throws {
        unlink(to)
        try Run.tool("dd", ["if=\(path)", "of=\(to)", "bs=1M", "iflag=skip_bytes,count_bytes",
                            "skip=\(offset)", "count=\(length)", "conv=sparse", "status=none"])
        try setSize(to, length)
    }

    /// Copies all of `src` into `dst` at `offset` without truncating `dst` (holes kept).
    static func place(_ src: String, into dst: String, at offset: UInt64) throws {
        try Run.tool("dd", ["if=\(src)", "of=\(dst)", "bs=1M", "oflag=seek_bytes", "seek=\(offset)",
                            "conv=notrunc,sparse", "status=none"])
    }

    /// Whether `needle` occurs anywhere in the file (grep -a on bytes).
    static func contains(_ path: String, _ needle: String) throws -> Bool {
        try Run.tool("grep", ["-q", "-a", "-F", needle, path], allowFailure: true).status == 0
    }

    static func copy(_ a: String, _ b: String) throws {
        unlink(b)
        try Run.tool("cp", ["--sparse=always", a, b])
    }

    /// Names in `dir` that are leftovers of cvm-cli runs (temp outputs, scratch files).
    static func leftovers(in dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
            .filter { $0.contains(".cvm-tmp-") || $0.contains(".cvm-scratch-") }.sorted()
    }
}

/// One GPT partition as sgdisk reports it.
struct PartitionInfo {
    let index: Int
    let offset: UInt64
    let size: UInt64
    let name: String
    var end: UInt64 { offset + size }
}

enum GPTInfo {
    /// Partitions of a raw disk, from `sgdisk -i` (512-byte sectors).
    static func partitions(_ raw: String) throws -> [PartitionInfo] {
        let p = try Run.tool("sgdisk", ["-p", raw]).stdout
        var out: [PartitionInfo] = []
        var inTable = false
        for line in p.split(separator: "\n") {
            if line.hasPrefix("Number") { inTable = true; continue }
            guard inTable else { continue }
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 7, let n = Int(f[0]), let first = UInt64(f[1]), let last = UInt64(f[2]) else { continue }
            out.append(PartitionInfo(index: n, offset: first * 512, size: (last - first + 1) * 512,
                                     name: f[6...].joined(separator: " ")))
        }
        return out
    }
}

/// The base disks: a GPT with p1 "esp" (random bytes), p2 "root" (random and compressible
/// data, holes) and one or more ext4 partitions. The data file system is made with
/// `mke2fs -d` from a tree holding a little system (non-root owners, a symlink, a file with
/// xattrs and old times, an old `workload/`), over stale marker bytes (`-E nodiscard`) so a
/// test can prove old bytes do not survive.
enum BaseDisk {
    static let staleMarker = "STALE-PARTITION-BYTES-7f3a"
    static let oldWorkloadMarker = "OLD-WORKLOAD-CONTENT-91c2"
    static let uuid = "0ddba11e-0000-4000-8000-000000000001"
    /// How much of a file system's space gets stale bytes before mke2fs (bounded for speed).
    static let staleMiB: UInt64 = 24
    /// A value too big for the inode's xattr space (goes to an xattr block).
    static let bigXattrValue = (0..<30).map { "value-\($0 % 10)-" }.joined()

    private static func setSizeOf(fd: Int32, _ size: UInt64, _ path: String) throws {
        guard ftruncate(fd, off_t(size)) == 0 else { throw TestFailure("ftruncate \(path)") }
    }

    /// Paths of the pre-existing tree outside `workload/` that must survive unchanged.
    static let keptPaths = ["/etc", "/etc/hostname", "/etc/os-release", "/home", "/home/user", "/home/user/notes.txt",
                            "/home/user/link-to-hostname", "/home/user/long-link", "/var", "/var/lib", "/var/lib/app.db",
                            "/var/empty-file", "/lost+found", "/"]

    struct FS {
        var gptName: String
        var label: String
        /// Size in MiB.
        var sizeMiB: UInt64
        var withTree = true
        /// Bytes beyond `sizeMiB` (odd partition sizes).
        var extraBytes: UInt64 = 0
        var bytes: UInt64 { sizeMiB * Files.mib + extraBytes }
    }

    /// Builds the disk at `path`; `fileSystems` become p3, p4, … in order.
    static func make(at path: String, sizeMiB: UInt64 = 64, fileSystems: [FS] = [FS(gptName: "data", label: "data", sizeMiB: 22)],
                     seed: UInt64 = 1) throws {
        unlink(path)
        try Files.setSize(path, sizeMiB * Files.mib)
        var args = ["--clear", "--disk-guid=11111111-2222-3333-4444-555555555555",
                    "--new=1:1M:+8M", "--typecode=1:ef00", "--change-name=1:esp",
                    "--partition-guid=1:aaaaaaaa-0000-0000-0000-000000000001",
                    "--new=2:9M:+16M", "--typecode=2:8304", "--change-name=2:root",
                    "--partition-guid=2:aaaaaaaa-0000-0000-0000-000000000002"]
        var start: UInt64 = 25
        var starts: [UInt64] = []
        for (i, fs) in fileSystems.enumerated() {
            let n = i + 3
            args += ["--new=\(n):\(start)M:+\(fs.sizeMiB)M", "--typecode=\(n):8300", "--change-name=\(n):\(fs.gptName)",
                     "--partition-guid=\(n):aaaaaaaa-0000-0000-0000-00000000000\(n)"]
            starts.append(start)
            start += fs.sizeMiB
        }
        guard start < sizeMiB else { throw TestFailure("file systems do not fit the \(sizeMiB) MiB disk") }
        try Run.tool("sgdisk", args + [path])
        let mib = Files.mib
        try Files.write(Files.pseudoRandomBytes(count: 300_000, seed: seed), to: path, at: 1 * mib)
        try Files.write(Files.pseudoRandomBytes(count: 3 * Int(mib) + 12345, seed: seed + 1), to: path, at: 9 * mib)
        try Files.write(Files.compressibleBytes(count: 4 * Int(mib) + 777, seed: seed + 2), to: path, at: 16 * mib)
        try Files.write(Files.pseudoRandomBytes(count: 100, seed: seed + 3), to: path, at: 25 * mib - 100)
        // Something after the last partition too (inside the disk, before the backup GPT).
        try Files.write(Array("TRAILER".utf8), to: path, at: start * mib + 4096)
        for (i, fs) in fileSystems.enumerated() {
            try makeFileSystem(fs, into: path, at: starts[i] * mib, seed: seed + 10 + UInt64(i))
        }
    }

    static func makeFileSystem(_ fs: FS, into disk: String, at offset: UInt64, seed: UInt64) throws {
        let part = disk + ".fs"
        let tree = disk + ".tree"
        defer { unlink(part); try? FileManager.default.removeItem(atPath: tree) }
        try? FileManager.default.removeItem(atPath: tree)
        // Stale bytes everywhere first: mke2fs -E nodiscard leaves them in free blocks.
        unlink(part)
        let line = Array((staleMarker + "\n").utf8)
        var chunk: [UInt8] = []
        while chunk.count < 1 << 20 { chunk += line }
        let fd = open(part, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw TestFailure("open \(part)") }
        try setSizeOf(fd: fd, fs.bytes, part)
        var pos: UInt64 = 0
        while pos < min(fs.bytes, staleMiB * Files.mib) {
            let n = Int(min(Files.mib, fs.bytes - pos))
            _ = chunk.withUnsafeBytes { pwrite(fd, $0.baseAddress, n, off_t(pos)) }
            pos += UInt64(n)
        }
        close(fd)
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        if fs.withTree {
            try makeTree(tree, seed: seed)
        }
        try Run.tool("mke2fs", ["-q", "-F", "-t", "ext4", "-L", fs.label, "-U", uuid,
                                "-E", "root_owner=0:0,nodiscard", "-d", tree, part])
        if fs.withTree {
            // Metadata mke2fs -d cannot take from the host: xattrs (in the inode and, too big
            // for it, in a block), a 32-bit owner and nanosecond times.
            let cmds = """
                ea_set /etc/hostname user.comment "host name file"
                ea_set /etc/hostname trusted.big \(bigXattrValue)
                ea_set /var/lib/app.db user.app "v1"
                set_inode_field /var/lib/app.db uid 70000
                set_inode_field /var/lib/app.db gid 70001
                set_inode_field /etc/os-release mtime 20200102030405
                set_inode_field /etc/os-release mtime_extra 123456788
                set_inode_field /etc/os-release atime 0x7fff0000
                """
            let cmdFile = part + ".cmds"
            try Files.write(cmds + "\n", to: cmdFile)
            defer { unlink(cmdFile) }
            try Run.tool("debugfs", ["-w", "-f", cmdFile, part])
        }
        try Files.place(part, into: disk, at: offset)
    }

    static func makeTree(_ tree: String, seed: UInt64) throws {
        let fm = FileManager.default
        for d in ["etc", "home/user", "var/lib", "workload/config/old"] {
            try fm.createDirectory(atPath: tree + "/" + d, withIntermediateDirectories: true)
        }
        try Files.write("base-image\n", to: tree + "/etc/hostname")
        try Files.write("NAME=test\nVERSION=1\n", to: tree + "/etc/os-release")
        try Files.write(Files.compressibleBytes(count: 70_000, seed: seed), to: tree + "/home/user/notes.txt", at: 0)
        try Files.write(Files.pseudoRandomBytes(count: 1_000_000, seed: seed + 1), to: tree + "/var/lib/app.db", at: 0)
        fm.createFile(atPath: tree + "/var/empty-file", contents: nil)
        try fm.createSymbolicLink(atPath: tree + "/home/user/link-to-hostname", withDestinationPath: "../../etc/hostname")
        try fm.createSymbolicLink(atPath: tree + "/home/user/long-link",
                                  withDestinationPath: "/" + String(repeating: "long-target-component/", count: 8) + "end")
        try Files.write(String(repeating: oldWorkloadMarker + "\n", count: 2000), to: tree + "/workload/docker-compose.yml")
        try Files.write(oldWorkloadMarker, to: tree + "/workload/config/old/stale.txt")
        chown(tree + "/home/user", 1000, 1000)
        chown(tree + "/home/user/notes.txt", 1000, 1001)
        lchown(tree + "/home/user/link-to-hostname", 1000, 1000)
        chmod(tree + "/home/user", 0o700)
        chmod(tree + "/home/user/notes.txt", 0o640)
        chmod(tree + "/var/lib/app.db", 0o4755)
        var times = [timespec(tv_sec: 1_500_000_000, tv_nsec: 0), timespec(tv_sec: 1_400_000_000, tv_nsec: 0)]
        utimensat(AT_FDCWD, tree + "/etc/hostname", &times, 0)
        utimensat(AT_FDCWD, tree + "/home/user/link-to-hostname", &times, AT_SYMLINK_NOFOLLOW)
    }
}

/// Workload folders.
enum Workloads {
    /// The repository's sample workload (valid for `workload check`).
    static var sample: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("workload").path
    }

    /// A copy of the sample workload at `path`, plus a symlink, an executable and an empty file.
    static func make(at path: String) throws {
        try? FileManager.default.removeItem(atPath: path)
        try Run.tool("cp", ["-a", sample, path])
        try Files.write("#!/bin/sh\necho start\n", to: path + "/config/start.sh")
        chmod(path + "/config/start.sh", 0o755)
        FileManager.default.createFile(atPath: path + "/config/empty", contents: nil)
        try FileManager.default.createSymbolicLink(atPath: path + "/config/web-link", withDestinationPath: "web/default.conf")
        chmod(path + "/secrets", 0o700)
    }

    /// A docker-save-like image archive of about `mib` MiB: manifest.json and one layer whose
    /// every 4 KiB block starts with its own number (cheap to make, any misplaced block shows).
    static func makeImageArchive(at path: String, mib: Int) throws {
        let dir = path + ".d"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Files.write(#"[{"Config":"config.json","RepoTags":["localhost/big:1"],"Layers":["layer.tar"]}]"#,
                        to: dir + "/manifest.json")
        try Files.write(#"{"architecture":"amd64","os":"linux"}"#, to: dir + "/config.json")
        let fd = open(dir + "/layer.tar", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw TestFailure("open layer") }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        for m in 0..<mib {
            buffer.withUnsafeMutableBytes { raw in
                for b in 0..<256 {
                    let tag = "block \(m * 256 + b) of the big layer"
                    for (i, c) in tag.utf8.enumerated() { raw[b * 4096 + i] = c }
                    raw[b * 4096 + 100] = UInt8(truncatingIfNeeded: m &* 31 &+ b)
                }
            }
            _ = buffer.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(m) << 20) }
        }
        close(fd)
        try Run.tool("tar", ["-cf", path, "-C", dir, "manifest.json", "config.json", "layer.tar"])
    }
}

/// Reading a file system with debugfs.
enum Debugfs {
    /// The fields of `debugfs stat` that update-disk must keep (or set), by name: type, mode,
    /// owner, size, links, the four times (with nanoseconds), xattrs (names and values) and
    /// the symlink target.
    struct Stat: Equatable, CustomStringConvertible {
        var fields: [String: String] = [:]
        var xattrs: [String] = []
        var description: String { "\(fields.sorted { $0.key < $1.key }) xattrs \(xattrs)" }
        var mode: UInt16? { fields["Mode"].flatMap { UInt16($0, radix: 8) } }
        var type: String? { fields["Type"] }
    }

    /// Runs `stat` and `ea_list` for every path in one debugfs process.
    static func stat(_ image: String, _ paths: [String]) throws -> [String: Stat] {
        var script = ""
        for p in paths {
            script += "stat \(quote(p))\nea_list \(quote(p))\n"
        }
        let cmdFile = image + ".stat-cmds"
        try Files.write(script, to: cmdFile)
        defer { unlink(cmdFile) }
        let r = try Run.tool("debugfs", ["-f", cmdFile, image])
        var out: [String: Stat] = [:]
        var current: String?
        var inEAList = false
        var inStatXattrs = false
        for lineSub in r.stdout.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(lineSub)
            if line.hasPrefix("debugfs: stat ") {
                current = unquote(String(line.dropFirst("debugfs: stat ".count)))
                inEAList = false
                out[current!] = Stat()
                continue
            }
            if line.hasPrefix("debugfs: ea_list ") { inEAList = true; inStatXattrs = false; continue }
            guard let path = current else { continue }
            if inEAList {
                if !line.trimmingCharacters(in: .whitespaces).isEmpty {
                    out[path]!.xattrs.append(line.trimmingCharacters(in: .whitespaces))
                }
                continue
            }
            if line.hasPrefix("Extended attributes:") { inStatXattrs = true; continue }
            if inStatXattrs && line.hasPrefix("  ") { continue }
            inStatXattrs = false
            for key in ["Type", "Mode", "User", "Group", "Size", "Links"] {
                if let v = value(after: key + ":", in: line) { out[path]!.fields[key] = v }
            }
            for key in ["ctime", "atime", "mtime", "crtime"] {
                let t = line.trimmingCharacters(in: .whitespaces)
                if t.hasPrefix(key + ":") {
                    out[path]!.fields[key] = t.dropFirst(key.count + 1).trimmingCharacters(in: .whitespaces)
                        .split(separator: " ").first.map(String.init)
                }
            }
            if line.hasPrefix("Fast link dest:") { out[path]!.fields["link"] = String(line.dropFirst("Fast link dest:".count)) }
        }
        return out
    }

    /// The first whitespace-separated word after `key` in `line`.
    private static func value(after key: String, in line: String) -> String? {
        guard let r = line.range(of: key) else { return nil }
        // "Fragment:  Address: 0 ... Size: 0" is not the file size.
        if line.hasPrefix("Fragment:") { return nil }
        return line[r.upperBound...].split(separator: " ", omittingEmptySubsequences: true).first.map(String.init)
    }

    static func quote(_ p: String) -> String { "\"" + p + "\"" }

    private static func unquote(_ s: String) -> String {
        s.hasPrefix("\"") && s.hasSuffix("\"") && s.count >= 2 ? String(s.dropFirst().dropLast()) : s
    }

    /// The value of one xattr as `ea_get` prints it.
    static func eaGet(_ image: String, _ path: String, _ name: String) throws -> String {
        try Run.tool("debugfs", ["-R", "ea_get \(quote(path)) \(name)", image]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `rdump` of `path` into `dir` (content, symlinks, modes as debugfs restores them).
    static func rdump(_ image: String, _ path: String, into dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Run.tool("debugfs", ["-R", "rdump \(quote(path)) \(quote(dir))", image])
    }

    /// `e2fsck -fn`: a clean file system exits 0.
    static func assertClean(_ image: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try Run.tool("e2fsck", ["-fn", image], allowFailure: true)
        XCTAssertEqual(r.status, 0, "e2fsck -fn \(image): \(r.stdout) \(r.stderr)", file: file, line: line)
    }

    /// UUID and volume name from dumpe2fs -h.
    static func identity(_ image: String) throws -> (uuid: String, label: String, blockCount: UInt64, blockSize: UInt64) {
        let h = try Run.tool("dumpe2fs", ["-h", image]).stdout
        func field(_ name: String) -> String {
            h.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                .map { $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces) } ?? ""
        }
        return (field("Filesystem UUID"), field("Filesystem volume name"), UInt64(field("Block count")) ?? 0,
                UInt64(field("Block size")) ?? 0)
    }

    /// Free block ranges (in file-system blocks) from dumpe2fs.
    static func freeBlocks(_ image: String) throws -> [ClosedRange<UInt64>] {
        let text = try Run.tool("dumpe2fs", [image]).stdout
        var out: [ClosedRange<UInt64>] = []
        for line in text.split(separator: "\n") {
            let t = line.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("Free blocks: ") else { continue }
            for item in t.dropFirst("Free blocks: ".count).split(separator: ",") {
                let parts = item.trimmingCharacters(in: .whitespaces).split(separator: "-").compactMap { UInt64($0) }
                if parts.count == 2 { out.append(parts[0]...parts[1]) } else if parts.count == 1 { out.append(parts[0]...parts[0]) }
            }
        }
        return out
    }
}
