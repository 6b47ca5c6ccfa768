import Foundation

/// Keeps credentials out of logs and error messages: secret headers, signature/SAS query
/// parameters and any literal secret value are replaced by `[redacted]`.
public struct Redactor: Sendable {
    public static let placeholder = "[redacted]"

    /// Headers that carry credentials (lowercase).
    public static let defaultSecretHeaders: Set<String> = [
        "authorization", "proxy-authorization", "x-amz-security-token",
        "x-ms-copy-source-authorization", "cookie", "set-cookie", "x-goog-iam-authorization-token",
        "x-amz-server-side-encryption-customer-key", "x-ms-encryption-key",
    ]

    /// Query parameters of presigned URLs, SAS tokens and API keys (lowercase).
    public static let defaultSecretQueryParameters: Set<String> = [
        "x-amz-signature", "x-amz-credential", "x-amz-security-token",
        "x-goog-signature", "x-goog-credential",
        "sig", "se", "sp", "sv", "sr", "st", "ss", "srt", "spr", "si", "sdd",
        "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid",
        "signature", "access_token", "key", "api_key", "apikey", "client_secret", "code", "token",
    ]

    public let secretHeaders: Set<String>
    public let secretQueryParameters: Set<String>
    /// Literal values to scrub from any text, longest first so a value containing another wins.
    public let secretValues: [String]

    public init(secretHeaders: Set<String> = [], secretQueryParameters: Set<String> = [],
                secretValues: [String] = []) {
        self.secretHeaders = Redactor.defaultSecretHeaders.union(secretHeaders.map { $0.lowercased() })
        self.secretQueryParameters = Redactor.defaultSecretQueryParameters
            .union(secretQueryParameters.map { $0.lowercased() })
        self.secretValues = Array(Set(secretValues.filter { $0.count >= 4 })).sorted { $0.count > $1.count }
    }

    /// The redactor for one signed attempt: the defaults, what the request marks secret, and the
    /// actual values of its secret headers and query parameters (so an echo in a body is caught).
    init(request: HTTPRequest, signed: SigningRequest) {
        let headerNames = Redactor.defaultSecretHeaders.union(request.secretHeaderNames.map { $0.lowercased() })
        let queryNames = Redactor.defaultSecretQueryParameters.union(request.secretQueryParameters.map { $0.lowercased() })
        var values = request.secretValues
        for (name, value) in signed.headers where headerNames.contains(name.lowercased()) {
            values.append(value)
            // Scheme prefixes and key=value pieces: a server may echo only the token part.
            for piece in value.split(whereSeparator: { " ,;=".contains($0) }) where piece.count >= 12 {
                values.append(String(piece))
            }
        }
        for (name, value) in Redactor.queryItems(of: signed.url) where queryNames.contains(name.lowercased()) {
            values.append(value)
            if let decoded = value.removingPercentEncoding, decoded != value { values.append(decoded) }
        }
        self.init(secretHeaders: headerNames, secretQueryParameters: queryNames, secretValues: values)
    }

    /// The URL with secret query values and any user:password replaced.
    public func url(_ url: String) -> String {
        var base = url
        var query: Substring?
        if let q = url.firstIndex(of: "?") {
            base = String(url[..<q])
            query = url[url.index(after: q)...]
        }
        if let fragment = base.firstIndex(of: "#") { base = String(base[..<fragment]) }
        // scheme://user:pass@host/… → scheme://[redacted]@host/…
        if let schemeEnd = base.range(of: "://") {
            let authorityEnd = base[schemeEnd.upperBound...].firstIndex(of: "/") ?? base.endIndex
            if let at = base[schemeEnd.upperBound..<authorityEnd].lastIndex(of: "@") {
                base = String(base[..<schemeEnd.upperBound]) + Redactor.placeholder + String(base[at...])
            }
        }
        guard var q = query else { return text(base) }
        if let fragment = q.firstIndex(of: "#") { q = q[..<fragment] }
        let items = q.split(separator: "&", omittingEmptySubsequences: false).map { item -> String in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            let decodedName = (name.removingPercentEncoding ?? name).lowercased()
            if parts.count == 2, secretQueryParameters.contains(decodedName) {
                return name + "=" + Redactor.placeholder
            }
            return String(item)
        }
        return text(base + "?" + items.joined(separator: "&"))
    }

    /// `text` with every secret value replaced, and secret query parameters inside it too (a
    /// server may quote the request URL in its error message).
    public func text(_ text: String) -> String {
        var out = text
        for secret in secretValues where out.contains(secret) {
            out = out.replacingOccurrences(of: secret, with: Redactor.placeholder)
        }
        guard out.contains("="), let pattern = queryPattern else { return out }
        let range = NSRange(out.startIndex..<out.endIndex, in: out)
        return pattern.stringByReplacingMatches(in: out, range: range, withTemplate: "$1$2=\(Redactor.placeholder)")
    }

    /// `?name=value` / `&name=value` for the secret names (value up to a delimiter).
    private var queryPattern: NSRegularExpression? {
        let names = secretQueryParameters.sorted { $0.count > $1.count }
            .map { NSRegularExpression.escapedPattern(for: $0) }.joined(separator: "|")
        return try? NSRegularExpression(pattern: "([?&])(\(names))=(?!\\[redacted\\])[^&\\s\"'<>#]*",
                                        options: [.caseInsensitive])
    }

    /// Header value for display: secret headers show only the placeholder.
    public func header(_ name: String, _ value: String) -> String {
        secretHeaders.contains(name.lowercased()) ? Redactor.placeholder : text(value)
    }

    static func queryItems(of url: String) -> [(String, String)] {
        guard let q = url.firstIndex(of: "?") else { return [] }
        var query = url[url.index(after: q)...]
        if let fragment = query.firstIndex(of: "#") { query = query[..<fragment] }
        return query.split(separator: "&").compactMap { item in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { return nil }
            let name = String(parts[0])
            return (name.removingPercentEncoding ?? name, String(parts[1]))
        }
    }
}
