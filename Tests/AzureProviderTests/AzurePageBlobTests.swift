import CVMTestData
import AzureProvider
import CVMCrypto
import CVMSupport
import DiskImage
import Foundation
import AzureTestSupport
import XCTest

/// End-to-end page blob uploads against a local endpoint that checks every SharedKey signature
/// with azure-storage-blob's own policy; what arrived is read back with the SDK's BlobClient and
/// compared with the VHD the converter writes (and with the source by `qemu-img compare`).
final class AzurePageBlobTests: XCTestCase {
    nonisolated(unsafe) static var server: PageBlobServer?
    nonisolated(unsafe) static var startError: Error?

    override class func setUp() {
        super.setUp()
        do { server = try PageBlobServer() } catch { startError = error }
    }

    override class func tearDown() {
        server?.stop()
        server = nil
        super.tearDown()
    }

    private var azure: PageBlobServer!
    private var dir: URL!

    override func setUpWithError() throws {
        if let e = Self.startError { throw e }
        azure = try XCTUnwrap(Self.server)
        try azure.setPageDelay(0)
        try azure.resetStats()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-azure-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let dir { try? FileManager.default.removeItem(at: dir) }
    }

    // MARK: content

    func testRawDiskIsConvertedOnTheFlyAndOnlyNonZeroPagesAreSent() throws {
        let raw = try makeDisk("disk.raw")
        let expectedVHD = try convertToVHD(raw)
        let expected = try nonZeroPages(of: expectedVHD)
        let allocated = try DiskImageFile.open(raw).allocatedBytes()

        let result = try AzureUpload.run(diskPath: raw, destination: AzureBlobDestination(container: "disks", blob: "dir/test disk.vhd"),
                                         environment: azure.environment(home: dir.path), home: dir.path, options: options())
        XCTAssertFalse(result.sentAsIs)
        XCTAssertFalse(result.resumed)
        XCTAssertEqual(result.inputFormat, "raw")
        XCTAssertEqual(result.virtualSize, Self.diskSize)
        XCTAssertEqual(result.blobSize, UInt64(try fileSize(expectedVHD)))
        XCTAssertEqual(result.bytesSent, expected.bytes)
        XCTAssertLessThanOrEqual(Double(result.bytesSent), 1.05 * Double(allocated) + 512, "bytes sent vs allocated data")

        try assertBlob("disks", "dir/test disk.vhd", equals: expectedVHD, pages: expected, md5: result.contentMD5)
        try assertSource(raw, format: "raw", equalsBlobCopy: dir.appendingPathComponent("copy.vhd").path)

        let stats = try azure.stats()
        XCTAssertEqual(stats["auth_failures"] as? Int, 0)
        XCTAssertEqual(stats["page_bytes"] as? Int, Int(expected.bytes), "bytes received by the server")
        XCTAssertEqual(stats["zero_sectors_received"] as? Int, 0, "an all-zero 512-byte page was sent")
        XCTAssertEqual(stats["unaligned_pages"] as? Int, 0)
        XCTAssertEqual(stats["put_page"] as? Int, result.pages)
        XCTAssertEqual(stats["md5_checked"] as? Int, result.pages, "every Put Page carries Content-MD5")
        XCTAssertGreaterThan(result.pages, 6, "the disk has several runs, some split at window edges")
        for version in try XCTUnwrap(stats["versions"] as? [String]) {
            XCTAssertGreaterThanOrEqual(version, "2021", "x-ms-version \(version)")
        }
    }

