import CVMSupport

/// Sums the progress of many transfers (parallel blocks or parts) into one figure for a
/// `ProgressReporter`. Each transfer gets its own handler; a retried transfer that starts again
/// at 0 takes back what it had counted, so the total never over-counts.
public final class TransferProgressAggregator: @unchecked Sendable {
    private let lock = NSLockLite()
    private var done: UInt64 = 0
    private let report: @Sendable (UInt64) -> Void

    /// `report` gets the bytes done so far (under a lock: keep it quick).
    public init(report: @escaping @Sendable (UInt64) -> Void) {
        self.report = report
    }

    /// Feeds a `ProgressReporter`.
    public convenience init(reporter: ProgressReporter) {
        self.init { reporter.update($0) }
    }

    /// Bytes counted so far.
    public var bytesDone: UInt64 { lock.withLock { done } }

    /// Adds bytes that were not transferred (e.g. skipped zero blocks) so the total adds up.
    public func add(_ bytes: UInt64) {
        lock.withLock {
            done += bytes
            report(done)
        }
    }

    /// A handler for one transfer's `send(_:progress:)`.
    public func handler() -> TransferProgressHandler {
        let counted = Counter()
        return { [self] sent, _ in
            lock.withLock {
                let before = counted.value
                counted.value = sent
                done = done - min(before, done) + sent
                report(done)
            }
        }
    }

    private final class Counter: @unchecked Sendable { var value: UInt64 = 0 }
}
