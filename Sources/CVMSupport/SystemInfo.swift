import Foundation
import Dispatch

public enum SystemInfo {
    public static var activeProcessorCount: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// SOURCE_DATE_EPOCH when set (reproducible builds convention), else 0.
    public static var sourceDateEpoch: UInt64 {
        if let v = ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"], let n = UInt64(v) { return n }
        return 0
    }
}

/// Runs `count` independent jobs on all cores and returns when all are done.
/// The first error thrown by any job is rethrown.
public func parallelFor(_ count: Int, _ body: (Int) throws -> Void) throws {
    if count == 0 { return }
    if count == 1 { try body(0); return }
    let errorBox = ErrorBox()
    withoutActuallyEscaping(body) { body in
        let work = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: count) { i in
            if errorBox.hasError { return }
            do { try work.value(i) } catch { errorBox.set(error) }
        }
    }
    if let e = errorBox.error { throw e }
}

/// Wraps a value that is shared across threads under the caller's own discipline.
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}

private final class ErrorBox: @unchecked Sendable {
    private let lock = NSLockLite()
    private var stored: Error?
    var hasError: Bool { lock.withLock { stored != nil } }
    var error: Error? { lock.withLock { stored } }
    func set(_ e: Error) { lock.withLock { if stored == nil { stored = e } } }
}

/// The user's home folder as the cloud SDKs find it: `$HOME` when set (Foundation on Linux
/// reads the password database instead), else the account's home.
public func userHomeDirectory(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
    if let home = environment["HOME"], home.hasPrefix("/") { return home }
    return NSHomeDirectory()
}
