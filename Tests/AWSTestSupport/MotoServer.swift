import CVMSupport
import CVMTestData
import Foundation
import XCTest

/// A `moto_server` on 127.0.0.1 (a free port) with SigV4 enforced for one IAM user's key.
/// Started once per test class, stopped in teardown (by its own process id).
public final class MotoServer: @unchecked Sendable, LocalProcessHarness {
    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts")
    public let endpoint: String
    public let accessKeyID: String
    public let secretAccessKey: String
    public let region = "us-east-2"
    private let process: Process
    private let helperPath: String
    public let directory: URL

    public init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-moto-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        helperPath = directory.appendingPathComponent("moto_helper.py").path
        try MotoHelperScript.source.write(toFile: helperPath, atomically: true, encoding: .utf8)

        let check = try Self.python(["-c", "import moto.server, boto3"], allowFailure: true)
        if check.status != 0 {
            throw XCTSkip("moto[server] is not installed (scripts/install-deps.sh --with-test-tools): \(check.stderr)")
        }
        let port = try Self.freePort()
        endpoint = "http://127.0.0.1:\(port)"
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-m", "moto.server", "-H", "127.0.0.1", "-p", String(port)]
        let log = directory.appendingPathComponent("moto.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let logHandle = try FileHandle(forWritingTo: log)
        process.standardOutput = logHandle
        process.standardError = logHandle
        try process.run()

        // Ready when it answers on its port.
        let deadline = Self.monotonicNow() + 30
        while !Self.canConnect(port: port) {
            guard process.isRunning, Self.monotonicNow() < deadline else {
                let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                process.terminate()
                throw CVMError.io("moto_server did not start on port \(port): \(text.suffix(500))")
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        let setup = try Self.python([helperPath, "setup", endpoint])
        guard let creds = try JSONSerialization.jsonObject(with: Data(setup.stdout.utf8)) as? [String: String],
              let id = creds["id"], let secret = creds["secret"] else {
            process.terminate()
            throw CVMError.io("moto setup printed no key: \(setup.stdout) \(setup.stderr)")
        }
        accessKeyID = id
        secretAccessKey = secret
    }

    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// `Scripts/aws_fault_proxy.py` in front of this server; returns its endpoint and process
    /// (stop it with `terminate()`).
    public func startFaultProxy(countingWithDelay delay: Double? = nil) throws -> (endpoint: String, process: Process) {
        let port = try Self.freePort()
        guard let upstream = endpoint.split(separator: ":").last else { throw CVMError.io("bad endpoint \(endpoint)") }
        let p = try LocalServers.startPython(script: Self.scripts.appendingPathComponent("aws_fault_proxy.py").path,
                                             [String(port), String(upstream)] + (delay.map { ["count:\($0)"] } ?? []),
                                             port: port, log: directory.appendingPathComponent("proxy-\(port).log"))
        return ("http://127.0.0.1:\(port)", p)
    }

    /// The environment an AWS SDK (and cvm-cli) would see for this server.
    public func environment(secret: String? = nil, endpoint: String? = nil) -> [String: String] {
        [
            "AWS_ACCESS_KEY_ID": accessKeyID,
            "AWS_SECRET_ACCESS_KEY": secret ?? secretAccessKey,
            "AWS_REGION": region,
            "AWS_ENDPOINT_URL": endpoint ?? self.endpoint,
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
        ]
    }

    public var credentialsJSON: String {
        let data = (try? JSONSerialization.data(withJSONObject: ["id": accessKeyID, "secret": secretAccessKey])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// Runs a helper command and parses its JSON answer.
    public func helper(_ command: String, _ args: [String]) throws -> [String: Any] {
        let r = try Self.python([helperPath, command, endpoint, credentialsJSON, region] + args)
        guard let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
            throw CVMError.io("moto helper \(command) printed no JSON: \(r.stdout) \(r.stderr)")
        }
        return object
    }

    // MARK: process plumbing

    @discardableResult
    public static func python(_ args: [String], allowFailure: Bool = false) throws -> Output {
        try run(["python3"] + args, allowFailure: allowFailure)
    }


    public static func monotonicNow() -> Double { ProcessInfo.processInfo.systemUptime }
}
