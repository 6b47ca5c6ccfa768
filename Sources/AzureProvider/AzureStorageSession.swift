import CloudAuth
import CVMCrypto
import CVMSupport
import Foundation
import Transport

/// A storage account's blob endpoint, its key and one HTTP client, shared by the calls of an
/// upload. Every request is signed with SharedKey on each attempt; the key never appears in a
/// log line or an error.
public final class AzureStorageSession: @unchecked Sendable {
    public let credentials: AzureStorageCredentials
    public let client: HTTPClient
    let signer: AzureSharedKeySigner

    public init(credentials: AzureStorageCredentials, client: HTTPClient) throws {
        let endpoint = credentials.blobEndpoint.lowercased()
        guard endpoint.hasPrefix("https://") || endpoint.hasPrefix("http://") else {
            throw CVMError.usage("\(credentials.source): the blob endpoint '\(credentials.blobEndpoint)' is not an http(s) URL; expected e.g. https://\(credentials.accountName).blob.core.windows.net")
        }
        self.credentials = credentials
        self.client = client
        signer = AzureSharedKeySigner(credentials: credentials)
    }

    /// `endpoint/container[/blob]`, the blob name percent-encoded (slashes kept).
    public func url(container: String, blob: String? = nil) -> String {
        var url = credentials.blobEndpoint + "/" + container
        if let blob { url += "/" + PercentEncoding.encodePath(blob) }
        return url
    }

    /// A request signed with the account key on every attempt.
    func request(_ method: String, _ url: String, query: [(String, String)] = [], headers: HTTPHeaders = HTTPHeaders(),
                 body: (any RequestBody)? = nil) -> HTTPRequest {
        var full = url
        if !query.isEmpty {
            full += "?" + query.map { PercentEncoding.encode($0.0) + "=" + PercentEncoding.encode($0.1) }.joined(separator: "&")
        }
        var request = HTTPRequest(method: method, url: full, headers: headers, body: body, sign: signer.requestSigner)
        request.secretValues = [Base64.encode(credentials.key)]
        return request
    }

    /// Sends `request`; a failure becomes one line that starts with the operation's name.
    func send(_ operation: String, _ request: HTTPRequest) throws -> HTTPResponse {
        do {
            return try client.send(request)
        } catch let error as CVMError {
            throw CVMError(error.kind, "\(operation): \(error.message)")
        }
    }
}
