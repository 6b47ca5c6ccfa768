import CVMSupport
import Foundation
import Logging

/// Sends HTTP requests through libcurl with retries, a wall-clock deadline per operation,
/// adaptive concurrency and redacted logging. It knows no cloud: signing comes from each
/// request's `sign` hook, error bodies are read by the configured `CloudErrorParser`.
///
/// `send` blocks the calling thread; call it from several threads (e.g. `forEachConcurrently`)
/// to have transfers in flight together — the limiter bounds how many actually run.
public final class HTTPClient: @unchecked Sendable {
    public let configuration: TransportConfiguration
    public let logger: Logger
    public let limiter: ConcurrencyLimiter
    private let pool = EasyHandlePool()
    private let share: CurlShare?

    public init(configuration: TransportConfiguration = TransportConfiguration(),
                logger: Logger = Logger(label: "cvm.transport")) {
        self.configuration = configuration
        self.logger = logger
        self.limiter = ConcurrencyLimiter(maximum: configuration.maxConcurrentTransfers)
        self.share = CurlShare()
    }

    deinit {
        // Easy handles go before the share handle they point to (and its locks).
        pool.closeAll()
    }

    /// Sends `request` and returns the answer with its body collected (bounded by
    /// `maxResponseBytes`). Throws one `CVMError` line when the status is not accepted and not
    /// retryable, or the deadline passes.
    public func send(_ request: HTTPRequest, progress: TransferProgressHandler? = nil) throws -> HTTPResponse {
        try run(request, sink: nil, progress: progress)
    }

    /// Sends `request` and streams a 2xx body to `sink` (restarted on retries); the returned
    /// response has an empty body.
    public func send(_ request: HTTPRequest, streamingTo sink: ResponseSink,
                     progress: TransferProgressHandler? = nil) throws -> HTTPResponse {
        try run(request, sink: sink, progress: progress)
    }

    /// Runs `body(0..<count)` on up to `maxConcurrentTransfers` threads, for parallel uploads;
    /// stops handing out work after the first error, which is rethrown.
    public func forEachConcurrently(_ count: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
        try runConcurrently(count, threads: configuration.maxConcurrentTransfers, body)
    }

    // MARK: the retry loop

