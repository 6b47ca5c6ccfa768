import CVMCrypto
import CVMSupport
import CVMTestData
import Foundation
import XCTest

/// The page-blob endpoint of `Scripts/page_blob_server.py` on 127.0.0.1 (a free port), with a
/// random account key; every request's SharedKey is checked with azure-storage-blob's own
/// policy. Started once per test class, stopped in teardown (by its own process).
public final class PageBlobServer: @unchecked Sendable, LocalProcessHarness {
    public static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts")
    public let account = "cvmtestacct"
    public let key: String
    public let port: UInt16
    public let directory: URL
    private let process: Process

    public var endpoint: String { "http://127.0.0.1:\(port)" }

    public init() throws {
        let check = try Self.run(["python3", "-c", "import azure.storage.blob, azure.core"], allowFailure: true)
        if check.status != 0 {
            // CI installs it (scripts/install-deps.sh --with-test-tools): a missing SDK is a failure there.
            throw CVMError.io("azure-storage-blob is not installed (scripts/install-deps.sh --with-test-tools): \(check.stderr.suffix(300))")
        }
        key = Base64.encode((0..<64).map { _ in UInt8.random(in: 0...255) })
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-azure-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("blobs"), withIntermediateDirectories: true)
        port = try Self.freePort()
        process = try Self.startPython(["page_blob_server.py", String(port), account, key, directory.appendingPathComponent("blobs").path],
                                       port: port, log: directory.appendingPathComponent("server.log"))
    }

    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// `Scripts/fault_proxy.py` in front of this server; stop it with `terminate()`.
    public func startFaultProxy() throws -> (endpoint: String, process: Process) {
        let proxyPort = try Self.freePort()
        let p = try Self.startPython(["fault_proxy.py", String(proxyPort), String(port)], port: proxyPort,
                                     log: directory.appendingPathComponent("proxy.log"))
        return ("http://127.0.0.1:\(proxyPort)", p)
    }

    /// A connection string whose BlobEndpoint is this server (or `endpoint`), as a user would set it.
    public func connectionString(key: String? = nil, endpoint: String? = nil) -> String {
        "DefaultEndpointsProtocol=http;AccountName=\(account);AccountKey=\(key ?? self.key);BlobEndpoint=\(endpoint ?? self.endpoint)/\(account)"
    }

    public func environment(key: String? = nil, endpoint: String? = nil, home: String) -> [String: String] {
        [
            "AZURE_STORAGE_CONNECTION_STRING": connectionString(key: key, endpoint: endpoint),
            "HOME": home,
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
        ]
    }

    // MARK: admin endpoints

    public func stats() throws -> [String: Any] { try getJSON(endpoint + "/_admin/stats") }

    public func resetStats() throws { _ = try Self.run(["python3", "-c", Self.postScript, endpoint + "/_admin/reset", "{}"]) }

    public func setPageDelay(_ seconds: Double) throws {
        _ = try Self.run(["python3", "-c", Self.postScript, endpoint + "/_admin/config", "{\"page_delay\": \(seconds)}"])
    }

    public func getJSON(_ url: String) throws -> [String: Any] {
        let r = try Self.run(["python3", "-c", "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())", url])
        guard let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
            throw CVMError.io("\(url) answered no JSON: \(r.stdout)")
        }
        return object
    }

    public static let postScript = "import urllib.request,sys; urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method='POST')).read()"

    /// Downloads the blob with the SDK's BlobClient (same key) into `output`; returns what the SDK
    /// reported: size, blob type, Content-MD5 and the page ranges as [start, end).
    public func download(container: String, blob: String, to output: String) throws -> (size: UInt64, type: String, md5: String?, ranges: [Range<UInt64>]) {
        let r = try Self.run(["python3", Self.scripts.appendingPathComponent("blob_client.py").path, "download",
                              connectionString(), container, blob, output])
        guard let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
              let size = object["size"] as? Int, let pairs = object["ranges"] as? [[Int]] else {
            throw CVMError.io("blob_client.py printed no JSON: \(r.stdout) \(r.stderr)")
        }
        return (UInt64(size), object["blob_type"] as? String ?? "", object["content_md5"] as? String,
                pairs.map { UInt64($0[0])..<UInt64($0[1]) })
    }

    // MARK: process plumbing

    private static func startPython(_ args: [String], port: UInt16, log: URL) throws -> Process {
        try LocalServers.startPython(script: scripts.appendingPathComponent(args[0]).path, Array(args.dropFirst()), port: port, log: log)
    }
}