    func testQCOW2DynamicVHDAndFixedVHDInputs() throws {
        let raw = try makeDisk("source.raw")
        let expectedVHD = try convertToVHD(raw)
        let expected = try nonZeroPages(of: expectedVHD)
        let env = azure.environment(home: dir.path)

        // qcow2 and a dynamic VHD (made by qemu-img): converted on the fly to the same fixed VHD.
        for (format, name) in [("qcow2", "disk.qcow2"), ("vpc", "dynamic.vhd")] {
            let path = dir.appendingPathComponent(name).path
            try PageBlobServer.run(["qemu-img", "convert", "-f", "raw", "-O", format] + (format == "vpc" ? ["-o", "force_size=on"] : []) + [raw, path])
            let result = try AzureUpload.run(diskPath: path, destination: AzureBlobDestination(container: "formats", blob: name),
                                             environment: env, home: dir.path, options: options())
            XCTAssertFalse(result.sentAsIs, name)
            XCTAssertEqual(result.bytesSent, expected.bytes, name)
            try assertBlob("formats", name, equals: expectedVHD, pages: expected, md5: result.contentMD5)
        }

        // A MiB-aligned fixed VHD goes as is.
        let result = try AzureUpload.run(diskPath: expectedVHD, destination: AzureBlobDestination(container: "formats", blob: "fixed.vhd"),
                                         environment: env, home: dir.path, options: options())
        XCTAssertTrue(result.sentAsIs)
        XCTAssertEqual(result.inputFormat, "vhd-fixed")
        try assertBlob("formats", "fixed.vhd", equals: expectedVHD, pages: expected, md5: result.contentMD5)

        // qemu-img's fixed VHD of an odd size is padded to a MiB (Azure refuses anything else).
        let odd = dir.appendingPathComponent("odd.vhd").path
        try PageBlobServer.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", raw, odd])
        let padded = try AzureUpload.run(diskPath: odd, destination: AzureBlobDestination(container: "formats", blob: "odd.vhd"),
                                         environment: env, home: dir.path, options: options())
        XCTAssertFalse(padded.sentAsIs)
        XCTAssertEqual(padded.blobSize % (1 << 20), 512)
        let copy = dir.appendingPathComponent("odd-copy.vhd").path
        _ = try azure.download(container: "formats", blob: "odd.vhd", to: copy)
        try assertSameDisk(copy, "vpc", raw, "raw")
    }

    // MARK: resume

    func testKilledUploadResumesWithoutResendingStoredPages() throws {
        let cli = try cliBinary()
        let raw = try makeDisk("big.raw", size: 40 << 20, runs: 48)
        let expectedVHD = try convertToVHD(raw)
        let expected = try nonZeroPages(of: expectedVHD)
        let cache = dir.appendingPathComponent("cache")
        var env = azure.environment(home: dir.path)
        env["XDG_CACHE_HOME"] = cache.path

        try azure.setPageDelay(0.25)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cli)
        p.arguments = ["upload", raw, "az://resume/big.vhd", "--json"]
        p.environment = env
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(60)
        while (try azure.stats()["page_bytes"] as? Int ?? 0) < Int(expected.bytes) / 2 {
            XCTAssertTrue(p.isRunning, "the upload finished before it could be killed")
            XCTAssertLessThan(Date(), deadline)
            if !p.isRunning || Date() > deadline { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        try azure.setPageDelay(0)
        let firstRun = try XCTUnwrap(try azure.stats()["page_bytes"] as? Int)
        XCTAssertLessThan(firstRun, Int(expected.bytes), "killed half-way")

        // The state: one file, mode 0600, no secret.
        let states = try FileManager.default.contentsOfDirectory(atPath: cache.appendingPathComponent("cvm-cli/resume").path)
        XCTAssertEqual(states.count, 1, "\(states)")
        let statePath = cache.appendingPathComponent("cvm-cli/resume/\(states[0])").path
        let attributes = try FileManager.default.attributesOfItem(atPath: statePath)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        let stateText = try String(contentsOfFile: statePath, encoding: .utf8)
        XCTAssertFalse(stateText.contains(azure.key))
        XCTAssertTrue(stateText.contains("big.vhd"), stateText)

        let resumed = try PageBlobServer.run([cli, "upload", raw, "az://resume/big.vhd", "--resume", "--json"], environment: env)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(resumed.stdout.utf8)) as? [String: Any], resumed.stdout)
        XCTAssertEqual(object["resumed"] as? Bool, true)
        XCTAssertGreaterThan(object["bytes_already_stored"] as? Int ?? 0, 0)
        let total = try XCTUnwrap(try azure.stats()["page_bytes"] as? Int)
        XCTAssertEqual(total - firstRun, object["bytes_sent"] as? Int)
        XCTAssertLessThan(Double(total), 1.25 * Double(expected.bytes), "bytes sent over both runs: \(total) for \(expected.bytes) of data")
        try assertBlob("resume", "big.vhd", equals: expectedVHD, pages: expected, md5: object["md5"] as? String ?? "")
        XCTAssertFalse(FileManager.default.fileExists(atPath: statePath), "the state is removed when the upload completes")

