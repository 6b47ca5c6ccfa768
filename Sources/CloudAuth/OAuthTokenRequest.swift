/// A token-endpoint POST to make (`application/x-www-form-urlencoded`). The body carries a
/// bearer credential (JWT assertion, client secret or refresh token), so `description` hides it.
public struct OAuthTokenRequest: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var url: String
    public var body: String
    public var contentType: String { "application/x-www-form-urlencoded" }

    public init(url: String, form: [(String, String)]) {
        self.url = url
        self.body = PercentEncoding.formBody(form)
    }

    public var description: String { "OAuthTokenRequest(POST \(url), body: \(Redaction.secret))" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["description": description]) }
}

/// Minimal JSON writing for the JWT segments (fixed key order, so output is reproducible).
enum JSONText {
    static func string(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    enum Value {
        case string(String)
        case int(Int64)
    }

    static func object(_ members: [(String, Value)]) -> String {
        "{" + members.map { key, value in
            let rendered: String
            switch value {
            case .string(let s): rendered = string(s)
            case .int(let n): rendered = String(n)
            }
            return string(key) + ":" + rendered
        }.joined(separator: ",") + "}"
    }
}
