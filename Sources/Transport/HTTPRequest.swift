/// What a signer sees and may change before each attempt: the final method, URL and headers,
/// and what it needs to hash the payload. Transport itself sends `Host` from the URL and
/// `Content-Length` from `contentLength`; it adds nothing else that a signature could cover.
public struct SigningRequest: Sendable {
    public var method: String
    /// Absolute URL; a signer may add query parameters (presigned URLs, SAS).
    public var url: String
    public var headers: HTTPHeaders
    /// Body length, or nil when the request has no body at all (GET, HEAD, DELETE).
    public let contentLength: UInt64?
    /// Hex SHA-256 of the body when the caller supplied it (`HTTPRequest.payloadSHA256`).
    public let payloadSHA256: String?
    /// The body itself, for a signer that must hash it (keep bodies small in that case).
    public let body: (any RequestBody)?
    /// 1 for the first attempt, 2 for the first retry, …
    public let attempt: Int
}

/// Called before every attempt, so each retry carries a fresh date and signature.
public typealias RequestSigner = @Sendable (inout SigningRequest) throws -> Void

/// Called as the body goes out: bytes sent so far in this attempt and the body's size.
/// A retry starts again at 0.
public typealias TransferProgressHandler = @Sendable (_ bytesSent: UInt64, _ totalBytes: UInt64) -> Void

/// One HTTP operation: it may be attempted several times until its deadline.
public struct HTTPRequest: Sendable {
    public var method: String
    /// `https://…`; `http://` only for local emulators, and only when the caller passes it.
    public var url: String
    public var headers: HTTPHeaders
    /// The body; nil sends none (POST/PUT/PATCH without body send `Content-Length: 0`).
    public var body: (any RequestBody)?
    /// Hex SHA-256 of the body if known, handed to the signer.
    public var payloadSHA256: String?
    /// Signs each attempt (see `RequestSigner`).
    public var sign: RequestSigner?
    /// Statuses returned as a response instead of thrown (default: 200–299). Add e.g. 308 for
    /// GCS resumable uploads or 404 for delete-if-exists.
    public var acceptedStatuses: Set<Int>?
    /// Wall-clock budget for all attempts in seconds (default: the client's).
    public var deadline: Double?
    /// Overrides the client's classifier for this request (e.g. to retry "does not exist yet").
    public var retryClassifier: RetryClassifier?
    /// Largest collected response body (default 16 MiB); bigger is an error, not a truncation.
    public var maxResponseBytes: Int = 16 << 20
    /// Header names whose values never appear in logs or errors, besides the defaults.
    public var secretHeaderNames: Set<String> = []
    /// Query parameters whose values never appear in logs or errors, besides the defaults.
    public var secretQueryParameters: Set<String> = []
    /// Literal strings (keys, tokens) scrubbed from anything logged or thrown for this request.
    public var secretValues: [String] = []
    /// How the server's TLS certificate is judged (default: CA store and host name).
    public var serverCertificate: ServerCertificateCheck = .systemTrust

    public init(method: String, url: String, headers: HTTPHeaders = HTTPHeaders(),
                body: (any RequestBody)? = nil, payloadSHA256: String? = nil,
                sign: RequestSigner? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.payloadSHA256 = payloadSHA256
        self.sign = sign
    }

    /// True when the method carries a body even if none was given (Content-Length: 0).
    var sendsBody: Bool {
        if body != nil { return true }
        switch method.uppercased() {
        case "POST", "PUT", "PATCH": return true
        default: return false
        }
    }
}

/// A final answer from the server.
public struct HTTPResponse: Sendable {
    public let status: Int
    public let headers: HTTPHeaders
    /// The collected body; empty when it was streamed to a sink.
    public let body: [UInt8]
    /// How many attempts the operation took.
    public let attempts: Int
    /// Hex SHA-256 of the server's leaf certificate DER, when the request used a
    /// `ServerCertificateCheck` other than `.systemTrust`.
    public var serverCertificateSHA256: String? = nil

    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// Receives a streamed response body (downloads). Only 2xx bodies reach it; error bodies are
/// collected for the error message instead.
public protocol ResponseSink: AnyObject {
    /// Forget anything written: the transfer is being retried from the start.
    func restart() throws
    func write(_ chunk: UnsafeRawBufferPointer) throws
}
