/// One HTTP header as the caller will send it. Names compare case-insensitively when signing.
public struct HTTPHeader: Sendable, Equatable {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// One query parameter, **decoded** (the signers encode it; see `SignableRequest.encodedQuery`).
public struct QueryParameter: Sendable, Equatable {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// The parts of an HTTP request that the signers read. A pure value: signing never does I/O.
///
/// - `host`: the Host header value, with `:port` when the port is not the scheme's default.
/// - `path`: the path exactly as sent on the wire (already percent-encoded, starting with `/`);
///   build it with `PercentEncoding.encodePath` from raw object keys.
/// - `query`: decoded name/value pairs; send `encodedQuery` (or the signer's output) on the wire
///   so the server decodes exactly what was signed.
/// - `headers`: what will be sent, in order; duplicates allowed. Headers the transport adds on its
///   own (User-Agent, Expect, Connection, Transfer-Encoding) need not be listed.
public struct SignableRequest: Sendable, Equatable {
    public var method: String
    public var host: String
    public var path: String
    public var query: [QueryParameter]
    public var headers: [HTTPHeader]

    public init(method: String, host: String, path: String = "/", query: [QueryParameter] = [], headers: [HTTPHeader] = []) {
        self.method = method
        self.host = host
        self.path = path
        self.query = query
        self.headers = headers
    }

    /// The query as it goes on the wire: RFC 3986 unreserved characters kept, everything else
    /// percent-encoded (so `+`, `/`, `=` and spaces survive every server's decoder), caller order.
    public var encodedQuery: String {
        query.map { PercentEncoding.encode($0.name) + "=" + PercentEncoding.encode($0.value) }.joined(separator: "&")
    }

    /// Path plus `?query` when there is one: the request target.
    public var target: String {
        query.isEmpty ? path : path + "?" + encodedQuery
    }

    /// The absolute URL to send: `scheme://host` + `target`. Rebuild the wire URL with this after
    /// signing, so the query goes out exactly as signed (a literal `+` would otherwise be read as
    /// a space by some servers).
    public func url(scheme: String) -> String { "\(scheme)://\(host)\(target)" }

    /// Values of every header named `name` (case-insensitive), in order.
    public func headerValues(_ name: String) -> [String] {
        let lower = name.lowercased()
        return headers.filter { $0.name.lowercased() == lower }.map(\.value)
    }
}

extension SignableRequest {
    /// Splits an absolute `http(s)://host[:port]/path?query` URL into a request: `host` keeps a
    /// non-default port, `path` stays as written (already encoded), the query is decoded (`+`
    /// stays `+`). Nil for anything else (no scheme, user info, fragment).
    public init?(method: String, url: String, headers: [HTTPHeader] = []) {
        let lower = url.lowercased()
        let defaultPort: String
        let rest: Substring
        if lower.hasPrefix("https://") { defaultPort = "443"; rest = url.dropFirst(8) }
        else if lower.hasPrefix("http://") { defaultPort = "80"; rest = url.dropFirst(7) }
        else { return nil }
        guard !rest.contains("#") else { return nil }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        var authority = String(rest[..<authorityEnd])
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        if authority.hasSuffix(":" + defaultPort) { authority.removeLast(defaultPort.count + 1) }
        var target = rest[authorityEnd...]
        var query = [QueryParameter]()
        if let mark = target.firstIndex(of: "?") {
            for pair in target[target.index(after: mark)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query.append(QueryParameter(PercentEncoding.decode(String(parts[0])),
                                            PercentEncoding.decode(parts.count > 1 ? String(parts[1]) : "")))
            }
            target = target[..<mark]
        }
        self.init(method: method, host: authority, path: target.isEmpty ? "/" : String(target), query: query, headers: headers)
    }
}
