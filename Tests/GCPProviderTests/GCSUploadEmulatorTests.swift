import CloudAuth
import CVMSupport
import CVMTestData
import DiskImage
import Foundation
import GCPProvider
import GCPTestSupport
import Transport
import XCTest

/// End-to-end GCS uploads: gcp-storage-emulator behind a token-checking proxy, objects read
/// back with the official google-cloud-storage client and compared byte for byte.
final class GCSUploadEmulatorTests: XCTestCase {
    nonisolated(unsafe) static var shared: GCSHarness?
    nonisolated(unsafe) static var startError: Error?

    override class func setUp() {
        super.setUp()
        do { shared = try GCSHarness() } catch { startError = error }
    }

    override class func tearDown() {
        shared?.stop()
        shared = nil
        super.tearDown()
    }

    private var harness: GCSHarness!
    private var dir: URL!
    private var proxies: [GCSHarness.Proxy] = []

    override func setUpWithError() throws {
        if let e = Self.startError { throw e }
        harness = try XCTUnwrap(Self.shared)
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-gcs-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        for p in proxies { p.stop() }
        if let dir { try? FileManager.default.removeItem(at: dir) }
    }

    private func proxy(faults: Bool = false, chunkDelay: Double = 0) throws -> (GCSHarness.Proxy, [String: String]) {
        let p = try harness.startProxy(faults: faults, chunkDelay: chunkDelay)
        proxies.append(p)
        let key = try harness.writeKeyFile(tokenURI: p.tokenURI, name: "key-\(p.port).json")
        return (p, harness.environment(proxy: p, keyFile: key, home: dir))
    }

    // MARK: uploads

