import CloudAuth
import CVMSupport
import Foundation
import Transport

/// OAuth access tokens for Google APIs: a service-account JWT grant or an authorized-user
/// refresh grant to the credentials' `token_uri`, cached and replaced shortly before it expires.
/// Thread-safe; a token is fetched by one caller while the others wait for it.
public final class GoogleAccessTokenSource: @unchecked Sendable {
    public let credentials: GoogleCredentials
    public let scopes: [String]
    private let client: HTTPClient
    private let now: @Sendable () -> Date
    /// A token this close to its expiry is replaced (Google's libraries use a few minutes).
    public var refreshMargin: TimeInterval = 300
    private let lock = NSLock()
    private var cached: (token: String, expiry: Date)?

    public init(credentials: GoogleCredentials, client: HTTPClient,
                scopes: [String] = [GoogleCredentials.cloudPlatformScope],
                now: @escaping @Sendable () -> Date = { Date() }) {
        self.credentials = credentials
        self.client = client
        self.scopes = scopes
        self.now = now
    }

    /// Every token handed out so far is a secret: callers add these to `secretValues`.
    public var currentToken: String? { lock.withLock { cached?.token } }

    /// A valid access token (cached, or fetched now).
    public func token() throws -> String {
        try lock.withLock {
            if let cached, cached.expiry.timeIntervalSince(now()) > refreshMargin { return cached.token }
            let fetched = try fetch()
            cached = fetched
            return fetched.token
        }
    }

    /// A request signer that adds `Authorization: Bearer …` on every attempt (a retry after a
    /// long backoff gets a refreshed token).
    public var requestSigner: RequestSigner {
        { [self] request in request.headers.set("Authorization", "Bearer " + (try token())) }
    }

    private func fetch() throws -> (token: String, expiry: Date) {
        let issued = now()
        let grant = try credentials.tokenRequest(scopes: scopes, at: issued)
        var headers = HTTPHeaders()
        headers.add("Content-Type", grant.contentType)
        headers.add("Accept", "application/json")
        var request = HTTPRequest(method: "POST", url: grant.url, headers: headers, body: BytesBody(grant.body))
        // The body carries the assertion, refresh token or client secret: never shown.
        request.secretValues = secretValues(of: grant)
        request.deadline = 120
        let response: HTTPResponse
        do {
            response = try client.send(request)
        } catch let error as CVMError {
            throw CVMError(error.kind, "Google OAuth token: \(error.message); \(hint)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
              let token = object["access_token"] as? String, !token.isEmpty else {
            throw CVMError.io("Google OAuth token from \(grant.url): the answer has no access_token; expected a JSON object with access_token and expires_in")
        }
        let lifetime = (object["expires_in"] as? NSNumber)?.doubleValue ?? 3600
        return (token, issued.addingTimeInterval(max(lifetime, 0)))
    }

    private var hint: String {
        switch credentials {
        case .serviceAccount(let account):
            return "check that the service-account key in \(account.source) is valid (not deleted or rotated) and the system clock is right"
        case .authorizedUser(let user):
            return "check the credentials in \(user.source), or run 'gcloud auth application-default login' again"
        }
    }

    private func secretValues(of grant: OAuthTokenRequest) -> [String] {
        var values = [grant.body]
        for pair in grant.body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[0] != "grant_type" else { continue }
            values.append(String(parts[1]))
            if let decoded = String(parts[1]).removingPercentEncoding { values.append(decoded) }
        }
        if case .authorizedUser(let user) = credentials { values += [user.clientSecret, user.refreshToken] }
        return values
    }
}
