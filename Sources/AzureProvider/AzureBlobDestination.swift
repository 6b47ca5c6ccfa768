import CVMSupport

/// `az://CONTAINER/BLOB`: a page blob in the storage account the credentials name.
public struct AzureBlobDestination: Sendable, Equatable, CustomStringConvertible {
    public var container: String
    /// The blob name as the user wrote it (percent-encoded only on the wire).
    public var blob: String

    public init(container: String, blob: String) {
        self.container = container
        self.blob = blob
    }

    /// True when `text` names an Azure destination (the CLI dispatches on it).
    public static func matches(_ text: String) -> Bool { text.lowercased().hasPrefix("az://") }

    public init(parsing text: String) throws {
        guard Self.matches(text) else {
            throw CVMError.usage("destination '\(text)' is not an Azure blob; expected az://CONTAINER/BLOB")
        }
        let rest = text.dropFirst(5)
        guard let slash = rest.firstIndex(of: "/") else {
            throw CVMError.usage("destination '\(text)' has no blob name; expected az://CONTAINER/BLOB")
        }
        let container = String(rest[..<slash])
        let blob = String(rest[rest.index(after: slash)...])
        guard Self.isContainerName(container) else {
            throw CVMError.usage("destination '\(text)': '\(container)' is not a valid container name; expected 3–63 lower-case letters, digits and single '-', starting with a letter or digit")
        }
        guard !blob.isEmpty, blob.utf8.count <= 1024, !blob.hasSuffix("/"), !blob.hasSuffix(".") else {
            throw CVMError.usage("destination '\(text)': the blob name must be 1–1024 bytes and not end with '/' or '.'; expected az://CONTAINER/BLOB")
        }
        self.init(container: container, blob: blob)
    }

    public var description: String { "az://\(container)/\(blob)" }

    /// Azure's container rule: 3–63 of [a-z0-9-], first a letter or digit, no `--`, no trailing `-`.
    static func isContainerName(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard (3...63).contains(bytes.count) else { return false }
        let allowed = bytes.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
        return allowed && bytes.first != 0x2D && bytes.last != 0x2D && !s.contains("--")
    }
}
