import Foundation
import CVMCrypto
import CVMSupport

/// A storage account name and its shared key (from a connection string, the environment or
/// ARM `listKeys`). `description` never shows the key.
public struct AzureStorageCredentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var accountName: String
    /// The decoded account key (HMAC key).
    public var key: [UInt8]
    /// Blob service base URL without a trailing slash: `https://<account>.blob.core.windows.net`
    /// unless the connection string says otherwise (`BlobEndpoint=`, emulators).
    public var blobEndpoint: String
    /// Where the key was found, for messages.
    public var source: String

    /// - Parameter accountKey: the base64 key as the portal and `listKeys` show it.
    public init(accountName: String, accountKey: String, blobEndpoint: String? = nil, source: String = "explicit") throws {
        guard !accountName.isEmpty else {
            throw CVMError.usage("\(source): the storage account name is empty; expected an account name")
        }
        guard let key = Base64.decode(accountKey.trimmingCharacters(in: .whitespaces)), !key.isEmpty else {
            throw CVMError.usage("\(source): the storage account key is not valid base64; expected the key as listKeys returns it")
        }
        self.accountName = accountName
        self.key = key
        self.blobEndpoint = Self.trimSlash(blobEndpoint ?? "https://\(accountName).blob.core.windows.net")
        self.source = source
    }

    static func trimSlash(_ url: String) -> String {
        var url = url
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }

    public var description: String {
        "AzureStorageCredentials(accountName: \(accountName), accountKey: \(Redaction.secret), blobEndpoint: \(blobEndpoint), source: \(source))"
    }

    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["description": description]) }
}
