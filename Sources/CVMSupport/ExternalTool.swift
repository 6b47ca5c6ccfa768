import Foundation

/// A program from a Debian package that a build step runs (mksquashfs, veritysetup, qemu…).
/// Looked up in PATH and the sbin folders (root tools live there even for ordinary users);
/// a missing one is an error naming the package to install.
public struct ExternalTool: Sendable {
    public let name: String
    /// Debian package that provides it.
    public let package: String
    public let path: String

    public init(name: String, package: String, path: String) {
        self.name = name
        self.package = package
        self.path = path
    }

    /// A program known by its path (one the caller found itself, e.g. an engine in the image);
    /// named after its file.
    public init(path: String) {
        self.init(name: (path as NSString).lastPathComponent, package: "", path: path)
    }

    /// Finds `name`; `purpose` says which command needs it (for the error message).
    public static func find(_ name: String, package: String, purpose: String) throws -> ExternalTool {
        if let path = locate(name) { return ExternalTool(name: name, package: package, path: path) }
        throw CVMError.unsupported("\(purpose) needs '\(name)', which is not installed; install the Debian package \(package) (apt-get install \(package))")
    }

    public static func locate(_ name: String) -> String? {
        let env = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let dirs = env.split(separator: ":").map(String.init) + ["/usr/local/sbin", "/usr/sbin", "/sbin"]
        for dir in dirs where !dir.isEmpty {
            let candidate = dir + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Runs the tool and returns its standard output; a non-zero exit is an error quoting the
    /// last lines of its standard error.
    @discardableResult
    public func run(_ arguments: [String], environment: [String: String]? = nil,
                    currentDirectory: String? = nil) throws -> String {
        let result = try runCapturing(arguments, environment: environment, currentDirectory: currentDirectory)
        guard result.status == 0 else {
            let tail = result.stderr.split(whereSeparator: \.isNewline).suffix(3).joined(separator: " / ")
            throw CVMError.io("\(name) \(arguments.prefix(3).joined(separator: " ")) failed (exit \(result.status)): \(tail.isEmpty ? result.stdout.suffix(300) : Substring(tail))")
        }
        return result.stdout
    }

    /// Runs a tool that leaves a daemon behind (swtpm --daemon, qemu -daemonize): its output
    /// goes to `logFile`, since a daemon holding our pipes open would never let a read end.
    public func runDaemonizing(_ arguments: [String], logFile: String) throws {
        // posix_spawn + waitpid: Foundation's Process can wait for the daemon's end instead of the
        // launcher's, so the launcher is reaped directly.
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logFile, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard rc == 0 else { throw CVMError.io("\(path): cannot start: \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = (status & 0x7F) == 0, code = (status >> 8) & 0xFF
        guard exited && code == 0 else {
            let text = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
            let tail = text.split(whereSeparator: \.isNewline).suffix(3).joined(separator: " / ")
            throw CVMError.io("\(name) failed (\(exited ? "exit \(code)" : "signal \(status & 0x7F)")): \(tail)")
        }
    }

    /// What a finished run printed and how it ended.
    public struct RunResult: Sendable {
        public let status: Int32
        public let stdout: String
        public let stderr: String
        /// The run was stopped (SIGTERM, then SIGKILL) because it outlived its timeout.
        public let timedOut: Bool
    }

    /// Runs the tool to its end; with a `timeout` it is stopped when it takes longer (a daemon
    /// that hangs must not hang its caller).
    public func runCapturing(_ arguments: [String], environment: [String: String]? = nil,
                             currentDirectory: String? = nil, timeout: TimeInterval? = nil) throws -> RunResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw CVMError.io("\(path): cannot start: \(error.localizedDescription)")
        }
        let timedOut = UncheckedBox<Bool>(false), finished = UncheckedBox<Bool>(false)
        let watchdog = timeout.map { seconds in
            let pid = process.processIdentifier
            // Foundation starts the child as the leader of its own process group: signal the
            // group, so children that inherited the pipes end too and the reads below return.
            let item = DispatchWorkItem {
                timedOut.value = true
                kill(-pid, SIGTERM)
                // A tool that ignores SIGTERM still ends.
                DispatchQueue.global().asyncAfter(deadline: .now() + 5) { if !finished.value { kill(-pid, SIGKILL) } }
            }
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: item)
            return item
        }
        // Read both pipes concurrently so a chatty tool never blocks on a full pipe.
        let errData = UncheckedBox<Data>(Data())
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData.value = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        finished.value = true
        watchdog?.cancel()
        return RunResult(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData.value, as: UTF8.self), timedOut: timedOut.value)
    }
}

/// A mutable box handed to one other thread under the caller's own synchronisation.
final class UncheckedBox<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}
