import AWSProvider
import AWSTestSupport
import CVMSupport
import Foundation
import XCTest

/// `upload --resume`: an upload killed half-way (SIGKILL, so no clean-up runs) continues from
/// what the server holds, and the bytes delivered over both runs stay close to the data.
extension AWSUploadMotoTests {
    func testKilledEBSUploadResumesWithoutSendingTheDataTwice() throws {
        let disk = try makeGPTDisk("resume.raw", size: 72 << 20, fill: 64)
        let expected = try nonZeroBlocks(ofRawFile: disk)
        XCTAssertGreaterThan(expected.count, 120)
        let dataBytes = UInt64(expected.count) * 524_288

        let proxy = try moto.startFaultProxy(countingWithDelay: 0.15)
        defer { proxy.process.terminate(); proxy.process.waitUntilExit() }
        let env = resumeEnvironment(endpoint: proxy.endpoint)

        try runAndKill(["upload", disk, "ebs://\(moto.region)", "--resume"], environment: env,
                       proxy: proxy.endpoint, afterAcceptedPuts: 50)
        let firstRun = try proxyStats(proxy.endpoint)
        XCTAssertLessThan(firstRun["put_ok"] ?? 0, expected.count, "the first run must die half-way")
        let state = try stateFiles(env)
        XCTAssertEqual(state.count, 1, "the killed run left its resume state")
        let mode = try FileManager.default.attributesOfItem(atPath: state[0])[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)

        let result = try MotoServer.run([try cliBinary(), "upload", disk, "ebs://\(moto.region)", "--resume", "--json"],
                                        environment: env)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let id = try XCTUnwrap(json["snapshot_id"] as? String)
        XCTAssertEqual(json["pieces"] as? Int, expected.count)
        try assertSnapshot(id, holds: expected, checksum: json["checksum"] as? String)

        let total = UInt64(try proxyStats(proxy.endpoint)["put_bytes"] ?? 0)
        print("EBS resume: \(total) bytes delivered over both runs for \(dataBytes) of data (\(String(format: "%.2f", Double(total) / Double(dataBytes)))x)")
        XCTAssertLessThan(Double(total), 1.25 * Double(dataBytes), "bytes delivered over both runs: \(total) for \(dataBytes) of data")
        XCTAssertLessThan((json["bytes_sent"] as? Int) ?? .max, Int(dataBytes), "the resumed run skipped stored blocks")
        XCTAssertEqual(try stateFiles(env), [], "a finished upload removes its resume state")
    }

    func testKilledS3UploadResumesFromTheStoredParts() throws {
        let file = try makeGPTDisk("resume-s3.raw", size: 80 << 20, fill: 78)
        _ = try moto.helper("s3-create-bucket", ["cvm-resume"])
        let proxy = try moto.startFaultProxy(countingWithDelay: 0.6)
        defer { proxy.process.terminate(); proxy.process.waitUntilExit() }
        let env = resumeEnvironment(endpoint: proxy.endpoint)

        try runAndKill(["upload", file, "s3://cvm-resume/disk.raw", "--resume"], environment: env,
                       proxy: proxy.endpoint, afterAcceptedPuts: 6)
        XCTAssertEqual(try stateFiles(env).count, 1)
        let pending = try moto.helper("s3-uploads", ["cvm-resume"])
        XCTAssertEqual(pending["pendingUploads"] as? Int, 1, "with --resume a killed upload is kept, not aborted")

        let result = try MotoServer.run([try cliBinary(), "upload", file, "s3://cvm-resume/disk.raw", "--resume", "--json"],
                                        environment: env)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(json["pieces"] as? Int, 16)
        let size = try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
        XCTAssertLessThan((json["bytes_sent"] as? Int) ?? .max, size - 5 * (5 << 20), "stored parts were not sent again")
        let total = try proxyStats(proxy.endpoint)["put_bytes"] ?? 0
        print("S3 resume: \(total) bytes delivered over both runs for a \(size)-byte file (\(String(format: "%.2f", Double(total) / Double(size)))x)")
        XCTAssertLessThan(Double(total), 1.25 * Double(size), "bytes delivered over both runs")

        let copy = dir.appendingPathComponent("copy.raw").path
        let answer = try moto.helper("s3-get", ["cvm-resume", "disk.raw", copy])
        XCTAssertEqual(answer["pendingUploads"] as? Int, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: file)))
        XCTAssertEqual(try stateFiles(env), [])
    }

    func testResumeStartsAfreshWhenTheFileChanged() throws {
        let disk = try makeGPTDisk("changed.raw", size: 40 << 20, fill: 36)
        let proxy = try moto.startFaultProxy(countingWithDelay: 0.15)
        defer { proxy.process.terminate(); proxy.process.waitUntilExit() }
        let env = resumeEnvironment(endpoint: proxy.endpoint)
        try runAndKill(["upload", disk, "ebs://\(moto.region)", "--resume"], environment: env,
                       proxy: proxy.endpoint, afterAcceptedPuts: 20)
        // Same path, other content: the journal of the old content must not be trusted.
        let fd = FileDescriptor(fd: open(disk, O_RDWR), path: disk)
        try fd.write([UInt8](repeating: 0xA5, count: 4096), at: 3 << 20)
        fd.close()
        let expected = try nonZeroBlocks(ofRawFile: disk)
        let result = try MotoServer.run([try cliBinary(), "upload", disk, "ebs://\(moto.region)", "--resume", "--json", "--verbose"],
                                        environment: env)
        XCTAssertFalse(result.stderr.contains("resuming snapshot"), result.stderr)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(json["bytes_sent"] as? Int, expected.count * 524_288, "everything sent again")
        try assertSnapshot(try XCTUnwrap(json["snapshot_id"] as? String), holds: expected,
                           checksum: json["checksum"] as? String)
    }

    // MARK: helpers

    private func resumeEnvironment(endpoint: String) -> [String: String] {
        var env = moto.environment(endpoint: endpoint)
        env["HOME"] = dir.path
        env["XDG_CACHE_HOME"] = dir.appendingPathComponent("cache").path
        return env
    }

    private func stateFiles(_ env: [String: String]) throws -> [String] {
        let folder = try XCTUnwrap(env["XDG_CACHE_HOME"]) + "/cvm-cli/resume"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { $0.hasSuffix(".json") }.map { folder + "/" + $0 }
    }

    /// Starts cvm-cli, SIGKILLs it once the server accepted `afterAcceptedPuts` bodies.
    private func runAndKill(_ arguments: [String], environment: [String: String], proxy: String,
                            afterAcceptedPuts: Int) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try cliBinary())
        p.arguments = arguments
        p.environment = environment
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(120)
        while p.isRunning, Date() < deadline, (try proxyStats(proxy)["put_ok"] ?? 0) < afterAcceptedPuts {
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTAssertTrue(p.isRunning, "the upload finished before it could be killed")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        Thread.sleep(forTimeInterval: 1.5)   // bodies the proxy already holds reach the server
    }

    private func proxyStats(_ proxy: String) throws -> [String: Int] {
        let stats = try MotoServer.run(["python3", "-c", "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())",
                                        proxy + "/proxy-stats"])
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(stats.stdout.utf8)) as? [String: Int])
    }
}
