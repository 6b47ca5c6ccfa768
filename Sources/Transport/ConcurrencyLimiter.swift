import Foundation

/// Bounds the transfers in flight and adapts the bound to the server, as azcopy does: a 503/429
/// or throttling code halves the allowance (at most once per `cooldown`, since one overload
/// usually fails many transfers at once), and each run of `limit` successes adds one back.
public final class ConcurrencyLimiter: @unchecked Sendable {
    public let maximum: Int
    public let cooldown: Double
    private let condition = NSCondition()
    private var limit: Int
    private var inFlight = 0
    private var successesSinceChange = 0
    private var lastDecrease = -Double.infinity

    public init(maximum: Int, cooldown: Double = 1.0) {
        self.maximum = max(1, maximum)
        self.cooldown = cooldown
        self.limit = self.maximum
    }

    /// The current allowance.
    public var currentLimit: Int { condition.lock(); defer { condition.unlock() }; return limit }

    /// Blocks until a transfer may start.
    public func acquire() {
        condition.lock()
        while inFlight >= limit { condition.wait() }
        inFlight += 1
        condition.unlock()
    }

    public enum Outcome { case success, throttled, neutral }

    /// Ends a transfer started with `acquire()`. Returns the new limit when it was halved.
    @discardableResult
    public func release(_ outcome: Outcome, now: Double = monotonicSeconds()) -> Int? {
        condition.lock()
        defer { condition.broadcast(); condition.unlock() }
        inFlight -= 1
        switch outcome {
        case .throttled:
            successesSinceChange = 0
            guard now - lastDecrease >= cooldown, limit > 1 else { return nil }
            limit = max(1, limit / 2)
            lastDecrease = now
            return limit
        case .success:
            successesSinceChange += 1
            if limit < maximum, successesSinceChange >= limit {
                limit += 1
                successesSinceChange = 0
            }
            return nil
        case .neutral:
            return nil
        }
    }
}

/// Seconds on a clock that never jumps (for deadlines and durations).
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
