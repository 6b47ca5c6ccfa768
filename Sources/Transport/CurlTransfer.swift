import CCurl
import CVMSupport
import Foundation

/// How one attempt ended.
enum AttemptResult {
    /// The server answered (any status).
    case response(status: Int, headers: HTTPHeaders, body: [UInt8], certificateSHA256: String?)
    /// No complete answer: connection refused or reset, timeout, TLS failure, …
    case connectionFailed(code: Int, detail: String)
    /// Stopped on our side: the body could not be read, the sink failed, the answer was too
    /// large, or the operation was cancelled. Never retried.
    case aborted(Error)
}

/// What an attempt moved, for the log.
struct AttemptStats {
    var sent: UInt64 = 0
    var received: UInt64 = 0
    var seconds: Double = 0
}

/// Everything one attempt needs, passed to libcurl in one piece.
struct AttemptSpec {
    var method: String
    var url: String
    var headers: HTTPHeaders
    var body: (any RequestBody)?
    var sendsBody: Bool
    var timeoutSeconds: Double
    var collectLimit: Int
    /// Statuses whose body is the caller's (collected up to `collectLimit`, or streamed if 2xx).
    var accepted: Set<Int>
    var sink: ResponseSink?
    var progress: TransferProgressHandler?
    var isCancelled: (@Sendable () -> Bool)?
    var certificateCheck: ServerCertificateCheck = .systemTrust
}

/// Largest error body kept for the message (bodies beyond are cut, not an error).
let errorBodyLimit = 64 << 10

/// The state libcurl's callbacks reach through their user pointer.
private final class AttemptState {
    let body: (any RequestBody)?
    let total: UInt64
    var bodyOffset: UInt64 = 0
    var ownError: Error?
    var status = 0
    var headers = HTTPHeaders()
    let sink: ResponseSink?
    var collected: [UInt8] = []
    let collectLimit: Int
    let accepted: Set<Int>
    let progress: TransferProgressHandler?
    var lastReported: UInt64 = .max
    let isCancelled: (@Sendable () -> Bool)?

    init(_ spec: AttemptSpec) {
        body = spec.body
        total = spec.body?.size ?? 0
        sink = spec.sink
        collectLimit = spec.collectLimit
        accepted = spec.accepted
        progress = spec.progress
        isCancelled = spec.isCancelled
    }