    private func run(_ request: HTTPRequest, sink: ResponseSink?, progress: TransferProgressHandler?) throws -> HTTPResponse {
        let c = configuration
        let start = monotonicSeconds()
        let budget = request.deadline ?? c.deadline
        let deadline = start + budget
        let classifier = request.retryClassifier ?? c.classifier
        let accepted = request.acceptedStatuses ?? Set(200..<300)
        var attempt = 0
        var previousFailure: String?

        while true {
            attempt += 1
            var signed = SigningRequest(method: request.method, url: request.url, headers: request.headers,
                                        contentLength: request.sendsBody ? (request.body?.size ?? 0) : nil,
                                        payloadSHA256: request.payloadSHA256, body: request.body,
                                        attempt: attempt)
            try request.sign?(&signed)
            let redactor = Redactor(request: request, signed: signed)
            let shownURL = redactor.url(signed.url)
            let scheme = signed.url.prefix { $0 != ":" }.lowercased()
            guard scheme == "https" || scheme == "http" else {
                throw CVMError.invalid("\(signed.method) \(shownURL): only https:// (and http:// for local emulators) URLs are supported")
            }
            if attempt > 1 { try sink?.restart() }

            let spec = AttemptSpec(method: signed.method, url: signed.url, headers: signed.headers,
                                   body: request.body, sendsBody: request.sendsBody,
                                   timeoutSeconds: max(0.001, deadline - monotonicSeconds()),
                                   collectLimit: request.maxResponseBytes, accepted: accepted,
                                   sink: sink, progress: progress,
                                   isCancelled: c.isCancelled, certificateCheck: request.serverCertificate)
            limiter.acquire()
            let handle: UnsafeMutableRawPointer
            do { handle = try pool.take() } catch { limiter.release(.neutral); throw error }
            let (result, stats) = performAttempt(handle: handle, share: share, spec: spec, configuration: c)

            // Decide: done, fail, or wait and retry.
            let failure: String
            let decision: RetryDecision
            var retryAfter: Double?
            var finalError: String
            switch result {
            case .aborted(let error):
                pool.discard(handle)   // its connection may be half-way through a body
                limiter.release(.neutral)
                if let mismatch = error as? TLSPinMismatch {
                    logger.debug("HTTP \(signed.method) \(shownURL): \(mismatch.description)")
                    throw TLSPinMismatch(url: shownURL, pinnedSHA256: mismatch.pinnedSHA256, presentedSHA256: mismatch.presentedSHA256)
                }
                if let e = error as? CVMError {
                    throw CVMError(e.kind, "\(signed.method) \(shownURL): \(redactor.text(e.message))")
                }
                throw CVMError.io("\(signed.method) \(shownURL): \(redactor.text(String(describing: error)))")

            case .connectionFailed(let code, let detail):
                pool.discard(handle)
                let retryable = isRetryableCurlCode(code)
                limiter.release(.neutral)
                decision = retryable ? .retry : .fail
                failure = "connection failed (\(oneLine(redactor.text(detail))))"
                // An attempt cut short by the operation's deadline says less than the failure
                // that led to it: report that one.
                let cutByDeadline = isTimeoutCurlCode(code) && monotonicSeconds() >= deadline - 0.05
                finalError = "\(signed.method) \(shownURL): \(cutByDeadline ? previousFailure ?? failure : failure)"
                if !retryable, detail.localizedCaseInsensitiveContains("certificate") {
                    finalError += "; the server's TLS certificate is not trusted (give the CA bundle with SSL_CERT_FILE or the CA-bundle option)"
                }

            case .response(let status, let headers, let body, let certificateSHA256):
                pool.give(handle)
                if accepted.contains(status) {
                    limiter.release(.success)
                    logger.debug("HTTP \(signed.method) \(shownURL) -> \(status), sent \(stats.sent) B, received \(stats.received) B, \(seconds(stats.seconds)), attempt \(attempt)")
                    let streamed = sink != nil && (200..<300).contains(status)
                    if request.serverCertificate == .insecure {
                        logger.warning("HTTP \(signed.method) \(shownURL): TLS certificate NOT verified (insecure), it was sha256:\(certificateSHA256 ?? "?")")
                    }
                    return HTTPResponse(status: status, headers: headers, body: streamed ? [] : body, attempts: attempt,
                                        serverCertificateSHA256: certificateSHA256)
                }
                let details = c.errorParser(status, headers, body)
                decision = classifier.decide(status: status, headers: headers, error: details)
                if let halved = limiter.release(decision == .throttle ? .throttled : .neutral) {
                    logger.debug("HTTP concurrency lowered to \(halved) after throttling by \(hostOf(shownURL))")
                }
                retryAfter = parseRetryAfter(headers["Retry-After"])
                failure = describe(status: status, details: details, body: body, redactor: redactor)
                finalError = "\(signed.method) \(shownURL): \(failure)"
                if let hint = signatureHint(status: status, details: details) { finalError += "; \(hint)" }
            }

            let elapsed = monotonicSeconds() - start
            if decision == .fail {
                logger.debug("HTTP \(signed.method) \(shownURL) failed: \(failure), \(seconds(stats.seconds)), attempt \(attempt), not retryable")
                throw CVMError.io(attemptsSuffix(finalError, attempt: attempt, elapsed: elapsed, gaveUp: false))
            }
            let delay = c.retry.delay(afterAttempt: attempt, retryAfter: retryAfter)
            if monotonicSeconds() + delay >= deadline {
                logger.debug("HTTP \(signed.method) \(shownURL) failed: \(failure), attempt \(attempt); deadline of \(seconds(budget)) reached, not retrying")
                throw CVMError.io(attemptsSuffix(finalError, attempt: attempt, elapsed: elapsed, gaveUp: true, budget: budget))
            }
            previousFailure = failure
            logger.debug("HTTP \(signed.method) \(shownURL) attempt \(attempt) failed: \(failure); retrying in \(seconds(delay))\(retryAfter != nil ? " (Retry-After)" : "")")
            try sleep(delay)
        }
    }

