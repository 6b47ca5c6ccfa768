import CVMCrypto
import CVMSupport
import Foundation

/// A Google service-account key (`"type": "service_account"`). `description` hides the key.
public struct GoogleServiceAccount: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var clientEmail: String
    public var privateKeyId: String?
    public var privateKey: RSAPrivateKey
    /// Where assertions are sent and their `aud`; `https://oauth2.googleapis.com/token` by default.
    public var tokenURI: String
    public var projectId: String?
    public var source: String

    public var description: String {
        "GoogleServiceAccount(clientEmail: \(clientEmail), privateKeyId: \(privateKeyId.map(Redaction.identifier) ?? "none"), "
            + "privateKey: \(Redaction.secret), tokenURI: \(tokenURI), source: \(source))"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["description": description]) }
}

/// gcloud user credentials (`"type": "authorized_user"`, from `gcloud auth application-default login`).
public struct GoogleAuthorizedUser: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var clientId: String
    public var clientSecret: String
    public var refreshToken: String
    public var tokenURI: String
    public var quotaProjectId: String?
    public var source: String

    public var description: String {
        "GoogleAuthorizedUser(clientId: \(Redaction.identifier(clientId)), clientSecret: \(Redaction.secret), "
            + "refreshToken: \(Redaction.secret), tokenURI: \(tokenURI), source: \(source))"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["description": description]) }
}

/// The credentials an application-default-credentials JSON file holds.
public enum GoogleCredentials: Sendable, CustomStringConvertible {
    case serviceAccount(GoogleServiceAccount)
    case authorizedUser(GoogleAuthorizedUser)

    public static let defaultTokenURI = "https://oauth2.googleapis.com/token"
    public static let cloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"

    public var description: String {
        switch self {
        case .serviceAccount(let account): return account.description
        case .authorizedUser(let user): return user.description
        }
    }

    /// The POST that obtains an access token: a signed JWT assertion for a service account,
    /// a refresh-token grant for a user.
    public func tokenRequest(scopes: [String] = [cloudPlatformScope], at date: Date) throws -> OAuthTokenRequest {
        switch self {
        case .serviceAccount(let account): return try account.tokenRequest(scopes: scopes, at: date)
        case .authorizedUser(let user): return user.tokenRequest()
        }
    }

    /// Parses a key file's JSON. `source` names the file in errors; no field value is ever quoted.
    public static func parse(json: [UInt8], source: String) throws -> GoogleCredentials {
        guard json.count <= 1 << 20,
              let object = try? JSONSerialization.jsonObject(with: Data(json)) as? [String: Any] else {
            throw CVMError.invalid("\(source): not a JSON object; expected a Google credentials file (service_account or authorized_user)")
        }
        func field(_ name: String, required: Bool = true) throws -> String? {
            guard let value = object[name] else {
                if required { throw CVMError.invalid("\(source): missing \"\(name)\"; expected it in a \(object["type"] as? String ?? "credentials") file") }
                return nil
            }
            guard let text = value as? String, !text.isEmpty else {
                throw CVMError.invalid("\(source): \"\(name)\" is not a non-empty string")
            }
            return text
        }
        let type = object["type"] as? String
        switch type {
        case "service_account":
            let pem = try field("private_key")!
            return .serviceAccount(GoogleServiceAccount(
                clientEmail: try field("client_email")!,
                privateKeyId: try field("private_key_id", required: false),
                privateKey: try RSAPrivateKey(pem: pem, source: "\(source) private_key"),
                tokenURI: try field("token_uri", required: false) ?? defaultTokenURI,
                projectId: try field("project_id", required: false),
                source: source))
        case "authorized_user":
            return .authorizedUser(GoogleAuthorizedUser(
                clientId: try field("client_id")!, clientSecret: try field("client_secret")!,
                refreshToken: try field("refresh_token")!,
                tokenURI: try field("token_uri", required: false) ?? defaultTokenURI,
                quotaProjectId: try field("quota_project_id", required: false), source: source))
        default:
            // Name only the types Google defines: an arbitrary value could be a pasted secret.
            let known = ["external_account", "external_account_authorized_user", "impersonated_service_account", "gdch_service_account"]
            let shown = type.map { known.contains($0) ? "\"\($0)\"" : "(unrecognised)" } ?? "missing"
            throw CVMError.unsupported("\(source): credentials type \(shown) is not supported; expected \"service_account\" or \"authorized_user\"")
        }
    }
}

extension GoogleServiceAccount {
    /// The RS256 JWT bearer assertion (RFC 7523): header `{alg, typ, kid}`, claims
    /// `{iss, scope, aud = token_uri, iat, exp = iat + lifetime}`.
    public func assertion(scopes: [String], at date: Date, lifetime: Int = 3600) throws -> String {
        guard (1...3600).contains(lifetime) else {
            throw CVMError.usage("JWT lifetime \(lifetime) s is out of range; Google accepts at most 3600 seconds")
        }
        guard !scopes.isEmpty else { throw CVMError.usage("no OAuth scope given; expected at least one scope") }
        let issuedAt = UTCTimestamp.epochSeconds(date)
        var header: [(String, JSONText.Value)] = [("alg", .string("RS256")), ("typ", .string("JWT"))]
        if let privateKeyId { header.append(("kid", .string(privateKeyId))) }
        let claims: [(String, JSONText.Value)] = [
            ("iss", .string(clientEmail)), ("scope", .string(scopes.joined(separator: " "))),
            ("aud", .string(tokenURI)), ("iat", .int(issuedAt)), ("exp", .int(issuedAt + Int64(lifetime))),
        ]
        let signingInput = Base64.urlEncode(JSONText.object(header)) + "." + Base64.urlEncode(JSONText.object(claims))
        let signature = try privateKey.signSHA256(Array(signingInput.utf8))
        return signingInput + "." + Base64.urlEncode(signature)
    }

    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…` to `token_uri`.
    public func tokenRequest(scopes: [String], at date: Date) throws -> OAuthTokenRequest {
        OAuthTokenRequest(url: tokenURI, form: [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", try assertion(scopes: scopes, at: date)),
        ])
    }
}

extension GoogleAuthorizedUser {
    /// `grant_type=refresh_token&client_id=…&client_secret=…&refresh_token=…` to `token_uri`.
    public func tokenRequest() -> OAuthTokenRequest {
        OAuthTokenRequest(url: tokenURI, form: [
            ("grant_type", "refresh_token"), ("client_id", clientId),
            ("client_secret", clientSecret), ("refresh_token", refreshToken),
        ])
    }
}
