import Foundation
import XCTest
import CVMTestData
@testable import DiskImage
import CVMSupport

/// Helpers shared by the format tests: temp folders, running oracle tools, building test disks.
enum TestSupport {
    struct CommandResult {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs an executable found on PATH; never through a shell, so paths with spaces are safe.
    @discardableResult
    static func run(_ tool: String, _ args: [String], allowFailure: Bool = false,
                    file: StaticString = #filePath, line: UInt = #line) throws -> CommandResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [tool] + args
        // Output goes to temp files: no pipe can fill up and block the tool.
        let outURL = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-run-\(UUID().uuidString).out")
        let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-run-\(UUID().uuidString).err")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outURL); try? FileManager.default.removeItem(at: errURL) }
        p.standardOutput = try FileHandle(forWritingTo: outURL)
        p.standardError = try FileHandle(forWritingTo: errURL)
        try p.run()
        p.waitUntilExit()
        let outData = (try? Data(contentsOf: outURL)) ?? Data()
        let errData = (try? Data(contentsOf: errURL)) ?? Data()
        let result = CommandResult(status: p.terminationStatus,
                                   stdout: String(decoding: outData, as: UTF8.self),
                                   stderr: String(decoding: errData, as: UTF8.self))
        if !allowFailure && result.status != 0 {
            XCTFail("\(tool) \(args.joined(separator: " ")) failed (\(result.status)): \(result.stderr)", file: file, line: line)
            throw CVMError.io("\(tool) failed")
        }
        return result
    }