    /// Sleeps in short slices so cancellation is noticed.
    private func sleep(_ duration: Double) throws {
        let end = monotonicSeconds() + duration
        while true {
            if let cancelled = configuration.isCancelled, cancelled() {
                throw CVMError(.interrupted, "the transfer was cancelled")
            }
            let left = end - monotonicSeconds()
            if left <= 0 { return }
            Thread.sleep(forTimeInterval: min(left, 0.1))
        }
    }
}

// MARK: message pieces

/// "HTTP 403 SignatureDoesNotMatch: The request signature … (request id ABC)".
private func describe(status: Int, details: CloudErrorDetails?, body: [UInt8], redactor: Redactor) -> String {
    var text = "HTTP \(status)"
    if let code = details?.code, !code.isEmpty { text += " \(oneLine(redactor.text(code)))" }
    if let message = details?.message, !message.isEmpty {
        text += ": \(oneLine(redactor.text(message)))"
    } else if details?.code == nil, !body.isEmpty {
        // Unknown shape (an HTML page from a proxy, plain text): show its start.
        text += ": \(oneLine(redactor.text(String(decoding: body.prefix(400), as: UTF8.self))))"
    }
    if let id = details?.requestID, !id.isEmpty { text += " (request id \(oneLine(redactor.text(id))))" }
    return text
}

/// Codes and statuses that mean "the signature or its date was refused".
private func signatureHint(status: Int, details: CloudErrorDetails?) -> String? {
    guard status == 401 || status == 403 else { return nil }
    let signatureCodes: Set<String> = [
        "SignatureDoesNotMatch", "InvalidSignatureException", "IncompleteSignature", "AuthFailure",
        "AuthenticationFailed", "RequestTimeTooSkewed", "RequestExpired", "InvalidAccessKeyId",
        "InvalidClientTokenId", "UnrecognizedClientException", "ExpiredToken",
    ]
    let code = details?.code ?? ""
    let message = details?.message?.lowercased() ?? ""
    if signatureCodes.contains(code) || message.contains("signature") || code.lowercased().contains("signature") {
        return "the request signature was refused: check the system clock and the key"
    }
    return nil
}

private func attemptsSuffix(_ line: String, attempt: Int, elapsed: Double, gaveUp: Bool, budget: Double = 0) -> String {
    if gaveUp {
        return "\(line) (gave up after \(attempt) attempt\(attempt == 1 ? "" : "s") in \(seconds(elapsed)): deadline \(seconds(budget)))"
    }
    return attempt > 1 ? "\(line) (after \(attempt) attempts in \(seconds(elapsed)))" : line
}

/// Collapses whitespace so a message stays on one line, and bounds its length.
func oneLine(_ text: String, limit: Int = 300) -> String {
    let collapsed = text.split(whereSeparator: { $0.isWhitespace || $0.isNewline }).joined(separator: " ")
    return collapsed.count > limit ? String(collapsed.prefix(limit)) + "…" : collapsed
}

private func seconds(_ s: Double) -> String {
    String(format: "%.2f s", s)
}

private func hostOf(_ url: String) -> String {
    guard let r = url.range(of: "://") else { return url }
    return String(url[r.upperBound...].prefix { $0 != "/" && $0 != "?" })
}

extension Logger {
    /// A cloud command's request log on stderr: every request with `--verbose`, else warnings only.
    public static func commandLog(label: String, verbose: Bool) -> Logger {
        var logger = Logger(label: label, factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = verbose ? .debug : .warning
        return logger
    }
}
