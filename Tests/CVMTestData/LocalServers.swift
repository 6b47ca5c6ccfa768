import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Ports on 127.0.0.1 for the test servers (moto, the GCS emulator, the page-blob and fake
/// cloud endpoints, proxies): the oracles the provider tests start and stop themselves.
public enum LocalServers {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// A port the kernel just handed out on 127.0.0.1 (bound to 0, then released).
    public static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw Failure(description: "bind: errno \(errno)") }
        return UInt16(bigEndian: addr.sin_port)
    }

    /// Python modules shared by the test servers' scripts (proxy_common.py); `startPython` puts
    /// this folder on PYTHONPATH.
    public static let sharedScripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Scripts").path

    /// Starts `args` through /usr/bin/env with stdout and stderr in `log` (no pipe can fill up).
    public static func launch(_ args: [String], log: URL, environment: [String: String]? = nil) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        if let environment { p.environment = environment }
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        return p
    }

    /// Waits until `port` accepts connections; stops `process` and throws with the end of `log`
    /// when it exits or 30 s pass first.
    public static func waitForPort(_ port: UInt16, process: Process, name: String, log: URL? = nil) throws {
        let deadline = ProcessInfo.processInfo.systemUptime + 30
        while !canConnect(port: port) {
            guard process.isRunning, ProcessInfo.processInfo.systemUptime < deadline else {
                process.terminate()
                let text = log.flatMap { try? String(contentsOf: $0, encoding: .utf8) } ?? ""
                throw Failure(description: "\(name) did not start on port \(port): \(text.suffix(800))")
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// Starts `python3 script args…` with `sharedScripts` on PYTHONPATH and its output in `log`,
    /// and waits until it accepts connections on `port`.
    public static func startPython(script: String, _ args: [String], port: UInt16, log: URL,
                                   environment: [String: String]? = nil) throws -> Process {
        var env = environment ?? ProcessInfo.processInfo.environment
        env["PYTHONPATH"] = ([sharedScripts] + (env["PYTHONPATH"].map { [$0] } ?? [])).joined(separator: ":")
        let p = try launch(["python3", script] + args, log: log, environment: env)
        try waitForPort(port, process: p, name: (script as NSString).lastPathComponent, log: log)
        return p
    }

    /// True when something accepts connections on 127.0.0.1:`port`.
    public static func canConnect(port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = port.bigEndian
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

extension TestProcess {
    /// Runs `args` through /usr/bin/env; a non-zero exit throws (with the end of stderr) unless
    /// `allowFailure`.
    @discardableResult
    public static func checked(_ args: [String], environment: [String: String]? = nil,
                               allowFailure: Bool = false) throws -> Result {
        let result = try run(args[0], Array(args.dropFirst()), environment: environment)
        if !allowFailure && result.status != 0 {
            throw LocalServers.Failure(description: "\(args.joined(separator: " ")) failed (\(result.status)): \(result.stderr.suffix(2000))")
        }
        return result
    }
}

/// The process plumbing every test-server harness offers as `Harness.run`, `Harness.freePort`
/// and `Harness.canConnect` (moto, the page-blob server, the GCS emulator).
public protocol LocalProcessHarness {}

extension LocalProcessHarness {
    public typealias Output = TestProcess.Result

    /// Runs a command via /usr/bin/env, output to temp files (no pipe can fill up); a non-zero
    /// exit throws with the end of stderr unless `allowFailure`.
    @discardableResult
    public static func run(_ args: [String], environment: [String: String]? = nil, allowFailure: Bool = false) throws -> Output {
        try TestProcess.checked(args, environment: environment, allowFailure: allowFailure)
    }

    /// A port the kernel just handed out on 127.0.0.1 (bound to 0, then released).
    public static func freePort() throws -> UInt16 { try LocalServers.freePort() }

    public static func canConnect(port: UInt16) -> Bool { LocalServers.canConnect(port: port) }
}