    /// A fresh temporary folder, removed when the test ends.
    static func tempDir(_ testCase: XCTestCase) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("cvm-test-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        testCase.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
    static func pseudoRandomBytes(count: Int, seed: UInt64) -> [UInt8] { TestData.pseudoRandomBytes(count: count, seed: seed) }

    /// Compressible text-like bytes.
    static func compressibleBytes(count: Int, seed: UInt64) -> [UInt8] { TestData.compressibleBytes(count: count, seed: seed) }

    /// Writes `bytes` at `offset` of the file at `path` (creating/extending it, leaving holes).
    static func writeBytes(_ bytes: [UInt8], to path: String, at offset: UInt64) throws {
        let fd = open(path, O_WRONLY | O_CREAT, 0o644)
        guard fd >= 0 else { throw CVMError.io("open \(path)") }
        defer { close(fd) }
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard n == bytes.count else { throw CVMError.io("pwrite \(path)") }
    }

    /// A sparse raw disk of `size` bytes with a GPT (sgdisk), an ext4 data partition labelled
    /// `data` filled from a small tree (mkfs.ext4 -d), a partition of random and compressible
    /// data with zero runs between, and holes everywhere else. Needs sgdisk and mke2fs.
    ///
    /// Layout (1 MiB-aligned, sizes in MiB): p1 "esp" 1..9, p2 "root" 9..41 (data pattern),
    /// p3 "data" 41..end-1 (ext4).
    static func makeGPTDisk(at path: String, size: UInt64 = 64 << 20, seed: UInt64 = 1) throws {
        let mib: UInt64 = 1 << 20
        FileManager.default.createFile(atPath: path, contents: nil)
        guard truncate(path, off_t(size)) == 0 else { throw CVMError.io("truncate \(path)") }
        let lastMiB = size / mib - 1
        try run("sgdisk", ["--clear",
                           "--disk-guid=11111111-2222-3333-4444-555555555555",
                           "--new=1:1M:+8M", "--typecode=1:ef00", "--change-name=1:esp",
                           "--partition-guid=1:aaaaaaaa-0000-0000-0000-000000000001",
                           "--new=2:9M:+32M", "--typecode=2:8304", "--change-name=2:root",
                           "--partition-guid=2:aaaaaaaa-0000-0000-0000-000000000002",
                           "--new=3:41M:\(lastMiB * 1024 - 1)K", "--typecode=3:8300", "--change-name=3:data",
                           "--partition-guid=3:aaaaaaaa-0000-0000-0000-000000000003",
                           path])
        // p1: a little random data at its start.
        try writeBytes(pseudoRandomBytes(count: 300_000, seed: seed), to: path, at: 1 * mib)
        // p2: random data, a zero run (explicitly written zeros), compressible data, holes.
        try writeBytes(pseudoRandomBytes(count: 3 * Int(mib) + 12345, seed: seed + 1), to: path, at: 9 * mib)
        try writeBytes([UInt8](repeating: 0, count: 2 * Int(mib)), to: path, at: 13 * mib)
        try writeBytes(compressibleBytes(count: 4 * Int(mib) + 777, seed: seed + 2), to: path, at: 16 * mib)
        try writeBytes(pseudoRandomBytes(count: 100, seed: seed + 3), to: path, at: 40 * mib - 100)
        // p3: ext4 "data" built from a tree.
        let tree = URL(fileURLWithPath: path + ".tree")
        try? FileManager.default.removeItem(at: tree)
        try FileManager.default.createDirectory(at: tree.appendingPathComponent("workload/config"), withIntermediateDirectories: true)
        try Data("services:\n  app:\n    image: docker.io/library/nginx:1.27\n".utf8)
            .write(to: tree.appendingPathComponent("workload/docker-compose.yml"))
        try Data(pseudoRandomBytes(count: 200_000, seed: seed + 4)).write(to: tree.appendingPathComponent("workload/config/blob.bin"))
        defer { try? FileManager.default.removeItem(at: tree) }
        let part = path + ".p3"
        let p3Size = (lastMiB - 41) * mib
        FileManager.default.createFile(atPath: part, contents: nil)
        guard truncate(part, off_t(p3Size)) == 0 else { throw CVMError.io("truncate \(part)") }
        defer { unlink(part) }
        try run("mke2fs", ["-q", "-F", "-t", "ext4", "-L", "data", "-U", "0ddba11e-0000-4000-8000-000000000001",
                           "-E", "root_owner=0:0", "-d", tree.path, part])
        try copyRange(from: part, to: path, at: 41 * mib)
    }

    /// Copies the data ranges of `src` into `dst` at `offset` (keeps holes).
    static func copyRange(from src: String, to dst: String, at offset: UInt64) throws {
        let input = try FileDescriptor.openForReading(src)
        let size = try input.size()
        let fd = open(dst, O_WRONLY)
        guard fd >= 0 else { throw CVMError.io("open \(dst)") }
        let out = FileDescriptor(fd: fd, path: dst)  // owns and closes fd
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        for r in input.dataRanges(upTo: size) {
            var pos = r.lowerBound
            while pos < r.upperBound {
                let n = Int(min(UInt64(buf.count), r.upperBound - pos))
                try buf.withUnsafeMutableBytes { try input.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: pos) }
                try buf.withUnsafeBytes { try out.write(UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: offset + pos) }
                pos += UInt64(n)
            }
        }
    }

    /// `qemu-img compare` of two images (formats as qemu names them: raw, vpc, vmdk, qcow2).
    static func assertSameContent(_ a: String, _ fa: String, _ b: String, _ fb: String,
                                  file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try run("qemu-img", ["compare", "-f", fa, "-F", fb, a, b], allowFailure: true)
        XCTAssertEqual(r.status, 0, "qemu-img compare \(a) \(b): \(r.stdout) \(r.stderr)", file: file, line: line)
    }

    /// SHA-256 of a file, via sha256sum (coreutils).
    static func sha256(_ path: String) throws -> String {
        let r = try run("sha256sum", [path])
        return String(r.stdout.prefix(64))
    }

    /// Converts with our engine: opens `input`, writes `format` atomically to `output`.
    @discardableResult
    static func convert(_ input: String, to output: String, format: OutputFormat,
                        options: WriterOptions = WriterOptions()) throws -> DiskConverter.Stats {
        let reader = try DiskImageFile.open(input)
        let out = try AtomicOutputFile(path: output, overwrite: true)
        let writer = try DiskWriters.make(format, output: out.descriptor, inputVirtualSize: reader.virtualSize, options: options)
        let stats = try DiskConverter().convert(from: reader, to: writer)
        try out.commit()
        return stats
    }
}
