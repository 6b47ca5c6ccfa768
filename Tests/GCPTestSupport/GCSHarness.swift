import CVMSupport
import CVMTestData
import Foundation
import XCTest

/// Shared by GCPProviderTests and DeployGCPTests.
/// gcp-storage-emulator on 127.0.0.1 plus, per test, `gcs_auth_proxy.py` in front of it: an
/// OAuth token server that verifies our RS256 JWTs against a service-account key made here, and
/// a proxy that refuses storage requests without a token it issued (and injects faults on
/// request). Everything is started by the tests and stopped by its own process id.
public final class GCSHarness: @unchecked Sendable, LocalProcessHarness {
    public static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts")
    public static let bucket = "cvm-images"
    public static let clientEmail = "uploader@cvm-test.iam.gserviceaccount.com"

    public let directory: URL
    public let emulatorPort: UInt16
    private let emulator: Process
    /// PEM of the test service account's private key (a secret the outputs must never show).
    public let privateKeyPEM: String
    public let publicKeyPath: String

    public init() throws {
        let check = try Self.run(["python3", "-c", "import gcp_storage_emulator, jwt, cryptography, google.cloud.storage, google_crc32c"], allowFailure: true)
        if check.status != 0 {
            throw XCTSkip("gcp-storage-emulator/PyJWT/google-cloud-storage missing (scripts/install-deps.sh --with-test-tools): \(check.stderr.suffix(300))")
        }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-gcs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let keyPath = directory.appendingPathComponent("sa-key.pem").path
        publicKeyPath = directory.appendingPathComponent("sa-pub.pem").path
        try Self.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", keyPath])
        try Self.run(["openssl", "pkey", "-in", keyPath, "-pubout", "-out", publicKeyPath])
        privateKeyPEM = try String(contentsOfFile: keyPath, encoding: .utf8)

        emulatorPort = try Self.freePort()
        emulator = try LocalServers.launch(["python3", "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                                           "--port", String(emulatorPort), "--default-bucket", Self.bucket, "-q", "-M"],
                                          log: directory.appendingPathComponent("emulator.log"))
        try LocalServers.waitForPort(emulatorPort, process: emulator, name: "gcp-storage-emulator")
    }

    public func stop() {
        if emulator.isRunning { emulator.terminate(); emulator.waitUntilExit() }
        try? FileManager.default.removeItem(at: directory)
    }

    public var emulatorEndpoint: String { "http://127.0.0.1:\(emulatorPort)" }

    /// A running auth proxy; `stop()` it at the end of the test.
    public final class Proxy: @unchecked Sendable {
        public let port: UInt16
        public let process: Process
        public var endpoint: String { "http://127.0.0.1:\(port)" }
        public var tokenURI: String { endpoint + "/token" }

        init(port: UInt16, process: Process) {
            self.port = port
            self.process = process
        }

        public func stop() {
            if process.isRunning { process.terminate(); process.waitUntilExit() }
        }

        /// What the proxy saw (bytes, faults, tokens, assertions, upload ids).
        public func stats() throws -> [String: Any] {
            let r = try GCSHarness.run(["python3", "-c", "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())",
                                        endpoint + "/harness-stats"])
            return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        }
    }

    public func startProxy(faults: Bool = false, chunkDelay: Double = 0, tokenLifetime: Int = 3600, user: String? = nil) throws -> Proxy {
        let port = try Self.freePort()
        var args = ["--port", String(port), "--upstream-port", String(emulatorPort),
                    "--public-key", publicKeyPath, "--client-email", Self.clientEmail,
                    "--token-uri", "http://127.0.0.1:\(port)/token", "--token-lifetime", String(tokenLifetime)]
        if faults { args.append("--faults") }
        if let user { args += ["--user", user] }
        if chunkDelay > 0 { args += ["--chunk-delay", String(chunkDelay)] }
        let p = try LocalServers.startPython(script: Self.scripts.appendingPathComponent("gcs_auth_proxy.py").path, args, port: port,
                                             log: directory.appendingPathComponent("proxy-\(port).log"))
        return Proxy(port: port, process: p)
    }

    /// A service-account key file whose token_uri is the proxy's (or `pem` for a wrong key).
    public func writeKeyFile(tokenURI: String, pem: String? = nil, name: String = "key.json") throws -> String {
        let object: [String: Any] = [
            "type": "service_account", "project_id": "cvm-test", "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": pem ?? privateKeyPEM, "client_email": Self.clientEmail, "client_id": "1234567890",
            "token_uri": tokenURI,
        ]
        let path = directory.appendingPathComponent(name).path
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The environment cvm-cli sees: the key file, the emulator override, a private HOME/cache.
    public func environment(proxy: Proxy, keyFile: String, home: URL) -> [String: String] {
        [
            "GOOGLE_APPLICATION_CREDENTIALS": keyFile,
            "STORAGE_EMULATOR_HOST": proxy.endpoint,
            "HOME": home.path,
            "XDG_CACHE_HOME": home.appendingPathComponent("cache").path,
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
        ]
    }

    /// Downloads `object` with google-cloud-storage straight from the emulator.
    public func download(_ object: String, to path: String) throws -> [String: Any] {
        let r = try Self.run(["python3", Self.scripts.appendingPathComponent("gcs_client.py").path, "download",
                              emulatorEndpoint, Self.bucket, object, path])
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
    }

    /// Size, MD5 and CRC-32C (base64) of a local file, computed by hashlib and google-crc32c.
    public static func hashes(of path: String) throws -> [String: Any] {
        let r = try run(["python3", scripts.appendingPathComponent("gcs_client.py").path, "hash", path])
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
    }

    // MARK: process plumbing

    /// The cvm-cli executable built next to the test bundle.
    public static func cliBinary() throws -> String { try BuiltProducts.require("cvm-cli") }
}
