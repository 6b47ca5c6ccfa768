import Foundation

/// Settings of an `HTTPClient`; the defaults suit cloud uploads.
public struct TransportConfiguration: Sendable {
    /// Upper bound of transfers in flight (the adaptive limiter may allow fewer).
    public var maxConcurrentTransfers: Int = 8
    /// Seconds to establish a connection (TCP + TLS).
    public var connectTimeout: Double = 20
    /// Abort an attempt that moves fewer than `lowSpeedLimit` bytes/s for `lowSpeedTime` s
    /// (a stalled upload fails and is retried instead of hanging).
    public var lowSpeedLimit: Int = 1024
    public var lowSpeedTime: Int = 60
    /// Default wall-clock budget of one operation, all attempts included.
    public var deadline: Double = 600
    public var retry = RetryPolicy()
    public var classifier = RetryClassifier()
    public var errorParser: CloudErrorParser = { GenericCloudErrorParser.parse(status: $0, headers: $1, body: $2) }
    /// PEM CA bundle replacing the system store (e.g. a private CA or an emulator's cert).
    /// Without it, `SSL_CERT_FILE` (then `CURL_CA_BUNDLE`) from `environment` is honoured.
    public var caBundlePath: String?
    /// Environment consulted for `SSL_CERT_FILE`/`SSL_CERT_DIR` (proxies: libcurl reads the
    /// process environment itself).
    public var environment: [String: String] = ProcessInfo.processInfo.environment
    public var userAgent = "cvm-cli"
    /// Polled during transfers and backoff waits; true aborts with an `interrupted` error.
    public var isCancelled: (@Sendable () -> Bool)?

    public init() {}

    /// What a cloud command's client runs with: the command's environment, how many transfers
    /// it allows in flight, and its Ctrl-C flag.
    public init(environment: [String: String], maxConcurrentTransfers: Int, isCancelled: (@Sendable () -> Bool)?) {
        self.environment = environment
        self.maxConcurrentTransfers = max(1, maxConcurrentTransfers)
        self.isCancelled = isCancelled
    }

    var effectiveCABundle: String? {
        if let p = caBundlePath, !p.isEmpty { return p }
        if let p = environment["SSL_CERT_FILE"], !p.isEmpty { return p }
        if let p = environment["CURL_CA_BUNDLE"], !p.isEmpty { return p }
        return nil
    }
}
