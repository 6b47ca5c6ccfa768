import CVMCrypto
import Foundation

/// The headers SharedKey adds to a request, plus the string that was signed (no secret in it).
public struct AzureSignedHeaders: Sendable, Equatable {
    /// `x-ms-date` and `x-ms-version` when the request lacked them, then `Authorization`.
    public var headers: [HTTPHeader]
    public var stringToSign: String

    /// The request with these headers added (replacing an earlier Authorization).
    public func applied(to request: SignableRequest) -> SignableRequest {
        var out = request
        let replaced = Set(headers.map { $0.name.lowercased() })
        out.headers.removeAll { replaced.contains($0.name.lowercased()) }
        out.headers.append(contentsOf: headers)
        return out
    }
}

/// Azure Storage "SharedKey" signing (blob service, versions 2009-09-19 and later), as the
/// service and Microsoft's SDKs compute it:
/// - `Content-Length` is signed as an empty line when it is 0 (or absent);
/// - the `Date` line stays empty because `x-ms-date` is always sent;
/// - `x-ms-*` headers are lower-cased, trimmed and sorted in the service's collation;
/// - the resource is `/<account><wire path>` then `\nname:value` per query parameter (names
///   lower-cased and sorted, values decoded, repeated names joined with `,`).
/// Send byte ranges as `x-ms-range` (the SDKs never use `Range`, which would fill the Range line).
public struct AzureSharedKeySigner: Sendable {
    public var credentials: AzureStorageCredentials
    /// `x-ms-version` added when the request has none.
    public var version: String

    public static let defaultVersion = "2021-08-06"

    public init(credentials: AzureStorageCredentials, version: String = AzureSharedKeySigner.defaultVersion) {
        self.credentials = credentials
        self.version = version
    }

    static let standardHeaders = [
        "content-encoding", "content-language", "content-length", "content-md5", "content-type", "date",
        "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range",
    ]

    /// Signs `request`. `date` (the clock) becomes `x-ms-date` unless the request already has one.
    public func sign(_ request: SignableRequest, at date: Date) -> AzureSignedHeaders {
        var added = [HTTPHeader]()
        let callerHeaders = request.headers.filter { $0.name.lowercased() != "authorization" }
        if !callerHeaders.contains(where: { $0.name.lowercased() == "x-ms-date" }) {
            added.append(HTTPHeader("x-ms-date", UTCTimestamp(date).httpDate))
        }
        if !callerHeaders.contains(where: { $0.name.lowercased() == "x-ms-version" }) {
            added.append(HTTPHeader("x-ms-version", version))
        }
        let all = callerHeaders + added
        let toSign = stringToSign(method: request.method, path: request.path, query: request.query, headers: all)
        let signature = Base64.encode(HMACSHA256.mac(key: credentials.key, message: toSign))
        added.append(HTTPHeader("Authorization", "SharedKey \(credentials.accountName):\(signature)"))
        return AzureSignedHeaders(headers: added, stringToSign: toSign)
    }

    func stringToSign(method: String, path: String, query: [QueryParameter], headers: [HTTPHeader]) -> String {
        var standard = [String: String]()
        var msHeaders = [(name: String, value: String)]()
        for header in headers {
            let name = header.name.trimmingCharacters(in: .whitespaces).lowercased()
            if name.hasPrefix("x-ms-") {
                msHeaders.append((name, header.value.trimmingCharacters(in: .whitespaces)))
            } else if standard[name] == nil, !header.value.isEmpty {
                standard[name] = header.value
            }
        }
        if standard["content-length"] == "0" { standard["content-length"] = nil }
        var out = method.uppercased() + "\n"
        for name in Self.standardHeaders { out += (standard[name] ?? "") + "\n" }
        msHeaders.sort { AzureHeaderOrder.precedes($0.name, $1.name) }
        for header in msHeaders { out += "\(header.name):\(header.value)\n" }
        out += "/" + credentials.accountName + (path.isEmpty ? "/" : path)
        var grouped = [String: [String]]()
        for parameter in query { grouped[parameter.name.lowercased(), default: []].append(parameter.value) }
        let names = grouped.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        for name in names {
            let values = grouped[name, default: []].sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
            out += "\n\(name):\(values.joined(separator: ","))"
        }
        return out
    }
}
