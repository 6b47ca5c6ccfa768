import CVMTestData
import AWSProvider
import CVMCrypto
import CVMSupport
import DiskImage
import Foundation
import AWSTestSupport
import XCTest

/// End-to-end uploads against moto_server with SigV4 enforced; what arrived is read back with
/// boto3 and compared with the virtual disk block by block.
final class AWSUploadMotoTests: XCTestCase {
    nonisolated(unsafe) static var server: MotoServer?
    nonisolated(unsafe) static var startError: Error?

    override class func setUp() {
        super.setUp()
        do { server = try MotoServer() } catch { startError = error }
    }

    override class func tearDown() {
        server?.stop()
        server = nil
        super.tearDown()
    }

    var moto: MotoServer!
    var dir: URL!

    override func setUpWithError() throws {
        if let e = Self.startError { throw e }
        moto = try XCTUnwrap(Self.server)
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-aws-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let dir { try? FileManager.default.removeItem(at: dir) }
    }

    // MARK: EBS

    func testEBSSnapshotOfGPTDiskHasExactlyTheNonZeroBlocks() throws {
        let disk = try makeGPTDisk("disk.raw")
        let expected = try nonZeroBlocks(ofRawFile: disk)
        XCTAssertGreaterThan(expected.count, 3)
        XCTAssertLessThan(expected.count, 12, "the disk must have holes and zero blocks")

        var options = AWSUploadOptions()
        options.pollInterval = (0.1, 0.5)
        let result = try AWSUpload.run(diskPath: disk, destination: .ebsSnapshot(region: moto.region),
                                       environment: moto.environment(), home: dir.path, options: options)
        let id = try XCTUnwrap(result.snapshotID)
        XCTAssertTrue(id.hasPrefix("snap-"))
        XCTAssertEqual(result.pieces, expected.count)
        XCTAssertEqual(result.bytesSent, UInt64(expected.count) * 524_288)
        try assertSnapshot(id, holds: expected, checksum: result.checksum)
    }

    func testEBSSnapshotFromVMDKHasTheSameBlocksAsTheRawDisk() throws {
        let raw = try makeGPTDisk("source.raw")
        let expected = try nonZeroBlocks(ofRawFile: raw)
        let vmdk = dir.appendingPathComponent("disk.vmdk").path
        _ = try DiskConversion.run(input: raw, output: vmdk, format: .vmdk, overwrite: true)

        var options = AWSUploadOptions()
        options.pollInterval = (0.1, 0.5)
        let result = try AWSUpload.run(diskPath: vmdk, destination: .ebsSnapshot(region: moto.region),
                                       environment: moto.environment(), home: dir.path, options: options)
        XCTAssertEqual(result.inputFormat, DiskFormat.vmdkStream.rawValue)
        try assertSnapshot(try XCTUnwrap(result.snapshotID), holds: expected, checksum: result.checksum)
    }

    // MARK: S3

