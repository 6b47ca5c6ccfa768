/// What to do after a failed attempt.
public enum RetryDecision: Sendable, Equatable {
    /// Try again after a backoff.
    case retry
    /// Try again, and the server is overloaded: the concurrency limiter halves its allowance.
    case throttle
    /// Give up now.
    case fail
}

/// Decides whether an HTTP error answer is worth another attempt. Other 4xx never are, unless
/// their cloud error code says "throttled" or the caller added the code.
public struct RetryClassifier: Sendable {
    /// Cloud error codes meaning "slow down", whatever the HTTP status (EC2 sends
    /// RequestLimitExceeded with 400 or 503, S3 SlowDown with 503, Azure ServerBusy with 503).
    public static let defaultThrottlingCodes: Set<String> = [
        "SlowDown", "RequestLimitExceeded", "Throttling", "ThrottlingException", "ServerBusy",
        "RequestThrottled", "TooManyRequests", "ProvisionedThroughputExceededException",
        "RequestThrottledException", "rateLimitExceeded", "userRateLimitExceeded",
    ]

    public var throttlingCodes: Set<String>
    /// Extra codes to retry without throttling (e.g. a snapshot that "does not exist" yet).
    public var retryableCodes: Set<String>
    /// Consulted first; return nil to fall back to the rules above.
    public var custom: (@Sendable (_ status: Int, _ headers: HTTPHeaders, _ error: CloudErrorDetails?) -> RetryDecision?)?

    public init(throttlingCodes: Set<String> = RetryClassifier.defaultThrottlingCodes,
                retryableCodes: Set<String> = [],
                custom: (@Sendable (Int, HTTPHeaders, CloudErrorDetails?) -> RetryDecision?)? = nil) {
        self.throttlingCodes = throttlingCodes
        self.retryableCodes = retryableCodes
        self.custom = custom
    }

    /// The decision for an answer whose status the request did not accept.
    public func decide(status: Int, headers: HTTPHeaders, error: CloudErrorDetails?) -> RetryDecision {
        if let d = custom?(status, headers, error) { return d }
        if let code = error?.code {
            if throttlingCodes.contains(code) { return .throttle }
            if retryableCodes.contains(code) { return .retry }
        }
        switch status {
        case 429, 503: return .throttle
        case 500, 502, 504: return .retry
        default: return .fail
        }
    }
}
