import CVMSupport
import Foundation
import Logging
import Transport
import XCTest

/// Runs the Python fault server on 127.0.0.1 (a free port chosen by the OS) until `stop()`.
final class FaultServer: @unchecked Sendable {
    let process = Process()
    let port: Int
    private let stdin = Pipe()
    private let scriptPath: String

    init(certificate: (cert: String, key: String)? = nil) throws {
        // Whatever proxy the environment names, the test server is reached directly.
        setenv("NO_PROXY", "127.0.0.1,localhost", 1)
        setenv("no_proxy", "127.0.0.1,localhost", 1)
        scriptPath = NSTemporaryDirectory() + "cvm-fault-server-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).py"
        try faultServerScript.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        let out = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        var args = ["python3", scriptPath]
        if let c = certificate { args += [c.cert, c.key] }
        process.arguments = args
        process.standardOutput = out
        process.standardInput = stdin
        try process.run()
        // The first line is the port.
        var line = [UInt8]()
        while true {
            let byte = out.fileHandleForReading.readData(ofLength: 1)
            if byte.isEmpty { break }
            if byte[0] == UInt8(ascii: "\n") { break }
            line.append(byte[0])
        }
        guard let p = Int(String(decoding: line, as: UTF8.self)) else {
            process.terminate()
            throw CVMError.io("the test server did not start")
        }
        port = p
    }

    var base: String { "http://127.0.0.1:\(port)" }

    func stop() {
        try? stdin.fileHandleForWriting.close()
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: scriptPath)
    }

    struct Stats: Decodable {
        let count: Int
        let stamps: [String?]
        let ports: [Int]
        let times: [Double]
    }

    /// What the server saw for `key`, fetched with a plain client so it does not disturb the test's.
    func stats(_ key: String) throws -> Stats {
        let client = HTTPClient()
        let r = try client.send(HTTPRequest(method: "GET", url: "\(base)/stats/\(key)"))
        return try JSONDecoder().decode(Stats.self, from: Data(r.body))
    }
}

/// The echo answer of the server.
struct Echo: Decodable {
    let method: String
    let path: String
    let query: String
    let headers: [[String]]
    let length: Int
    let sha256: String
    let attempt: Int

    func header(_ name: String) -> String? {
        headers.first { $0.first?.lowercased() == name.lowercased() }?.last
    }

    static func decode(_ r: HTTPResponse) throws -> Echo {
        try JSONDecoder().decode(Echo.self, from: Data(r.body))
    }
}

/// Keeps every log record (message and metadata) so tests can grep it.
final class LogCapture: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var all: [String] { lock.withLock { lines } }
    var text: String { all.joined(separator: "\n") }

    func logger() -> Logger {
        var logger = Logger(label: "test.transport") { _ in CapturingLogHandler(capture: self) }
        logger.logLevel = .debug
        return logger
    }
}

struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        capture.append("\(event.level) \(event.message) \(merged)")
    }
}

/// Configuration with short delays for tests.
func testConfiguration(deadline: Double = 20) -> TransportConfiguration {
    var c = TransportConfiguration()
    c.deadline = deadline
    c.connectTimeout = 5
    c.retry = RetryPolicy(baseDelay: 0.05, maxDelay: 0.2, maxRetryAfter: 10, random: JitterSource(seed: 42))
    return c
}

/// Runs a command and returns its stdout.
@discardableResult
func runTool(_ tool: String, _ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [tool] + args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw CVMError.io("\(tool) failed with status \(p.terminationStatus)") }
    return String(decoding: data, as: UTF8.self)
}

/// Current resident set size in bytes (Linux /proc).
func residentBytes() -> UInt64 {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kb = line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) } ?? 0
        return kb * 1024
    }
    return 0
}

/// A sink that checks a streamed download against the server's pattern without keeping it.
final class PatternSink: ResponseSink {
    var received: UInt64 = 0
    var mismatch: UInt64?
    var restarts = 0

    func restart() throws { received = 0; restarts += 1 }

    func write(_ chunk: UnsafeRawBufferPointer) throws {
        for (i, b) in chunk.enumerated() where mismatch == nil {
            if b != UInt8((received + UInt64(i)) % 251) { mismatch = received + UInt64(i) }
        }
        received += UInt64(chunk.count)
    }
}

/// A thread-safe counter/recorder for hooks.
final class Recorder<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    func append(_ x: T) { lock.withLock { items.append(x) } }
    var all: [T] { lock.withLock { items } }
}
