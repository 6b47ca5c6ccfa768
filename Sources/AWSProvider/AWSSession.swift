import CloudAuth
import CVMCrypto
import CVMSupport
import Foundation
import Transport

/// Credentials, region, endpoints and one HTTP client shared by the AWS calls of an upload.
public final class AWSSession: @unchecked Sendable {
    public let configuration: AWSConfiguration
    public let region: String
    public let client: HTTPClient

    /// `region` overrides the configured one (the host of `ebs://REGION`).
    public init(configuration: AWSConfiguration, region: String? = nil, client: HTTPClient) throws {
        self.configuration = configuration
        self.region = try region ?? configuration.requireRegion()
        self.client = client
    }

    /// The base URL of `service` (`ebs`, `ec2`, `s3`) without a trailing slash.
    public func endpoint(_ service: String) throws -> String {
        var url: String
        if let override = configuration.endpoint(for: service) {
            url = override
        } else {
            url = "https://\(service).\(region).amazonaws.com"
        }
        while url.hasSuffix("/") { url.removeLast() }
        guard url.lowercased().hasPrefix("https://") || url.lowercased().hasPrefix("http://") else {
            throw CVMError.usage("AWS endpoint '\(url)' for \(service) is not an http(s) URL; expected e.g. https://\(service).\(region).amazonaws.com")
        }
        return url
    }

    /// A client like `client` that ignores cancellation, for clean-up after an interrupt.
    func uncancellableClient() -> HTTPClient {
        var configuration = client.configuration
        configuration.isCancelled = nil
        return HTTPClient(configuration: configuration, logger: client.logger)
    }

    /// True when an endpoint override is set for `service` (emulators, private endpoints).
    public func hasEndpointOverride(_ service: String) -> Bool {
        configuration.endpoint(for: service) != nil
    }

    public func signer(_ service: String) -> AWSSigV4Signer {
        AWSSigV4Signer(credentials: configuration.credentials, region: region, service: service)
    }

    /// A request signed for `service` on every attempt, with the secret scrubbed from errors.
    func request(_ service: String, method: String, url: String, headers: HTTPHeaders = HTTPHeaders(),
                 body: (any RequestBody)? = nil, payloadSHA256: String? = nil) -> HTTPRequest {
        var request = HTTPRequest(method: method, url: url, headers: headers, body: body,
                                  payloadSHA256: payloadSHA256, sign: signer(service).requestSigner)
        request.secretValues = [configuration.credentials.secretAccessKey]
        if let token = configuration.credentials.sessionToken, !token.isEmpty { request.secretValues.append(token) }
        return request
    }

    /// Sends `request`; a failure becomes one line that starts with the operation's name.
    func send(_ operation: String, _ request: HTTPRequest, progress: TransferProgressHandler? = nil,
              via other: HTTPClient? = nil) throws -> HTTPResponse {
        do {
            return try (other ?? client).send(request, progress: progress)
        } catch let error as CVMError {
            throw CVMError(error.kind, "\(operation): \(error.message)")
        }
    }
}

/// Hex SHA-256 of an in-memory body, for signing it.
func sha256Hex(_ bytes: [UInt8]) -> String { hexString(SHA256.hash(bytes)) }