    func testS3MultipartUploadStoresTheFileAsIs() throws {
        let disk = try makeGPTDisk("big.raw", size: 12 << 20, fill: 10)
        _ = try moto.helper("s3-create-bucket", ["cvm-disks"])
        let progress = ProgressLog()
        var options = AWSUploadOptions()
        options.progress = { done, total in progress.record(done, total) }
        let key = "images/test disk.raw"
        let result = try AWSUpload.run(diskPath: disk, destination: .s3Object(bucket: "cvm-disks", key: key),
                                       environment: moto.environment(), home: dir.path, options: options)
        XCTAssertEqual(result.pieces, 3, "12 MiB in 5 MiB parts")
        XCTAssertEqual(result.bytesSent, 12 << 20)
        XCTAssertTrue(result.etag?.hasSuffix("-3\"") ?? false, "multipart ETag, got \(result.etag ?? "nil")")
        XCTAssertEqual(progress.last, UInt64(12 << 20))

        let copy = dir.appendingPathComponent("copy.raw").path
        let answer = try moto.helper("s3-get", ["cvm-disks", key, copy])
        XCTAssertEqual(answer["size"] as? Int, 12 << 20)
        XCTAssertEqual(answer["pendingUploads"] as? Int, 0, "no multipart upload left open")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: disk)))
    }

    /// Parts carry their SHA-256 (checked by the proxy as S3 checks it, since moto does not),
    /// also the parts that are holes in the file, whose digest is not computed from a read.
    func testS3PartChecksumsAreRightForDataAndHoleParts() throws {
        let disk = try makeGPTDisk("holes.raw", size: 22 << 20, fill: 3)   // 5 parts: 2 of them holes
        let file = try FileDescriptor.openForReading(disk)
        let data = file.dataRanges(upTo: 22 << 20)
        file.close()
        let part: UInt64 = 5 << 20, size: UInt64 = 22 << 20
        let holeParts = (0..<UInt64(5)).filter { p in
            let range = (p * part)..<min(size, (p + 1) * part)
            return !data.contains { $0.overlaps(range) }
        }
        XCTAssertGreaterThanOrEqual(holeParts.count, 2, "the file system keeps the holes: \(data)")
        _ = try moto.helper("s3-create-bucket", ["cvm-sums"])
        let proxy = try moto.startFaultProxy(countingWithDelay: 0)
        defer { proxy.process.terminate(); proxy.process.waitUntilExit() }
        let result = try AWSUpload.run(diskPath: disk, destination: .s3Object(bucket: "cvm-sums", key: "holes.raw"),
                                       environment: moto.environment(endpoint: proxy.endpoint), home: dir.path)
        XCTAssertEqual(result.pieces, 5)
        let stats = try MotoServer.run(["python3", "-c", "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())",
                                        proxy.endpoint + "/proxy-stats"])
        let counts = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(stats.stdout.utf8)) as? [String: Int])
        XCTAssertEqual(counts["part_checksum_ok"], 5, "\(counts)")
        XCTAssertNil(counts["part_checksum_bad"], "\(counts)")
        let copy = dir.appendingPathComponent("holes-copy.raw").path
        _ = try moto.helper("s3-get", ["cvm-sums", "holes.raw", copy])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: disk)))
    }

    func testFailedPartAbortsTheMultipartUpload() throws {
        let disk = try makeGPTDisk("shrinking.raw", size: 16 << 20, fill: 14)
        _ = try moto.helper("s3-create-bucket", ["cvm-abort"])
        var options = AWSUploadOptions()
        options.maxConcurrentTransfers = 1
        let log = LineLog()
        options.log = { log.add($0) }
        // The file shrinks once the first part is in: part 2 can no longer be read.
        options.progress = { done, _ in if done > 0 { truncate(disk, 1 << 20) } }
        XCTAssertThrowsError(try AWSUpload.run(diskPath: disk, destination: .s3Object(bucket: "cvm-abort", key: "k.raw"),
                                               environment: moto.environment(), home: dir.path, options: options)) { error in
            let message = (error as? CVMError)?.message ?? "\(error)"
            XCTAssertTrue(message.hasPrefix("S3 UploadPart 2:"), message)
        }
        let listing = try moto.helper("s3-uploads", ["cvm-abort"])
        XCTAssertEqual(listing["pendingUploads"] as? Int, 0, "the failed upload was aborted")
        XCTAssertEqual(listing["objects"] as? Int, 0)
        XCTAssertTrue(log.lines.contains { $0.hasPrefix("AbortMultipartUpload:") && $0.hasSuffix("aborted") }, "\(log.lines)")
    }

    func testUploadsRecoverFromInjectedFaults() throws {
        let proxy = try moto.startFaultProxy()
        defer { proxy.process.terminate(); proxy.process.waitUntilExit() }
        let env = moto.environment(endpoint: proxy.endpoint)

        let disk = try makeGPTDisk("disk.raw")
        let expected = try nonZeroBlocks(ofRawFile: disk)
        var options = AWSUploadOptions()
        options.pollInterval = (0.1, 0.5)
        let snapshot = try AWSUpload.run(diskPath: disk, destination: .ebsSnapshot(region: moto.region),
                                         environment: env, home: dir.path, options: options)
        try assertSnapshot(try XCTUnwrap(snapshot.snapshotID), holds: expected, checksum: snapshot.checksum)

        let big = try makeGPTDisk("big.raw", size: 12 << 20, fill: 10)
        _ = try moto.helper("s3-create-bucket", ["cvm-faults"])
        let object = try AWSUpload.run(diskPath: big, destination: .s3Object(bucket: "cvm-faults", key: "big.raw"),
                                       environment: env, home: dir.path)
        XCTAssertEqual(object.pieces, 3)
        let copy = dir.appendingPathComponent("copy.raw").path
        let answer = try moto.helper("s3-get", ["cvm-faults", "big.raw", copy])
        XCTAssertEqual(answer["pendingUploads"] as? Int, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: big)))

        // Every kind of fault was really injected (and survived).
        let stats = try MotoServer.run(["python3", "-c", "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())",
                                        proxy.endpoint + "/proxy-stats"])
        let injected = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(stats.stdout.utf8)) as? [String: Int])
        for kind in ["start500", "block503", "blockdrop", "complete500", "describe503", "part500", "completeupload503"] {
            XCTAssertGreaterThan(injected[kind] ?? 0, 0, "fault \(kind) was not exercised: \(injected)")
        }
    }

    // MARK: errors and CLI

    func testWrongSecretIsOneClearLineWithoutTheSecret() throws {
        let disk = try makeGPTDisk("disk.raw")
        let wrong = "WrongSecretKeyValue/1234567890abcdefEXAMPLE"
        for (destination, operation) in [(UploadDestination.ebsSnapshot(region: moto.region), "EBS StartSnapshot"),
                                         (.s3Object(bucket: "cvm-disks", key: "x.raw"), "S3 CreateMultipartUpload")] {
            XCTAssertThrowsError(try AWSUpload.run(diskPath: disk, destination: destination,
                                                   environment: moto.environment(secret: wrong), home: dir.path)) { error in
                let message = (error as? CVMError)?.message ?? "\(error)"
                XCTAssertTrue(message.hasPrefix(operation + ":"), message)
                XCTAssertTrue(message.contains("HTTP 403"), message)
                XCTAssertTrue(message.contains("SignatureDoesNotMatch"), message)
                XCTAssertFalse(message.contains(wrong), "the secret leaked: \(message)")
                XCTAssertFalse(message.contains(self.moto.secretAccessKey))
                XCTAssertFalse(message.contains("\n"), message)
            }
        }
    }

    func testCLIPrintsTheSnapshotIDLastAndJSON() throws {
        let cli = try cliBinary()
        let disk = try makeGPTDisk("disk.raw")
        var env = moto.environment()
        env["HOME"] = dir.path

        let plain = try MotoServer.run([cli, "upload", disk, "ebs://\(moto.region)"], environment: env)
        let last = plain.stdout.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(last.hasPrefix("snap-"), "stdout: \(plain.stdout)")

        let json = try MotoServer.run([cli, "upload", disk, "ebs://\(moto.region)", "--json"], environment: env)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], json.stdout)
        XCTAssertTrue((object["snapshot_id"] as? String)?.hasPrefix("snap-") ?? false, json.stdout)
        XCTAssertEqual(object["destination"] as? String, "ebs://\(moto.region)")
        XCTAssertEqual(object["input_format"] as? String, "raw")
        XCTAssertEqual(object["virtual_size"] as? Int, 6 << 20)
        XCTAssertNotNil(object["checksum"] as? String)
        // Progress as JSON lines on stderr, the last one complete; stdout holds only the result.
        let events = json.stderr.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        XCTAssertEqual(events.count, json.stderr.split(separator: "\n").count, "every stderr line is JSON: \(json.stderr)")
        let final = try XCTUnwrap(events.last, json.stderr)
        XCTAssertEqual(final["event"] as? String, "progress")
        XCTAssertEqual(final["done"] as? Int, final["total"] as? Int)
        XCTAssertGreaterThan(final["total"] as? Int ?? 0, 0)

        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
        let refused = try MotoServer.run([cli, "upload", disk, "ebs://\(moto.region)"], environment: env, allowFailure: true)
        XCTAssertEqual(refused.status, 1)
        XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1, refused.stderr)
        XCTAssertTrue(refused.stderr.hasPrefix("cvm-cli: error: EBS StartSnapshot: "), refused.stderr)
        XCTAssertFalse(refused.stderr.contains("not-the-secret"))

        let usage = try MotoServer.run([cli, "upload", disk, "ftp://bucket/x"], environment: env, allowFailure: true)
        XCTAssertEqual(usage.status, 64, usage.stderr)
    }

    func testInterruptStopsTheUploadAndAbortsIt() throws {
        let cli = try cliBinary()
        let proxy = try moto.startFaultProxy()
        defer { proxy.process.terminate(); proxy.process.waitUntilExit() }
        let big = try makeGPTDisk("big.raw", size: 12 << 20, fill: 10)
        _ = try moto.helper("s3-create-bucket", ["cvm-interrupt"])
        var env = moto.environment(endpoint: proxy.endpoint)
        env["HOME"] = dir.path

        let p = Process()
        p.executableURL = URL(fileURLWithPath: cli)
        p.arguments = ["upload", big, "s3://cvm-interrupt/stall-disk.raw"]
        p.environment = env
        let errURL = dir.appendingPathComponent("stderr.txt")
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        p.standardError = try FileHandle(forWritingTo: errURL)
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        Thread.sleep(forTimeInterval: 2)   // the parts are now held by the proxy
        let start = Date()
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "the interrupt must not wait for the stalled parts")
        XCTAssertEqual(p.terminationStatus, 130)
        let stderr = try String(contentsOf: errURL, encoding: .utf8)
        XCTAssertEqual(stderr.split(separator: "\n").count, 1, stderr)
        XCTAssertTrue(stderr.contains("cancelled"), stderr)
        let listing = try moto.helper("s3-uploads", ["cvm-interrupt"])
        XCTAssertEqual(listing["pendingUploads"] as? Int, 0, "the interrupted upload was aborted")
    }

    // MARK: helpers

    /// Reads the snapshot back with boto3 and compares it with `expected` (index → SHA-256 hex).
    func assertSnapshot(_ id: String, holds expected: [(Int, String)], checksum: String?,
                                file: StaticString = #filePath, line: UInt = #line) throws {
        let answer = try moto.helper("ebs-blocks", [id])
        XCTAssertEqual(answer["state"] as? String, "completed", file: file, line: line)
        XCTAssertEqual(answer["volumeSize"] as? Int, 1, "6 MiB rounds up to 1 GiB", file: file, line: line)
        XCTAssertEqual((answer["tags"] as? [String: String])?["created-by"], "cvm-cli", file: file, line: line)
        let blocks = try XCTUnwrap(answer["blocks"] as? [[String: Any]], file: file, line: line)
        let got = blocks.compactMap { b -> (Int, String)? in
            guard let i = b["index"] as? Int, let h = b["sha256"] as? String else { return nil }
            return (i, h)
        }
        XCTAssertEqual(got.map(\.0), expected.map(\.0), "block indices", file: file, line: line)
        XCTAssertEqual(got.map(\.1), expected.map(\.1), "block contents", file: file, line: line)
        for b in blocks {
            XCTAssertEqual(b["length"] as? Int, 524_288, file: file, line: line)
            XCTAssertEqual(b["checksumOK"] as? Bool, true, "x-amz-Checksum of block \(b["index"] ?? "?")", file: file, line: line)
            XCTAssertEqual(b["algorithm"] as? String, "SHA256", file: file, line: line)
            XCTAssertEqual(b["dataLength"] as? Int, 524_288, file: file, line: line)
        }
        // LINEAR aggregate: SHA-256 over the binary block digests in index order.
        var concatenated = [UInt8]()
        for (_, hex) in expected { concatenated += hexBytes(hex) }
        XCTAssertEqual(checksum, Base64.encode(SHA256.hash(concatenated)), file: file, line: line)
    }

    /// A GPT disk (sgdisk) with data in some blocks, a stored all-zero block, a block with data
    /// across its boundary, and holes.
    func makeGPTDisk(_ name: String, size: UInt64 = 6 << 20, fill: Int = 0) throws -> String {
        let path = dir.appendingPathComponent(name).path
        guard FileManager.default.createFile(atPath: path, contents: nil) else { throw CVMError.io("create \(path)") }
        let raw = open(path, O_RDWR)
        guard raw >= 0 else { throw CVMError.io("open \(path): \(errnoDescription())") }
        let fd = FileDescriptor(fd: raw, path: path)
        defer { fd.close() }
        try fd.truncate(to: size)
        _ = try MotoServer.run(["sgdisk", "-n", "1:2048:+2M", "-n", "2:0:0", path])
        try fd.write(pseudoRandom(524_288, seed: 1), at: 1 << 20)                  // block 2
        try fd.write(pseudoRandom(100 << 10, seed: 2), at: (5 << 19) + 10_240)     // inside block 5
        try fd.write(pseudoRandom(2048, seed: 3), at: (7 << 19) - 1024)            // blocks 6 and 7
        try fd.write([UInt8](repeating: 0, count: 524_288), at: 4 << 20)           // block 8: stored zeros
        for i in 0..<fill { try fd.write(pseudoRandom(1 << 20, seed: UInt64(10 + i)), at: UInt64(i + 1) << 20) }  // keeps both GPTs
        return path
    }

    /// (index, SHA-256 hex) of every non-zero 512 KiB block of a raw file.
    func nonZeroBlocks(ofRawFile path: String) throws -> [(Int, String)] {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var out = [(Int, String)]()
        var index = 0
        while index * 524_288 < data.count {
            var block = Array(data[(index * 524_288)..<min(data.count, (index + 1) * 524_288)])
            block += [UInt8](repeating: 0, count: 524_288 - block.count)
            if block.contains(where: { $0 != 0 }) { out.append((index, hexString(SHA256.hash(block)))) }
            index += 1
        }
        return out
    }

    private func pseudoRandom(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }

    private func hexBytes(_ hex: String) -> [UInt8] {
        var out = [UInt8]()
        var it = hex.makeIterator()
        while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16) ?? 0) }
        return out
    }

    /// The cvm-cli executable built next to the test bundle.
    func cliBinary() throws -> String { try BuiltProducts.require("cvm-cli") }
}

/// Progress callbacks arrive from several threads.
final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var last: UInt64 = 0
    func record(_ done: UInt64, _ total: UInt64) { lock.withLock { last = max(last, done) } }
}

final class LineLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    var lines: [String] { lock.withLock { stored } }
    func add(_ line: String) { lock.withLock { stored.append(line) } }
}