    func headerLine(_ line: String) {
        let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("HTTP/") {
            // A new response (after 100 Continue, or the final one): start over.
            let parts = trimmed.split(separator: " ")
            status = parts.count >= 2 ? Int(parts[1]) ?? 0 : 0
            headers = HTTPHeaders()
        } else if let colon = trimmed.firstIndex(of: ":") {
            let name = trimmed[..<colon].trimmingCharacters(in: .whitespaces)
            let value = trimmed[trimmed.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers.add(name, value)
        }
    }

    /// Returns false to abort the transfer.
    func bodyChunk(_ chunk: UnsafeRawBufferPointer) -> Bool {
        let wanted = accepted.contains(status)
        if wanted, (200..<300).contains(status), let sink {
            do { try sink.write(chunk) } catch { ownError = error; return false }
            return true
        }
        if wanted {
            guard collected.count + chunk.count <= collectLimit else {
                ownError = CVMError.io("response body is larger than \(collectLimit) bytes, the limit for this request")
                return false
            }
            collected.append(contentsOf: chunk)
        } else {
            let room = max(0, errorBodyLimit - collected.count)
            collected.append(contentsOf: chunk.prefix(room))
        }
        return true
    }

    func readBody(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        guard let body else { return 0 }
        do {
            let n = try body.read(into: buffer, at: bodyOffset)
            bodyOffset += UInt64(n)
            if n == 0 && bodyOffset < total {
                ownError = CVMError.io("request body ended at byte \(bodyOffset), expected \(total) bytes")
                return nil
            }
            return n
        } catch {
            ownError = error
            return nil
        }
    }
}

/// Runs one attempt on `handle` (reset first; its open connections survive the reset).
func performAttempt(handle h: UnsafeMutableRawPointer, share: CurlShare?, spec: AttemptSpec,
                    configuration c: TransportConfiguration) -> (AttemptResult, AttemptStats) {
    curl_easy_reset(h)
    let state = AttemptState(spec)
    let user = Unmanaged.passUnretained(state).toOpaque()
    let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
    errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    defer { errorBuffer.deallocate() }
    var stats = AttemptStats()

    // Request line and headers.
    _ = cvm_curl_setopt_string(h, CURLOPT_URL, spec.url)
    _ = cvm_curl_setopt_long(h, CURLOPT_PATH_AS_IS, 1)         // send the path that was signed
    let plainHTTP = spec.url.lowercased().hasPrefix("http://")
    _ = cvm_curl_setopt_string(h, CURLOPT_PROTOCOLS_STR, plainHTTP ? "http" : "https")
    _ = cvm_curl_setopt_long(h, CURLOPT_FOLLOWLOCATION, 0)     // redirects go back to the caller
    let method = spec.method.uppercased()
    if method == "HEAD" {
        _ = cvm_curl_setopt_long(h, CURLOPT_NOBODY, 1)
    } else if spec.sendsBody {
        _ = cvm_curl_setopt_long(h, CURLOPT_UPLOAD, 1)
        _ = cvm_curl_setopt_off(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(spec.body?.size ?? 0))
        _ = cvm_curl_setopt_long(h, CURLOPT_UPLOAD_BUFFERSIZE, 512 << 10)   // fewer, larger reads
        if method != "PUT" { _ = cvm_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, spec.method) }
    } else if method != "GET" {
        _ = cvm_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, spec.method)
    }
    var list: UnsafeMutablePointer<curl_slist>?
    for (name, value) in spec.headers {
        let lower = name.lowercased()
        if lower == "content-length" || lower == "expect" || lower == "transfer-encoding" { continue }
        // "Name;" is libcurl's way to send a header with an empty value.
        list = curl_slist_append(list, value.isEmpty ? "\(name);" : "\(name): \(value)")
    }
    list = curl_slist_append(list, "Expect:")   // no 100-continue round trip
    defer { curl_slist_free_all(list) }
    _ = cvm_curl_setopt_slist(h, CURLOPT_HTTPHEADER, list)
    _ = cvm_curl_setopt_string(h, CURLOPT_USERAGENT, c.userAgent)

    // Connection behaviour. Proxies come from the environment (libcurl's default: we never set
    // CURLOPT_PROXY or CURLOPT_NOPROXY).
    _ = cvm_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)            // required with threads
    _ = cvm_curl_setopt_long(h, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_2TLS))
    _ = cvm_curl_setopt_long(h, CURLOPT_TCP_KEEPALIVE, 1)
    if let share { _ = cvm_curl_setopt_share(h, share.handle) }
    _ = cvm_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, Int(c.connectTimeout * 1000))
    _ = cvm_curl_setopt_long(h, CURLOPT_LOW_SPEED_LIMIT, max(1, c.lowSpeedLimit))
    _ = cvm_curl_setopt_long(h, CURLOPT_LOW_SPEED_TIME, max(1, c.lowSpeedTime))
    _ = cvm_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, max(1, Int(spec.timeoutSeconds * 1000)))

    // TLS is always verified: by the CA store (an explicit CA bundle replaces the system one),
    // or by the leaf certificate's fingerprint during the handshake.
    let certificateState = CertificateCheckState(spec.certificateCheck)
    _ = cvm_curl_setopt_long(h, CURLOPT_SSL_VERIFYPEER, 1)
    _ = cvm_curl_setopt_long(h, CURLOPT_SSL_VERIFYHOST, 2)
    if spec.certificateCheck != .systemTrust, !plainHTTP {
        installCertificateCheck(h, certificateState)
    } else if let bundle = c.effectiveCABundle {
        _ = cvm_curl_setopt_string(h, CURLOPT_CAINFO, bundle)
        _ = cvm_curl_setopt_string(h, CURLOPT_CAPATH, nil)
    } else if let dir = c.environment["SSL_CERT_DIR"], !dir.isEmpty {
        _ = cvm_curl_setopt_string(h, CURLOPT_CAPATH, dir)
    }
    _ = cvm_curl_setopt_pointer(h, CURLOPT_ERRORBUFFER, UnsafeMutableRawPointer(errorBuffer))

    // Callbacks.
    _ = cvm_curl_setopt_pointer(h, CURLOPT_HEADERDATA, user)
    _ = cvm_curl_setopt_write_function(h, CURLOPT_HEADERFUNCTION) { data, size, count, user in
        guard let data, let user else { return 0 }
        let n = size * count
        let state = Unmanaged<AttemptState>.fromOpaque(user).takeUnretainedValue()
        let bytes = UnsafeRawBufferPointer(start: data, count: n)
        state.headerLine(String(decoding: bytes, as: UTF8.self))
        return n
    }
    _ = cvm_curl_setopt_pointer(h, CURLOPT_WRITEDATA, user)
    _ = cvm_curl_setopt_write_function(h, CURLOPT_WRITEFUNCTION) { data, size, count, user in
        guard let data, let user else { return 0 }
        let n = size * count
        let state = Unmanaged<AttemptState>.fromOpaque(user).takeUnretainedValue()
        return state.bodyChunk(UnsafeRawBufferPointer(start: data, count: n)) ? n : 0
    }
    if spec.sendsBody {
        _ = cvm_curl_setopt_pointer(h, CURLOPT_READDATA, user)
        _ = cvm_curl_setopt_read_function(h) { buffer, size, count, user in
            guard let buffer, let user else { return Int(CURL_READFUNC_ABORT) }
            let state = Unmanaged<AttemptState>.fromOpaque(user).takeUnretainedValue()
            let target = UnsafeMutableRawBufferPointer(start: buffer, count: size * count)
            return state.readBody(into: target) ?? Int(CURL_READFUNC_ABORT)
        }
        _ = cvm_curl_setopt_pointer(h, CURLOPT_SEEKDATA, user)
        _ = cvm_curl_setopt_seek_function(h) { user, offset, origin in
            guard let user, origin == SEEK_SET, offset >= 0 else { return CURL_SEEKFUNC_CANTSEEK }
            let state = Unmanaged<AttemptState>.fromOpaque(user).takeUnretainedValue()
            guard UInt64(offset) <= state.total else { return CURL_SEEKFUNC_FAIL }
            state.bodyOffset = UInt64(offset)
            return CURL_SEEKFUNC_OK
        }
    }
    _ = cvm_curl_setopt_long(h, CURLOPT_NOPROGRESS, 0)
    _ = cvm_curl_setopt_pointer(h, CURLOPT_XFERINFODATA, user)
    _ = cvm_curl_setopt_xferinfo_function(h) { user, _, _, _, uploaded in
        guard let user else { return 0 }
        let state = Unmanaged<AttemptState>.fromOpaque(user).takeUnretainedValue()
        if let cancelled = state.isCancelled, cancelled() {
            state.ownError = CVMError(.interrupted, "the transfer was cancelled")
            return 1
        }
        let sent = UInt64(max(0, uploaded))
        if let progress = state.progress, sent != state.lastReported, state.total > 0 {
            state.lastReported = sent
            progress(sent, state.total)
        }
        return 0
    }

    let start = monotonicSeconds()
    let code = curl_easy_perform(h)
    stats.seconds = monotonicSeconds() - start
    var up: curl_off_t = 0, down: curl_off_t = 0
    _ = cvm_curl_getinfo_off(h, CURLINFO_SIZE_UPLOAD_T, &up)
    _ = cvm_curl_getinfo_off(h, CURLINFO_SIZE_DOWNLOAD_T, &down)
    stats.sent = UInt64(max(0, up))
    stats.received = UInt64(max(0, down))

    withExtendedLifetime(certificateState) {}
    if certificateState.mismatch, case .pinnedLeafSHA256(let pin) = spec.certificateCheck {
        return (.aborted(TLSPinMismatch(url: spec.url, pinnedSHA256: pin.lowercased(),
                                        presentedSHA256: certificateState.presentedSHA256 ?? "")), stats)
    }
    if let own = state.ownError { return (.aborted(own), stats) }
    guard code == CURLE_OK else {
        let summary = String(cString: curl_easy_strerror(code))
        let detail = String(cString: errorBuffer)
        let text = detail.isEmpty || detail == summary ? summary : "\(summary): \(detail)"
        return (.connectionFailed(code: Int(code.rawValue), detail: text), stats)
    }
    var status = 0
    _ = cvm_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
    if status == 0 { status = state.status }
    return (.response(status: status, headers: state.headers, body: state.collected,
                      certificateSHA256: certificateState.presentedSHA256), stats)
}

/// libcurl result codes worth another attempt: the network or the server failed us, not the
/// request. Certificate failures and our own aborts are not among them.
func isRetryableCurlCode(_ code: Int) -> Bool {
    let retryable: [CURLcode] = [
        CURLE_COULDNT_RESOLVE_PROXY, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_CONNECT,
        CURLE_PARTIAL_FILE, CURLE_OPERATION_TIMEDOUT, CURLE_SSL_CONNECT_ERROR, CURLE_GOT_NOTHING,
        CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_HTTP2, CURLE_HTTP2_STREAM, CURLE_HTTP3,
        CURLE_WEIRD_SERVER_REPLY, CURLE_PROXY,
    ]
    return retryable.contains { Int($0.rawValue) == code }
}

/// True for the "took too long" family (timeouts, low-speed aborts).
func isTimeoutCurlCode(_ code: Int) -> Bool { code == Int(CURLE_OPERATION_TIMEDOUT.rawValue) }
