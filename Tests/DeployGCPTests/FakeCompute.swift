import CVMSupport
import CVMTestData
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import GCPTestSupport
import XCTest

/// `Scripts/fake_compute.py` on 127.0.0.1, started and stopped (by its process id) by a test:
/// a Compute Engine v1 endpoint that checks every request against google-api-python-client's
/// compute.v1 discovery document and the bearer token against the test token server.
final class FakeCompute: @unchecked Sendable {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Scripts/fake_compute.py").path

    let port: UInt16
    let process: Process

    /// `tokenServer`: the auth proxy's base URL (it lists the tokens it issued); `storage`: the
    /// storage emulator, where images' rawDisk.source objects must exist.
    init(tokenServer: String, storage: String, faults: Bool = false, log: URL) throws {
        let check = try GCSHarness.run(["python3", "-c", "import googleapiclient"], allowFailure: true)
        if check.status != 0 {
            throw XCTSkip("google-api-python-client missing (scripts/install-deps.sh --with-test-tools): \(check.stderr.suffix(300))")
        }
        port = try GCSHarness.freePort()
        var args = ["--port", String(port), "--token-server", tokenServer, "--storage", storage]
        if faults { args.append("--faults") }
        process = try LocalServers.startPython(script: Self.script, args, port: port, log: log)
    }

    func stop() {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
    }

    var base: String { "http://127.0.0.1:\(port)" }
    /// What gcloud reads as the Compute base URL override.
    var endpoint: String { base + "/compute/v1/" }

    func get(_ path: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: try Self.fetch(base + path)) as? [String: Any])
    }

    /// Requests seen, violations, faults, 401s.
    func stats() throws -> [String: Any] { try get("/harness-stats") }
    /// images, firewalls, instances, disks.
    func state() throws -> [String: [String: [String: Any]]] {
        try XCTUnwrap(try get("/harness-state") as? [String: [String: [String: Any]]])
    }

    var requests: [[String: Any]] { (try? stats()["requests"] as? [[String: Any]]) ?? [] }

    /// The validator's verdict on a body for `methodID` (no state change).
    func validate(_ methodID: String, _ body: [String: Any]) throws -> [String] {
        let data = try JSONSerialization.data(withJSONObject: body)
        let answer = try Self.fetch(base + "/harness-validate/" + methodID, method: "POST", body: data)
        return try XCTUnwrap((try JSONSerialization.jsonObject(with: answer) as? [String: Any])?["errors"] as? [String])
    }

    /// A plain request (no token): returns the body of any status.
    static func fetch(_ url: String, method: String = "GET", body: Data? = nil, headers: [String: String] = [:]) throws -> Data {
        try send(url, method: method, body: body, headers: headers).data
    }

    static func status(_ url: String, method: String = "GET", headers: [String: String] = [:]) throws -> Int {
        try send(url, method: method, body: nil, headers: headers).status
    }

    private static func send(_ url: String, method: String, body: Data?, headers: [String: String]) throws -> (data: Data, status: Int) {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.httpBody = body
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        let box = FetchBox()
        let done = DispatchSemaphore(value: 0)
        URLSession.shared.dataTask(with: request) { data, response, error in
            box.set(data, (response as? HTTPURLResponse)?.statusCode, error)
            done.signal()
        }.resume()
        done.wait()
        if let error = box.error { throw error }
        return (box.data ?? Data(), box.status ?? 0)
    }
}

private final class FetchBox: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var data: Data?
    private(set) var status: Int?
    private(set) var error: Error?
    func set(_ d: Data?, _ s: Int?, _ e: Error?) { lock.withLock { data = d; status = s; error = e } }
}
