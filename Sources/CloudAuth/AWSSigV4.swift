import CVMCrypto
import CVMSupport
import Foundation

/// What SigV4 hashes as the payload (`x-amz-content-sha256` and the canonical request's last line).
public enum AWSPayload: Sendable, Equatable {
    /// No body: SHA-256 of the empty string.
    case empty
    /// The body bytes; hashed here.
    case bytes([UInt8])
    /// The hex SHA-256 of a body the caller hashed while streaming it.
    case sha256Hex(String)
    /// `UNSIGNED-PAYLOAD` (S3 and EBS accept it over TLS; EBS PutSnapshotBlock carries its own checksum).
    case unsigned

    public var hashValue: String {
        switch self {
        case .empty: return hexString(SHA256.hash([UInt8]()))
        case .bytes(let bytes): return hexString(SHA256.hash(bytes))
        case .sha256Hex(let hex): return hex.lowercased()
        case .unsigned: return "UNSIGNED-PAYLOAD"
        }
    }
}

/// The headers SigV4 adds to a request, and the intermediate strings (for debugging 403s;
/// they contain no secret).
public struct AWSSignedHeaders: Sendable, Equatable {
    /// `X-Amz-Date`, `x-amz-content-sha256` (unless disabled), `X-Amz-Security-Token` (with a
    /// session token) and `Authorization`: add all of them to the request as they are.
    public var headers: [HTTPHeader]
    public var canonicalRequest: String
    public var stringToSign: String
    public var signedHeaders: String
    public var signature: String

    /// The request with these headers added (replacing any earlier signature headers).
    public func applied(to request: SignableRequest) -> SignableRequest {
        var out = request
        let replaced = Set(headers.map { $0.name.lowercased() })
        out.headers.removeAll { replaced.contains($0.name.lowercased()) }
        out.headers.append(contentsOf: headers)
        return out
    }
}

/// A presigned request: the query parameters to send instead of an Authorization header.
public struct AWSPresignedQuery: Sendable, Equatable {
    /// The caller's parameters followed by the `X-Amz-*` ones, ending with `X-Amz-Signature`.
    public var query: [QueryParameter]
    public var canonicalRequest: String
    public var stringToSign: String
    public var signature: String

    /// The query string to put on the wire.
    public var encodedQuery: String {
        query.map { PercentEncoding.encode($0.name) + "=" + PercentEncoding.encode($0.value) }.joined(separator: "&")
    }
}

/// AWS Signature Version 4 (HMAC-SHA256), for header-signed requests and presigned URLs.
/// Pure: the clock is an argument, nothing is sent anywhere.
public struct AWSSigV4Signer: Sendable {
    /// Which request headers are signed. Whatever is signed must reach the server unchanged.
    public enum HeaderSelection: Sendable, Equatable {
        /// `host`, `content-type`, `content-md5` and every `x-amz-*` header: what the SDKs need
        /// and what proxies leave alone (the default).
        case minimal
        /// Every header given except those that transports or proxies rewrite (botocore's list:
        /// `user-agent`, `expect`, `transfer-encoding`, `connection`, `keep-alive`, `te`,
        /// `trailer`, `upgrade`, `proxy-*`, `x-amzn-trace-id`; and `authorization`).
        case allExceptUnsignable
    }

    public struct Options: Sendable, Equatable {
        public var headerSelection: HeaderSelection = .minimal
        /// URI-encode the wire path once more (every service but S3 — the "double encoding").
        public var encodePath: Bool
        /// Remove `.`/`..` and empty segments from the path before encoding (every service but S3).
        public var normalizePath: Bool
        /// Send and sign `x-amz-content-sha256` (header signing only). On by default: S3 requires
        /// it and moto/botocore mis-hash a bodiless request without it.
        public var sendContentSHA256: Bool = true
        /// Sign `X-Amz-Security-Token` (the normal case). Off adds it after signing, as a few
        /// services (IoT) want.
        public var signSessionToken: Bool = true

        /// Defaults for a service: S3 neither normalizes nor re-encodes the path.
        public init(service: String) {
            let isS3 = service == "s3"
            encodePath = !isS3
            normalizePath = !isS3
        }
    }