        // Without --resume, a rerun starts clean: the blob is recreated and every page sent again.
        try azure.resetStats()
        let again = try PageBlobServer.run([cli, "upload", raw, "az://resume/big.vhd", "--json"], environment: env)
        let second = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(second["resumed"] as? Bool, false)
        XCTAssertEqual(second["bytes_sent"] as? Int, Int(expected.bytes))
        XCTAssertEqual((try azure.stats()["ops"] as? [String: Int])?["PUT blob"], 1)
    }

    func testInterruptStopsQuicklyAndKeepsTheStateForResume() throws {
        let cli = try cliBinary()
        let raw = try makeDisk("int.raw", size: 40 << 20, runs: 48)
        let expectedVHD = try convertToVHD(raw)
        let expected = try nonZeroPages(of: expectedVHD)
        var env = azure.environment(home: dir.path)
        env["XDG_CACHE_HOME"] = dir.appendingPathComponent("cache").path

        try azure.setPageDelay(2)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cli)
        p.arguments = ["upload", raw, "az://interrupt/disk.vhd"]
        p.environment = env
        let errURL = dir.appendingPathComponent("stderr.txt")
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        p.standardError = try FileHandle(forWritingTo: errURL)
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(30)
        while (try azure.stats()["put_page"] as? Int ?? 0) == 0, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        let start = Date()
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        try azure.setPageDelay(0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 1.5, "the interrupt must not wait for the slow pages")
        XCTAssertEqual(p.terminationStatus, 130)
        let stderr = try String(contentsOf: errURL, encoding: .utf8)
        XCTAssertEqual(stderr.split(separator: "\n").count, 1, stderr)
        XCTAssertTrue(stderr.contains("cancelled"), stderr)

        let resumed = try PageBlobServer.run([cli, "upload", raw, "az://interrupt/disk.vhd", "--resume", "--json"], environment: env)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(resumed.stdout.utf8)) as? [String: Any], resumed.stdout)
        XCTAssertEqual(object["resumed"] as? Bool, true, "the state survived the interrupt")
        try assertBlob("interrupt", "disk.vhd", equals: expectedVHD, pages: expected, md5: object["md5"] as? String ?? "")
    }

    // MARK: faults, errors, secrets

    func testFaultsAreRetriedAndNoSecretIsPrinted() throws {
        let cli = try cliBinary()
        let proxy = try azure.startFaultProxy()
        defer { proxy.process.terminate(); proxy.process.waitUntilExit() }
        let raw = try makeDisk("faults.raw")
        let expectedVHD = try convertToVHD(raw)
        let expected = try nonZeroPages(of: expectedVHD)
        let env = azure.environment(endpoint: proxy.endpoint, home: dir.path)

        let run = try PageBlobServer.run([cli, "upload", "--verbose", raw, "az://faults/disk.vhd", "--json"], environment: env)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], run.stdout)
        try assertBlob("faults", "disk.vhd", equals: expectedVHD, pages: expected, md5: object["md5"] as? String ?? "")
        XCTAssertTrue(run.stderr.contains("retrying in"), run.stderr)
        XCTAssertTrue(run.stderr.contains("HTTP 503 ServerBusy"), run.stderr)
        XCTAssertTrue(run.stderr.contains("HTTP 429"), run.stderr)
        XCTAssertTrue(run.stderr.contains("(Retry-After)"), run.stderr)
        XCTAssertTrue(run.stderr.contains("HTTP concurrency lowered to"), "adaptive drop on 503: \(run.stderr)")

        let injected = try azure.getJSON(proxy.endpoint + "/_proxy/stats")
        for kind in ["container503", "putblob500", "page503", "page429", "pagedrop", "pageslow", "properties500"] {
            XCTAssertGreaterThan(injected[kind] as? Int ?? 0, 0, "fault \(kind) was not exercised: \(injected)")
        }
        try assertNoSecret(in: run.stdout + run.stderr)
    }

    func testWrongKeyIsOneClearLineWithoutTheKey() throws {
        let raw = try makeDisk("disk.raw")
        let wrong = Base64.encode([UInt8](repeating: 7, count: 64))
        XCTAssertThrowsError(try AzureUpload.run(diskPath: raw, destination: AzureBlobDestination(container: "disks", blob: "x.vhd"),
                                                 environment: azure.environment(key: wrong, home: dir.path), home: dir.path)) { error in
            let message = (error as? CVMError)?.message ?? "\(error)"
            XCTAssertTrue(message.hasPrefix("Create Container disks:"), message)
            XCTAssertTrue(message.contains("HTTP 403 AuthenticationFailed"), message)
            XCTAssertTrue(message.contains("check the system clock and the key"), message)
            XCTAssertFalse(message.contains(wrong), "the key leaked: \(message)")
            XCTAssertFalse(message.contains("\n"), message)
        }
        XCTAssertGreaterThan(try azure.stats()["auth_failures"] as? Int ?? 0, 0, "the server refused the signature")

        let cli = try cliBinary()
        for verbose in [false, true] {
            let refused = try PageBlobServer.run([cli, "upload", raw, "az://disks/x.vhd"] + (verbose ? ["--verbose"] : []),
                                                 environment: azure.environment(key: wrong, home: dir.path), allowFailure: true)
            XCTAssertEqual(refused.status, 1, refused.stderr)
            if !verbose {
                XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1, refused.stderr)
            }
            let last = refused.stderr.split(separator: "\n").last.map(String.init) ?? ""
            XCTAssertTrue(last.hasPrefix("cvm-cli: error: Create Container disks: "), refused.stderr)
            XCTAssertTrue(last.contains("403"), refused.stderr)
            XCTAssertFalse(refused.stderr.contains(wrong))
            try assertNoSecret(in: refused.stdout + refused.stderr)
        }
    }

    func testCLIOutputsAndUsageErrors() throws {
        let cli = try cliBinary()
        let raw = try makeDisk("disk.raw")
        let env = azure.environment(home: dir.path)
        let plain = try PageBlobServer.run([cli, "upload", raw, "az://cli/disk.vhd"], environment: env)
        let last = plain.stdout.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(last.hasPrefix(azure.endpoint + "/\(azure.account)/cli/disk.vhd "), plain.stdout)

        let json = try PageBlobServer.run([cli, "upload", raw, "az://cli/disk.vhd", "--json"], environment: env)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], json.stdout)
        XCTAssertEqual(object["container"] as? String, "cli")
        XCTAssertEqual(object["blob"] as? String, "disk.vhd")
        XCTAssertEqual(object["size"] as? Int, Int(Self.diskSize) + (1 << 20) - Int(Self.diskSize % (1 << 20)) + 512)
        XCTAssertNotNil(object["md5"] as? String)
        XCTAssertGreaterThan(object["bytes_sent"] as? Int ?? 0, 0)
        XCTAssertGreaterThan(object["pages"] as? Int ?? 0, 0)

        for (destination, expected) in [("az://Bad_Name/x.vhd", "not a valid container name"), ("az://disks", "has no blob name"),
                                        ("az://disks/", "blob name must be")] {
            let r = try PageBlobServer.run([cli, "upload", raw, destination], environment: env, allowFailure: true)
            XCTAssertEqual(r.status, 64, r.stderr)
            XCTAssertTrue(r.stderr.contains(expected), r.stderr)
        }
        let none = try PageBlobServer.run([cli, "upload", raw, "az://disks/x.vhd"], environment: ["HOME": dir.path], allowFailure: true)
        XCTAssertEqual(none.status, 64, none.stderr)
        XCTAssertTrue(none.stderr.contains("AZURE_STORAGE_CONNECTION_STRING"), none.stderr)
        XCTAssertEqual(none.stderr.split(separator: "\n").count, 1, none.stderr)
        let missing = try PageBlobServer.run([cli, "upload", dir.appendingPathComponent("nope.raw").path, "az://disks/x.vhd"],
                                             environment: env, allowFailure: true)
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.hasPrefix("cvm-cli: error: ") && missing.stderr.contains("nope.raw"), missing.stderr)
    }

    // MARK: helpers

    static let diskSize: UInt64 = (24 << 20) + 1536

    private func options() -> AzureUploadOptions {
        var o = AzureUploadOptions()
        o.footerTimestamp = 0
        return o
    }

    /// A sparse raw disk whose virtual size is not MiB-aligned, holding: data that starts and ends
    /// inside sectors, a 6 MiB run across window edges, stored zeros, alternating zero and
    /// non-zero sectors, `runs` more 200 KiB runs, and data in the very last sector.
    private func makeDisk(_ name: String, size: UInt64 = diskSize, runs: Int = 0) throws -> String {
        let path = dir.appendingPathComponent(name).path
        guard FileManager.default.createFile(atPath: path, contents: nil) else { throw CVMError.io("create \(path)") }
        let raw = open(path, O_RDWR)
        guard raw >= 0 else { throw CVMError.io("open \(path): \(errnoDescription())") }
        let fd = FileDescriptor(fd: raw, path: path)
        defer { fd.close() }
        try fd.truncate(to: size)
        try fd.write(random(300 << 10, seed: 1), at: (1 << 20) + 1000)
        try fd.write(random(6 << 20, seed: 2), at: 6 << 20)
        try fd.write([UInt8](repeating: 0, count: 2 << 20), at: 14 << 20)
        for i in 0..<64 where i % 2 == 0 { try fd.write(random(512, seed: UInt64(100 + i)), at: (17 << 20) + UInt64(i * 512)) }
        for i in 0..<runs { try fd.write(random(200 << 10, seed: UInt64(1000 + i)), at: (20 << 20) + UInt64(i) * (320 << 10)) }
        try fd.write(random(10, seed: 3), at: size - 10)
        return path
    }

    private func random(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return UInt8(truncatingIfNeeded: state | 1)   // never zero: no accidental zero sector
        }
    }

    /// The converter's fixed VHD of `path` (what the blob must hold byte for byte).
    private func convertToVHD(_ path: String) throws -> String {
        let out = path + ".expected.vhd"
        _ = try DiskConversion.run(input: path, output: out, format: .vhd, overwrite: true, options: WriterOptions(timestamp: 0))
        return out
    }

    /// Runs of non-zero 512-byte pages of a file, and their total size.
    private func nonZeroPages(of path: String) throws -> (ranges: [Range<UInt64>], bytes: UInt64) {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var ranges = [Range<UInt64>]()
        var bytes: UInt64 = 0
        for page in stride(from: 0, to: data.count, by: 512) where data[page..<(page + 512)].contains(where: { $0 != 0 }) {
            let r = UInt64(page)..<UInt64(page + 512)
            bytes += 512
            if let last = ranges.last, last.upperBound == r.lowerBound { ranges[ranges.count - 1] = last.lowerBound..<r.upperBound }
            else { ranges.append(r) }
        }
        return (ranges, bytes)
    }

    /// Downloads the blob with the SDK and checks bytes, page ranges and Content-MD5.
    private func assertBlob(_ container: String, _ blob: String, equals vhd: String, pages: (ranges: [Range<UInt64>], bytes: UInt64),
                            md5: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let copy = dir.appendingPathComponent("copy.vhd").path
        let answer = try azure.download(container: container, blob: blob, to: copy)
        let expected = try Data(contentsOf: URL(fileURLWithPath: vhd))
        XCTAssertEqual(answer.type, "PageBlob", file: file, line: line)
        XCTAssertEqual(answer.size, UInt64(expected.count), file: file, line: line)
        XCTAssertTrue(try Data(contentsOf: URL(fileURLWithPath: copy)) == expected, "blob bytes differ from \(vhd)", file: file, line: line)
        XCTAssertEqual(answer.ranges, pages.ranges, "page ranges are exactly the non-zero pages", file: file, line: line)
        let wholeMD5 = Base64.encode(MD5.hash([UInt8](expected)))
        XCTAssertEqual(md5, wholeMD5, file: file, line: line)
        XCTAssertEqual(answer.md5, wholeMD5, "the blob's Content-MD5", file: file, line: line)
    }

    private func assertSource(_ source: String, format: String, equalsBlobCopy copy: String) throws {
        try assertSameDisk(copy, "vpc", source, format)
    }

    private func assertSameDisk(_ a: String, _ aFormat: String, _ b: String, _ bFormat: String) throws {
        // The VHD is padded beyond the source; qemu-img checks that the extra part reads as zeros.
        let r = try PageBlobServer.run(["qemu-img", "compare", "-f", aFormat, "-F", bFormat, a, b], allowFailure: true)
        XCTAssertEqual(r.status, 0, "qemu-img compare: \(r.stdout) \(r.stderr)")
    }

    /// Neither the account key nor any signature the server received appears in `text`.
    private func assertNoSecret(in text: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertFalse(text.contains(azure.key), "the account key leaked", file: file, line: line)
        XCTAssertFalse(text.contains("SharedKey"), "an Authorization header leaked", file: file, line: line)
        let signatures = try XCTUnwrap(try azure.stats()["signatures"] as? [String])
        XCTAssertFalse(signatures.isEmpty, file: file, line: line)
        for s in signatures where text.contains(s) {
            XCTFail("signature \(s.prefix(6))… leaked", file: file, line: line)
            return
        }
    }

    private func fileSize(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? -1
    }

    /// The cvm-cli executable built next to the test bundle.
    private func cliBinary() throws -> String { try BuiltProducts.require("cvm-cli") }
}
