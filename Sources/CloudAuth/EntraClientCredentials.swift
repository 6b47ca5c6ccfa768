import CVMSupport
import Foundation

/// An Entra ID (Azure AD) app registration's client secret, for ARM tokens.
/// `description` hides the secret.
public struct EntraClientCredentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var tenantId: String
    public var clientId: String
    public var clientSecret: String
    /// `https://login.microsoftonline.com` unless `AZURE_AUTHORITY_HOST` says otherwise; no trailing slash.
    public var authorityHost: String
    public var source: String

    public static let defaultAuthorityHost = "https://login.microsoftonline.com"
    public static let managementScope = "https://management.azure.com/.default"

    public init(tenantId: String, clientId: String, clientSecret: String, authorityHost: String? = nil, source: String = "explicit") throws {
        let tenantCharacters = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._"))
        guard !tenantId.isEmpty, tenantId.unicodeScalars.allSatisfy({ tenantCharacters.contains($0) && $0.isASCII }) else {
            throw CVMError.usage("\(source): AZURE_TENANT_ID is not a tenant id or domain; expected a GUID or a name like contoso.onmicrosoft.com")
        }
        guard !clientId.isEmpty else { throw CVMError.usage("\(source): AZURE_CLIENT_ID is empty; expected the application (client) id") }
        guard !clientSecret.isEmpty else { throw CVMError.usage("\(source): AZURE_CLIENT_SECRET is empty; expected the client secret value") }
        var authority = authorityHost ?? Self.defaultAuthorityHost
        if !authority.contains("://") { authority = "https://" + authority }
        while authority.hasSuffix("/") { authority.removeLast() }
        // Like azure-identity, refuse plain http except to a local test server.
        let lower = authority.lowercased()
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"].contains { lower == $0 || lower.hasPrefix($0 + ":") }
        guard lower.hasPrefix("https://") || loopback else {
            throw CVMError.usage("\(source): AZURE_AUTHORITY_HOST \(authority) is not https; expected an https URL such as \(Self.defaultAuthorityHost)")
        }
        self.tenantId = tenantId
        self.clientId = clientId
        self.clientSecret = clientSecret
        self.authorityHost = authority
        self.source = source
    }

    /// `<authority>/<tenant>/oauth2/v2.0/token`.
    public var tokenURL: String { "\(authorityHost)/\(tenantId)/oauth2/v2.0/token" }

    /// The client-credentials grant: `grant_type=client_credentials&client_id&client_secret&scope`.
    public func tokenRequest(scope: String = EntraClientCredentials.managementScope) -> OAuthTokenRequest {
        OAuthTokenRequest(url: tokenURL, form: [
            ("grant_type", "client_credentials"), ("client_id", clientId),
            ("client_secret", clientSecret), ("scope", scope),
        ])
    }

    public var description: String {
        "EntraClientCredentials(tenantId: \(tenantId), clientId: \(clientId), clientSecret: \(Redaction.secret), "
            + "authorityHost: \(authorityHost), source: \(source))"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["description": description]) }
}