    public var credentials: AWSCredentials
    public var region: String
    public var service: String
    public var options: Options

    public init(credentials: AWSCredentials, region: String, service: String, options: Options? = nil) {
        self.credentials = credentials
        self.region = region
        self.service = service
        self.options = options ?? Options(service: service)
    }

    static let algorithm = "AWS4-HMAC-SHA256"
    /// botocore's list of headers it never signs (hop-by-hop and proxy-rewritten), plus Authorization.
    static let unsignableHeaders: Set<String> = [
        "authorization", "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization",
        "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
    ]
    /// Headers the signer owns: a caller's copies are dropped and replaced.
    static let signerHeaders: Set<String> = [
        "authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token",
    ]

    /// Signs with an `Authorization` header.
    public func signHeaders(_ request: SignableRequest, payload: AWSPayload, at date: Date) -> AWSSignedHeaders {
        let time = UTCTimestamp(date)
        let payloadHash = payload.hashValue
        var added = [HTTPHeader("X-Amz-Date", time.basicDateTime)]
        if options.sendContentSHA256 { added.append(HTTPHeader("x-amz-content-sha256", payloadHash)) }
        var unsignedTail = [HTTPHeader]()
        if let token = credentials.sessionToken, !token.isEmpty {
            if options.signSessionToken {
                added.append(HTTPHeader("X-Amz-Security-Token", token))
            } else {
                unsignedTail.append(HTTPHeader("X-Amz-Security-Token", token))
            }
        }
        let callerHeaders = request.headers.filter { !Self.signerHeaders.contains(normalizedName($0.name)) }
        let canonical = canonicalHeaders(callerHeaders + added, host: request.host)
        let query = canonicalQuery(request.query)
        let canonicalRequest = [request.method.uppercased(), canonicalURI(request.path), query,
                                canonical.block, canonical.names, payloadHash].joined(separator: "\n")
        let scope = credentialScope(time)
        let stringToSign = [Self.algorithm, time.basicDateTime, scope,
                            hexString(SHA256.hash(canonicalRequest))].joined(separator: "\n")
        let signature = hexString(HMACSHA256.mac(key: signingKey(time), message: stringToSign))
        let authorization = "\(Self.algorithm) Credential=\(credentials.accessKeyId)/\(scope), "
            + "SignedHeaders=\(canonical.names), Signature=\(signature)"
        return AWSSignedHeaders(headers: added + unsignedTail + [HTTPHeader("Authorization", authorization)],
                                canonicalRequest: canonicalRequest, stringToSign: stringToSign,
                                signedHeaders: canonical.names, signature: signature)
    }

    /// Presigns with query parameters valid for `expires` seconds (1…604800).
    public func presign(_ request: SignableRequest, payload: AWSPayload = .unsigned, expires: Int, at date: Date) throws -> AWSPresignedQuery {
        guard (1...604_800).contains(expires) else {
            throw CVMError.usage("presigned URL lifetime \(expires) s is out of range; expected 1 to 604800 seconds")
        }
        if request.query.contains(where: { $0.name.lowercased() == "x-amz-signature" }) {
            throw CVMError.usage("request is already presigned (X-Amz-Signature present); expected an unsigned request")
        }
        let time = UTCTimestamp(date)
        let scope = credentialScope(time)
        let callerHeaders = request.headers.filter { !Self.signerHeaders.contains(normalizedName($0.name)) }
        let canonical = canonicalHeaders(callerHeaders, host: request.host)
        var query = request.query
        query.append(QueryParameter("X-Amz-Algorithm", Self.algorithm))
        query.append(QueryParameter("X-Amz-Credential", "\(credentials.accessKeyId)/\(scope)"))
        query.append(QueryParameter("X-Amz-Date", time.basicDateTime))
        query.append(QueryParameter("X-Amz-Expires", String(expires)))
        query.append(QueryParameter("X-Amz-SignedHeaders", canonical.names))
        let token = credentials.sessionToken.flatMap { $0.isEmpty ? nil : $0 }
        if let token, options.signSessionToken { query.append(QueryParameter("X-Amz-Security-Token", token)) }
        let canonicalRequest = [request.method.uppercased(), canonicalURI(request.path), canonicalQuery(query),
                                canonical.block, canonical.names, payload.hashValue].joined(separator: "\n")
        let stringToSign = [Self.algorithm, time.basicDateTime, scope,
                            hexString(SHA256.hash(canonicalRequest))].joined(separator: "\n")
        let signature = hexString(HMACSHA256.mac(key: signingKey(time), message: stringToSign))
        if let token, !options.signSessionToken { query.append(QueryParameter("X-Amz-Security-Token", token)) }
        query.append(QueryParameter("X-Amz-Signature", signature))
        return AWSPresignedQuery(query: query, canonicalRequest: canonicalRequest, stringToSign: stringToSign, signature: signature)
    }

