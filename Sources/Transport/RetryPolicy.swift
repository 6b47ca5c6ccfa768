import Foundation
import CVMSupport

/// How long to wait between attempts: exponential backoff with full jitter (a uniformly random
/// delay in [0, min(maxDelay, baseDelay·2^(n-1))]), unless the server said `Retry-After`.
/// Attempts stop at the operation's wall-clock deadline, not after a fixed count.
public struct RetryPolicy: Sendable {
    public var baseDelay: Double
    public var maxDelay: Double
    /// A `Retry-After` longer than this is clamped (a misbehaving server cannot park us for hours).
    public var maxRetryAfter: Double
    public var random: JitterSource

    public init(baseDelay: Double = 0.5, maxDelay: Double = 30, maxRetryAfter: Double = 120,
                random: JitterSource = JitterSource()) {
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.maxRetryAfter = maxRetryAfter
        self.random = random
    }

    /// The delay before attempt `failedAttempts + 1`.
    public func backoff(afterAttempt failedAttempts: Int) -> Double {
        let exponent = Double(min(max(failedAttempts - 1, 0), 30))
        let cap = min(maxDelay, baseDelay * pow(2, exponent))
        return random.nextUnit() * cap
    }

    /// The delay to use: the server's `Retry-After` (clamped) when present, else the backoff.
    public func delay(afterAttempt failedAttempts: Int, retryAfter: Double?) -> Double {
        if let r = retryAfter { return min(max(r, 0), maxRetryAfter) }
        return backoff(afterAttempt: failedAttempts)
    }
}

/// A thread-safe source of jitter. Seeded, it repeats (tests); unseeded it uses the system RNG.
public final class JitterSource: @unchecked Sendable {
    private let lock = NSLockLite()
    private var state: UInt64
    private let seeded: Bool

    public init(seed: UInt64? = nil) {
        seeded = seed != nil
        state = seed ?? 0
    }

    /// A value in [0, 1).
    public func nextUnit() -> Double {
        let bits: UInt64 = lock.withLock {
            if !seeded { return UInt64.random(in: 0...UInt64.max) }
            // SplitMix64: tiny, well mixed, enough for jitter.
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        return Double(bits >> 11) / Double(1 << 53)
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3). Returns seconds from
/// `now`, never negative; nil when absent or unreadable.
public func parseRetryAfter(_ value: String?, now: Date = Date()) -> Double? {
    guard let raw = value?.trimmingCharacters(in: .whitespaces), !raw.isEmpty else { return nil }
    if let seconds = Double(raw), seconds.isFinite { return max(seconds, 0) }
    for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = format
        if let date = f.date(from: raw) { return max(date.timeIntervalSince(now), 0) }
    }
    return nil
}