    func testRawDiskIsConvertedOnTheFlyAndStoredIntact() throws {
        let raw = try makeDisk("disk.raw", size: 24 << 20)
        let (proxy, env) = try proxy()
        var options = GCSUploadOptions()
        options.chunkSize = 2 << 20
        let progress = ProgressMax()
        options.progress = { done, total in progress.record(done, total) }
        let result = try GCSUpload.run(diskPath: raw, destination: GCSObjectName(bucket: GCSHarness.bucket, object: "images/disk.tar.gz"),
                                       environment: env, home: dir.path, options: options)
        XCTAssertTrue(result.converted)
        XCTAssertEqual(result.inputFormat, "raw")
        XCTAssertEqual(result.resumedFrom, 0)
        XCTAssertEqual(progress.last, 24 << 20)

        // What arrived is exactly what `cvm-cli convert` writes, and GNU tar reads the disk back.
        let reference = dir.appendingPathComponent("reference.tar.gz").path
        _ = try DiskConversion.run(input: raw, output: reference, format: .tarGz, overwrite: true,
                                   options: WriterOptions(compressionLevel: 6, timestamp: 0))
        let copy = dir.appendingPathComponent("copy.tar.gz").path
        let got = try harness.download("images/disk.tar.gz", to: copy)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: reference)))
        try assertHashes(got, result: result, file: copy)
        let listing = try GCSHarness.run(["tar", "-tzvf", copy]).stdout
        XCTAssertTrue(listing.contains(" 1073741824 ") && listing.hasSuffix("disk.raw\n"), listing)
        let same = try GCSHarness.run(["bash", "-c", "tar -xzOf \"$1\" disk.raw | head -c \(24 << 20) | cmp - \"$2\"", "_", copy, raw], allowFailure: true)
        XCTAssertEqual(same.status, 0, "disk.raw differs from the input: \(same.stdout) \(same.stderr)")

        let stats = try proxy.stats()
        XCTAssertEqual(stats["unauthorized"] as? Int, 0)
        XCTAssertEqual(stats["rejected_grants"] as? Int, 0)
        XCTAssertEqual(stats["token_requests"] as? Int, 1, "the token is cached")
        XCTAssertEqual(stats["bytes_in"] as? Int, Int(result.size))
        XCTAssertEqual(result.bytesSent, result.size)
        let states = (try? FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("cache/cvm-cli/resume").path)) ?? []
        XCTAssertEqual(states, [], "a finished upload leaves no state")
    }

    func testTarGzIsSentAsIs() throws {
        let raw = try makeDisk("source.raw", size: 12 << 20)
        let archive = dir.appendingPathComponent("disk.tar.gz").path
        _ = try DiskConversion.run(input: raw, output: archive, format: .tarGz, overwrite: true,
                                   options: WriterOptions(compressionLevel: 1, timestamp: 1_700_000_000))
        let (_, env) = try proxy()
        var options = GCSUploadOptions()
        options.chunkSize = 4 << 20
        let result = try GCSUpload.run(diskPath: archive, destination: GCSObjectName(bucket: GCSHarness.bucket, object: "as-is.tar.gz"),
                                       environment: env, home: dir.path, options: options)
        XCTAssertFalse(result.converted)
        XCTAssertEqual(result.inputFormat, "gcp-tar-gz")
        let copy = dir.appendingPathComponent("copy.tar.gz").path
        let got = try harness.download("as-is.tar.gz", to: copy)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: archive)))
        try assertHashes(got, result: result, file: copy)
    }

    // MARK: credentials

    func testTheRefereesRefuseUnknownTokensAndAcceptGoogleAuthJWTs() throws {
        let (proxy, _) = try proxy()
        let r = try GCSHarness.run(["python3", "-c", """
            import urllib.request, urllib.error, sys
            req = urllib.request.Request(sys.argv[1] + "/upload/storage/v1/b/cvm-images/o?uploadType=resumable&name=x", data=b"{}", method="POST",
                                         headers={"Authorization": "Bearer ya29.made-up", "Content-Type": "application/json"})
            try:
                urllib.request.urlopen(req); print(200)
            except urllib.error.HTTPError as e:
                print(e.code)
            """, proxy.endpoint])
        XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "401")

        // The token server accepts what Google's own library signs (aud = Google's token URI),
        // so it judges our JWTs by the real rules, not by ours.
        let key = try harness.writeKeyFile(tokenURI: proxy.tokenURI, name: "google-auth.json")
        let g = try GCSHarness.run(["python3", "-c", """
            import sys
            from google.oauth2 import service_account
            from google.auth.transport.requests import Request
            c = service_account.Credentials.from_service_account_file(sys.argv[1], scopes=["https://www.googleapis.com/auth/devstorage.read_write"])
            c.refresh(Request())
            print("ok" if c.token.startswith("ya29.test-") else "bad")
            """, key])
        XCTAssertEqual(g.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "ok")
        XCTAssertEqual(try proxy.stats()["token_requests"] as? Int, 1)
    }

    func testWrongKeyIsOneClearLineWithoutSecrets() throws {
        let cli = try GCSHarness.cliBinary()
        let raw = try makeDisk("disk.raw", size: 4 << 20)
        let (proxy, baseEnv) = try proxy()
        let otherKey = dir.appendingPathComponent("other.pem").path
        try GCSHarness.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", otherKey])
        let otherPEM = try String(contentsOfFile: otherKey, encoding: .utf8)
        var env = baseEnv
        env["GOOGLE_APPLICATION_CREDENTIALS"] = try harness.writeKeyFile(tokenURI: proxy.tokenURI, pem: otherPEM, name: "wrong.json")
        let r = try GCSHarness.run([cli, "upload", raw, "gs://\(GCSHarness.bucket)/wrong.tar.gz"], environment: env, allowFailure: true)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.hasPrefix("cvm-cli: error: "), r.stderr)
        XCTAssertTrue(r.stderr.contains("HTTP 400 invalid_grant: Invalid JWT Signature."), r.stderr)
        XCTAssertTrue(r.stderr.contains("wrong.json"), "names the key file: \(r.stderr)")
        let stats = try proxy.stats()
        XCTAssertGreaterThan(stats["rejected_grants"] as? Int ?? 0, 0)
        XCTAssertEqual(stats["chunk_puts"] as? Int, 0)
        try assertNoSecrets(in: [r.stdout, r.stderr], stats: stats, extraSecrets: pemLines(otherPEM))
    }

    func testAuthorizedUserCredentialsFromGcloudsFile() throws {
        let cli = try GCSHarness.cliBinary()
        let raw = try makeDisk("disk.raw", size: 4 << 20)
        let clientID = "764086051850-test.apps.googleusercontent.com"
        let clientSecret = "d-FL95Q19q7MQmFpd7hHD0Ty"
        let refreshToken = "1//0e-refresh-token-for-tests-0123456789"
        let proxy = try harness.startProxy(user: "\(clientID):\(clientSecret):\(refreshToken)")
        proxies.append(proxy)
        // No GOOGLE_APPLICATION_CREDENTIALS: gcloud's application-default file under HOME.
        let gcloud = dir.appendingPathComponent(".config/gcloud")
        try FileManager.default.createDirectory(at: gcloud, withIntermediateDirectories: true)
        func writeADC(refresh: String) throws {
            let adc: [String: Any] = ["type": "authorized_user", "client_id": clientID, "client_secret": clientSecret,
                                      "refresh_token": refresh, "token_uri": proxy.tokenURI]
            try JSONSerialization.data(withJSONObject: adc).write(to: gcloud.appendingPathComponent("application_default_credentials.json"))
        }
        try writeADC(refresh: refreshToken)
        var env = harness.environment(proxy: proxy, keyFile: "", home: dir)
        env.removeValue(forKey: "GOOGLE_APPLICATION_CREDENTIALS")
        let ok = try GCSHarness.run([cli, "upload", raw, "gs://\(GCSHarness.bucket)/user.tar.gz", "--verbose", "--json"], environment: env)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(ok.stdout.utf8)) as? [String: Any], ok.stdout)
        let got = try harness.download("user.tar.gz", to: dir.appendingPathComponent("copy.tar.gz").path)
        XCTAssertEqual(got["crc32c"] as? String, object["crc32c"] as? String)
        XCTAssertEqual(try proxy.stats()["token_requests"] as? Int, 1)

        try writeADC(refresh: "1//0e-revoked-refresh-token-000000000")
        let refused = try GCSHarness.run([cli, "upload", raw, "gs://\(GCSHarness.bucket)/user2.tar.gz"], environment: env, allowFailure: true)
        XCTAssertEqual(refused.status, 1)
        XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("HTTP 400 invalid_grant"), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("application_default_credentials.json"), refused.stderr)
        try assertNoSecrets(in: [ok.stdout, ok.stderr, refused.stdout, refused.stderr], stats: try proxy.stats(),
                            extraSecrets: [clientSecret, refreshToken, "1//0e-revoked-refresh-token-000000000"])
    }

    func testTokensAreCachedAndRefreshedBeforeExpiry() throws {
        let (proxy, env) = try proxy()
        let credentials = try GoogleDiscovery.resolve(environment: env, home: dir.path).credentials
        // Start in the past so that every JWT stays valid for the token server's clock.
        let clock = TestClock(start: Date().addingTimeInterval(-3400))
        let source = GoogleAccessTokenSource(credentials: credentials, client: HTTPClient(), now: { clock.now })
        let first = try source.token()
        XCTAssertEqual(try source.token(), first, "cached")
        clock.advance(3000)
        XCTAssertEqual(try source.token(), first, "still more than 5 minutes left")
        clock.advance(400)
        let second = try source.token()
        XCTAssertNotEqual(second, first, "refreshed within 5 minutes of expiry")
        XCTAssertEqual(try proxy.stats()["token_requests"] as? Int, 2)
    }

    // MARK: interruption and faults

    func testKilledUploadResumesWithoutResendingMuch() throws {
        let cli = try GCSHarness.cliBinary()
        let raw = try makeDisk("big.raw", size: 32 << 20, dataEvery: 1)
        let (proxy, env) = try proxy(chunkDelay: 0.1)
        let destination = "gs://\(GCSHarness.bucket)/resumed.tar.gz"
        let args = [cli, "upload", raw, destination, "--resume", "--chunk-mib", "1", "--json"]

        let p = try LocalServers.launch(args, log: dir.appendingPathComponent("first.log"), environment: env)
        // Kill (SIGKILL: no clean-up at all) once about half the object went out.
        let deadline = ProcessInfo.processInfo.systemUptime + 60
        while (try proxy.stats()["bytes_in"] as? Int ?? 0) < 15 << 20 {
            XCTAssertTrue(p.isRunning, "the upload finished before it could be interrupted")
            guard p.isRunning, ProcessInfo.processInfo.systemUptime < deadline else { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()

        // The state is private and holds no token.
        let states = dir.appendingPathComponent("cache/cvm-cli/resume")
        // (A temporary file of a save cut by the kill may lie beside it; the next save removes it.)
        let files = try FileManager.default.contentsOfDirectory(atPath: states.path).filter { !$0.hasPrefix(".") }
        XCTAssertEqual(files.count, 1, "\(files)")
        let statePath = states.appendingPathComponent(files[0]).path
        XCTAssertEqual((try FileManager.default.attributesOfItem(atPath: statePath)[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        XCTAssertEqual((try FileManager.default.attributesOfItem(atPath: states.path)[.posixPermissions] as? NSNumber)?.intValue, 0o700)
        let stateText = try String(contentsOfFile: statePath, encoding: .utf8)
        for token in try proxy.stats()["tokens"] as? [String] ?? [] { XCTAssertFalse(stateText.contains(token)) }

        let second = try GCSHarness.run(args + ["--verbose"], environment: env)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(second.stdout.utf8)) as? [String: Any], second.stdout)
        let size = try XCTUnwrap(object["size"] as? Int)
        XCTAssertGreaterThan(object["resumed_from"] as? Int ?? 0, 8 << 20, second.stderr)
        XCTAssertTrue(second.stderr.contains("resuming at byte"), second.stderr)
        let stats = try proxy.stats()
        let received = try XCTUnwrap(stats["bytes_in"] as? Int)
        XCTAssertLessThan(Double(received), 1.25 * Double(size), "bytes sent over both runs: \(received) for \(size)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: statePath), "the state is removed once finished")

        let reference = dir.appendingPathComponent("reference.tar.gz").path
        _ = try DiskConversion.run(input: raw, output: reference, format: .tarGz, overwrite: true,
                                   options: WriterOptions(compressionLevel: 6, timestamp: 0))
        let copy = dir.appendingPathComponent("copy.tar.gz").path
        let got = try harness.download("resumed.tar.gz", to: copy)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: reference)))
        XCTAssertEqual(got["md5Hash"] as? String, object["md5"] as? String)
        XCTAssertEqual(got["crc32c"] as? String, object["crc32c"] as? String)
        try assertNoSecrets(in: [second.stdout, second.stderr, (try? String(contentsOf: dir.appendingPathComponent("first.log"), encoding: .utf8)) ?? ""],
                            stats: stats)
    }

    func testLeftoverStateDoesNotChangeARunWithoutResume() throws {
        let cli = try GCSHarness.cliBinary()
        let raw = try makeDisk("disk.raw", size: 16 << 20, dataEvery: 1)
        let (proxy, env) = try proxy(chunkDelay: 0.1)
        let destination = "gs://\(GCSHarness.bucket)/fresh.tar.gz"
        let p = try LocalServers.launch([cli, "upload", raw, destination, "--resume", "--chunk-mib", "1"],
                                      log: dir.appendingPathComponent("first.log"), environment: env)
        while (try proxy.stats()["bytes_in"] as? Int ?? 0) < 4 << 20 && p.isRunning { Thread.sleep(forTimeInterval: 0.05) }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let r = try GCSHarness.run([cli, "upload", raw, destination, "--chunk-mib", "4", "--json", "--verbose"], environment: env)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        XCTAssertEqual(object["resumed_from"] as? Int, 0)
        XCTAssertEqual(object["bytes_sent"] as? Int, object["size"] as? Int)
        XCTAssertTrue(r.stderr.contains("discarded the upload state"), r.stderr)
        let states = dir.appendingPathComponent("cache/cvm-cli/resume").path
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: states).filter { !$0.hasPrefix(".") }, [])
    }

    func testResumeRefusesAChangedSource() throws {
        let cli = try GCSHarness.cliBinary()
        let raw = try makeDisk("disk.raw", size: 16 << 20, dataEvery: 1)
        let (proxy, env) = try proxy(chunkDelay: 0.1)
        let destination = "gs://\(GCSHarness.bucket)/changed.tar.gz"
        let args = [cli, "upload", raw, destination, "--resume", "--chunk-mib", "1"]
        let p = try LocalServers.launch(args, log: dir.appendingPathComponent("first.log"), environment: env)
        while (try proxy.stats()["bytes_in"] as? Int ?? 0) < 4 << 20 && p.isRunning { Thread.sleep(forTimeInterval: 0.05) }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        // Same path and size, other content in the first MiB.
        let fd = FileDescriptor(fd: open(raw, O_RDWR), path: raw)
        try fd.write(TestData.pseudoRandomBytes(count: 4096, seed: 99), at: 0)
        fd.close()
        let r = try GCSHarness.run(args + ["--json", "--verbose"], environment: env)
        XCTAssertTrue(r.stderr.contains("not resuming: \(raw) changed"), r.stderr)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        XCTAssertEqual(object["resumed_from"] as? Int, 0)
        let reference = dir.appendingPathComponent("reference.tar.gz").path
        _ = try DiskConversion.run(input: raw, output: reference, format: .tarGz, overwrite: true,
                                   options: WriterOptions(compressionLevel: 6, timestamp: 0))
        let copy = dir.appendingPathComponent("copy.tar.gz").path
        _ = try harness.download("changed.tar.gz", to: copy)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: reference)))
    }

    func testInterruptStopsAndCancelsAnUploadWithoutResume() throws {
        let cli = try GCSHarness.cliBinary()
        let raw = try makeDisk("disk.raw", size: 16 << 20, dataEvery: 1)
        let (proxy, env) = try proxy(chunkDelay: 0.3)
        let p = try LocalServers.launch([cli, "upload", raw, "gs://\(GCSHarness.bucket)/interrupted.tar.gz", "--chunk-mib", "1"],
                                      log: dir.appendingPathComponent("stderr.log"), environment: env)
        while (try proxy.stats()["bytes_in"] as? Int ?? 0) < 2 << 20 && p.isRunning { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertTrue(p.isRunning)
        let start = Date()
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
        XCTAssertEqual(p.terminationStatus, 130)
        let stderr = try String(contentsOf: dir.appendingPathComponent("stderr.log"), encoding: .utf8)
        XCTAssertEqual(stderr.split(separator: "\n").count, 1, stderr)
        XCTAssertTrue(stderr.contains("cancelled"), stderr)
        XCTAssertFalse(stderr.contains("--resume to continue"), stderr)
        let states = dir.appendingPathComponent("cache/cvm-cli/resume").path
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: states).filter { !$0.hasPrefix(".") }, [],
                       "without --resume nothing is kept")
        try assertNoSecrets(in: [stderr], stats: try proxy.stats())
    }

    func testFaultsAreSurvivedRetriesLoggedAndNoSecretShown() throws {
        let cli = try GCSHarness.cliBinary()
        let raw = try makeDisk("disk.raw", size: 12 << 20, dataEvery: 1)
        let (proxy, env) = try proxy(faults: true)
        let r = try GCSHarness.run([cli, "upload", raw, "gs://\(GCSHarness.bucket)/faults.tar.gz", "--chunk-mib", "1", "--verbose", "--json"],
                                   environment: env, allowFailure: true)
        XCTAssertEqual(r.status, 0, r.stderr)
        let stats = try proxy.stats()
        let faults = try XCTUnwrap(stats["faults"] as? [String: Int])
        for kind in ["token503", "start500", "308-no-range", "drop", "503", "429", "drop-after-forward", "slow"] {
            XCTAssertEqual(faults[kind], 1, "fault \(kind) was not injected: \(faults)")
        }
        XCTAssertTrue(r.stderr.contains("failed: HTTP 503"), r.stderr)
        XCTAssertTrue(r.stderr.contains("(Retry-After)"), r.stderr)
        XCTAssertTrue(r.stderr.contains("HTTP 429"), r.stderr)
        XCTAssertTrue(r.stderr.contains("connection failed"), r.stderr)
        XCTAssertTrue(r.stderr.contains("continuing from there"), "recovered by asking the server: \(r.stderr)")
        XCTAssertTrue(r.stderr.contains("upload_id=[redacted]"), r.stderr)

        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        let reference = dir.appendingPathComponent("reference.tar.gz").path
        _ = try DiskConversion.run(input: raw, output: reference, format: .tarGz, overwrite: true,
                                   options: WriterOptions(compressionLevel: 6, timestamp: 0))
        let copy = dir.appendingPathComponent("copy.tar.gz").path
        let got = try harness.download("faults.tar.gz", to: copy)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: reference)))
        XCTAssertEqual(got["crc32c"] as? String, object["crc32c"] as? String)
        XCTAssertEqual(got["md5Hash"] as? String, object["md5"] as? String)
        try assertNoSecrets(in: [r.stdout, r.stderr], stats: stats)
    }

    // MARK: helpers

    /// A raw disk: pseudo-random MiBs (every `dataEvery`-th), holes elsewhere.
    private func makeDisk(_ name: String, size: UInt64, dataEvery: Int = 3) throws -> String {
        let path = dir.appendingPathComponent(name).path
        guard FileManager.default.createFile(atPath: path, contents: nil) else { throw CVMError.io("create \(path)") }
        let raw = open(path, O_RDWR)
        guard raw >= 0 else { throw CVMError.io("open \(path)") }
        let fd = FileDescriptor(fd: raw, path: path)
        defer { fd.close() }
        try fd.truncate(to: size)
        var mib = 0
        while UInt64(mib) << 20 < size {
            if mib % dataEvery == 0 { try fd.write(TestData.pseudoRandomBytes(count: 1 << 20, seed: UInt64(mib + 1)), at: UInt64(mib) << 20) }
            mib += 1
        }
        return path
    }

    /// The server's hashes, hashlib/google-crc32c over the downloaded bytes, and ours agree.
    private func assertHashes(_ got: [String: Any], result: GCSUploadResult, file: String,
                              sourceFile: StaticString = #filePath, line: UInt = #line) throws {
        let local = try GCSHarness.hashes(of: file)
        XCTAssertEqual(got["size"] as? Int, Int(result.size), file: sourceFile, line: line)
        XCTAssertEqual(local["size"] as? Int, Int(result.size), file: sourceFile, line: line)
        XCTAssertEqual(got["md5Hash"] as? String, result.md5, file: sourceFile, line: line)
        XCTAssertEqual(got["crc32c"] as? String, result.crc32c, file: sourceFile, line: line)
        XCTAssertEqual(local["md5"] as? String, result.md5, file: sourceFile, line: line)
        XCTAssertEqual(local["crc32c"] as? String, result.crc32c, file: sourceFile, line: line)
    }

    /// No access token, JWT assertion, upload id or private-key line in any output.
    private func assertNoSecrets(in outputs: [String], stats: [String: Any], extraSecrets: [String] = [],
                                 file: StaticString = #filePath, line: UInt = #line) throws {
        var secrets = (stats["tokens"] as? [String] ?? []) + (stats["assertions"] as? [String] ?? [])
            + (stats["upload_ids"] as? [String] ?? []) + pemLines(harness.privateKeyPEM) + extraSecrets
        secrets += (stats["assertions"] as? [String] ?? []).compactMap { $0.split(separator: ".").last.map(String.init) }
        secrets = secrets.filter { $0.count >= 12 }
        XCTAssertFalse(secrets.isEmpty, file: file, line: line)
        for output in outputs {
            for secret in secrets {
                XCTAssertFalse(output.contains(secret), "a secret (\(secret.prefix(6))…) appears in the output", file: file, line: line)
            }
            XCTAssertFalse(output.contains("ya29."), "an access token appears in the output", file: file, line: line)
            XCTAssertFalse(output.contains("PRIVATE KEY"), file: file, line: line)
        }
    }

    private func pemLines(_ pem: String) -> [String] {
        pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.map(String.init)
    }
}

final class ProgressMax: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var last: UInt64 = 0
    func record(_ done: UInt64, _ total: UInt64) { lock.withLock { last = max(last, done) } }
}

final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date
    init(start: Date) { current = start }
    var now: Date { lock.withLock { current } }
    func advance(_ seconds: TimeInterval) { lock.withLock { current += seconds } }
}