    // MARK: canonical request parts

    func credentialScope(_ time: UTCTimestamp) -> String {
        "\(time.basicDate)/\(region)/\(service)/aws4_request"
    }

    func signingKey(_ time: UTCTimestamp) -> [UInt8] {
        let dateKey = HMACSHA256.mac(key: Array("AWS4\(credentials.secretAccessKey)".utf8), message: time.basicDate)
        let regionKey = HMACSHA256.mac(key: dateKey, message: region)
        let serviceKey = HMACSHA256.mac(key: regionKey, message: service)
        return HMACSHA256.mac(key: serviceKey, message: "aws4_request")
    }

    func canonicalURI(_ path: String) -> String {
        var uri = path.isEmpty ? "/" : path
        if options.normalizePath { uri = Self.removeDotSegments(uri) }
        if options.encodePath { uri = PercentEncoding.encodePath(uri) }
        return uri
    }

    /// RFC 3986 §5.2.4-style cleanup as the SDKs apply it: drops `.` and empty segments, `..`
    /// removes the previous one; keeps a leading and (when anything remains) trailing slash.
    static func removeDotSegments(_ path: String) -> String {
        var kept = [Substring]()
        for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
            if segment == "." { continue }
            if segment == ".." { if !kept.isEmpty { kept.removeLast() }; continue }
            kept.append(segment)
        }
        let leading = path.hasPrefix("/") ? "/" : ""
        let trailing = path.hasSuffix("/") && !kept.isEmpty ? "/" : ""
        return leading + kept.joined(separator: "/") + trailing
    }

    func canonicalQuery(_ query: [QueryParameter]) -> String {
        let encoded = query.map { (Array(PercentEncoding.encode($0.name).utf8), Array(PercentEncoding.encode($0.value).utf8)) }
        let sorted = encoded.sorted { a, b in
            a.0 != b.0 ? a.0.lexicographicallyPrecedes(b.0) : a.1.lexicographicallyPrecedes(b.1)
        }
        return sorted.map { String(decoding: $0.0, as: UTF8.self) + "=" + String(decoding: $0.1, as: UTF8.self) }
            .joined(separator: "&")
    }

    private func normalizedName(_ name: String) -> String {
        name.trimmingCharacters(in: .whitespaces).lowercased()
    }

    private func isSigned(_ name: String) -> Bool {
        switch options.headerSelection {
        case .minimal:
            return name == "host" || name == "content-type" || name == "content-md5" || name.hasPrefix("x-amz-")
        case .allExceptUnsignable:
            return !Self.unsignableHeaders.contains(name)
        }
    }

    /// The canonical header block (`name:value\n` per header, sorted) and the signed-header list.
    func canonicalHeaders(_ headers: [HTTPHeader], host: String) -> (block: String, names: String) {
        var values = [String: [String]]()
        var order = [String]()
        for header in headers {
            let name = normalizedName(header.name)
            guard isSigned(name) else { continue }
            if values[name] == nil { order.append(name) }
            values[name, default: []].append(Self.collapseWhitespace(header.value))
        }
        if values["host"] == nil { values["host"] = [host]; order.append("host") }
        let names = order.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let block = names.map { "\($0):\(values[$0, default: []].joined(separator: ","))\n" }.joined()
        return (block, names.joined(separator: ";"))
    }

    /// Trims a header value and folds internal runs of whitespace (including obsolete line
    /// folding) to one space.
    static func collapseWhitespace(_ value: String) -> String {
        value.split(whereSeparator: \.isWhitespace)
            .joined(separator: " ")
    }
}
