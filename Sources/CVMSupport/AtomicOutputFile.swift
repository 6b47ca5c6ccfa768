#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch

/// An output file that appears at its final path only when complete.
///
/// Bytes go to a temporary file in the destination folder (same filesystem, so the final
/// `rename` is atomic). `commit()` syncs and renames; `discard()` (or a SIGINT/SIGTERM while
/// the file is open) removes the temporary file, so a failed or interrupted run leaves
/// neither a partial output nor a temp file behind.
public final class AtomicOutputFile: @unchecked Sendable {
    public let finalPath: String
    public let temporaryPath: String
    public let descriptor: FileDescriptor
    private var finished = false

    /// - Parameter overwrite: when false an existing `finalPath` is an error (the CLI's `--force`).
    public init(path: String, overwrite: Bool) throws {
        finalPath = path
        if !overwrite, access(path, F_OK) == 0 {
            throw CVMError.usage("\(path): already exists; pass --force to replace it")
        }
        let dir = Self.directory(of: path)
        let base = Self.baseName(of: path)
        Self.removeStaleTemporaries(directory: dir, baseName: base)
        // The pid in the name lets a later run remove what a killed run (SIGKILL) left behind.
        var template = Array("\(dir)/.\(base).cvm-tmp-\(getpid())-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw CVMError.io("\(path): cannot create a temporary file in \(dir): \(errnoDescription())")
        }
        temporaryPath = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        fchmod(fd, 0o644)
        descriptor = FileDescriptor(fd: fd, path: path)
        SignalCleanup.shared.register(temporaryPath)
    }

    deinit { if !finished { discard() } }

    /// Flushes the data to disk and moves the file into place.
    public func commit() throws {
        precondition(!finished)
        try descriptor.sync()
        descriptor.close()
        guard rename(temporaryPath, finalPath) == 0 else {
            let err = errnoDescription()
            discard()
            throw CVMError.io("\(finalPath): cannot move the finished output into place: \(err)")
        }
        finished = true
        SignalCleanup.shared.unregister(temporaryPath)
        // Make the rename itself durable.
        let dfd = open(Self.directory(of: finalPath), O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// Removes the temporary file; the final path is untouched.
    public func discard() {
        guard !finished else { return }
        finished = true
        descriptor.close()
        unlink(temporaryPath)
        SignalCleanup.shared.unregister(temporaryPath)
    }

    /// Removes `.<base>.cvm-tmp-<pid>-*` files whose process no longer exists.
    public static func removeStaleTemporaries(directory: String, baseName: String) {
        guard let dir = opendir(directory) else { return }
        defer { closedir(dir) }
        let prefix = ".\(baseName).cvm-tmp-"
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.hasPrefix(prefix) else { continue }
            let rest = name.dropFirst(prefix.count)
            guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[..<dash]) else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                unlink("\(directory)/\(name)")
            }
        }
    }

    public static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let dir = String(path[..<slash])
        return dir.isEmpty ? "/" : dir
    }

    public static func baseName(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }
}

/// The one owner of SIGINT and SIGTERM. There must be only one: on Linux, libdispatch delivers
/// a signal source through its own handler, and a later `signal(sig, SIG_IGN)` (which every
/// installer needs before its first source) replaces that handler and silences every source. By default a signal removes the registered temporary files and exits with
/// 128+signal. While an `InterruptFlag` is installed, the first signal only sets it — the
/// command stops its transfers and cleans up on its own error path — and a second one exits
/// as above. Handlers run on a dispatch queue, not in signal context.
public final class SignalCleanup: @unchecked Sendable {
    public static let shared = SignalCleanup()
    private let lock = NSLockLite()
    private var paths: Set<String> = []
    private var sources: [DispatchSourceSignal] = []
    private var installed = false
    private var flag: InterruptFlag?

    public func register(_ path: String) {
        lock.withLock {
            paths.insert(path)
            installIfNeeded()
        }
    }

    public func unregister(_ path: String) {
        lock.withLock { _ = paths.remove(path) }
    }

    func arm(_ flag: InterruptFlag) {
        lock.withLock {
            self.flag = flag
            installIfNeeded()
        }
    }

    private func installIfNeeded() {
        guard !installed else { return }
        installed = true
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [weak self] in self?.received(sig) }
            source.resume()
            sources.append(source)
        }
    }

    private func received(_ sig: Int32) {
        let cooperative = lock.withLock { () -> Bool in
            guard let flag, !flag.isSet else { return false }
            flag.set()
            return true
        }
        if !cooperative { cleanUpAndExit(signal: sig) }
    }

    private func cleanUpAndExit(signal sig: Int32) {
        let toRemove = lock.withLock { paths }
        for p in toRemove { unlink(p) }
        let name = sig == SIGINT ? "SIGINT" : "SIGTERM"
        let msg = "\ncvm-cli: interrupted by \(name); no output was written\n"
        _ = msg.withCString { write(2, $0, strlen($0)) }
        _exit(128 + sig)
    }
}

/// Set by the first SIGINT or SIGTERM once installed, for commands that stop cleanly (uploads
/// abort or keep their resume state, deploys save their artifact); a second signal exits.
public final class InterruptFlag: @unchecked Sendable {
    private let lock = NSLockLite()
    private var value = false

    public var isSet: Bool { lock.withLock { value } }

    func set() { lock.withLock { value = true } }

    /// Routes the process's SIGINT/SIGTERM to a new flag.
    public static func install() -> InterruptFlag {
        let flag = InterruptFlag()
        SignalCleanup.shared.arm(flag)
        return flag
    }
}

/// A minimal mutex over pthread (Foundation-free so this module stays small).
public final class NSLockLite: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    public init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}
