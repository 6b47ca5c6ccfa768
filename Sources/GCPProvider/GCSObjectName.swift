import CVMSupport

/// `gs://BUCKET/OBJECT`: where a GCS upload goes.
public struct GCSObjectName: Sendable, Equatable, CustomStringConvertible {
    public let bucket: String
    public let object: String

    public init(bucket: String, object: String) {
        self.bucket = bucket
        self.object = object
    }

    /// Parses `gs://BUCKET/OBJECT` with GCS's naming rules (bucket: 3–63 characters, or up to
    /// 222 with dots, of lower-case letters, digits, `-`, `_`, `.`; object: 1–1024 bytes of
    /// UTF-8 without CR/LF, not `.` or `..`).
    public init(parsing text: String) throws {
        guard text.lowercased().hasPrefix("gs://") else {
            throw CVMError.usage("destination '\(text)' is not a GCS URL; expected gs://BUCKET/OBJECT")
        }
        let rest = text.dropFirst(5)
        guard let slash = rest.firstIndex(of: "/") else {
            throw CVMError.usage("destination '\(text)' has no object name; expected gs://BUCKET/OBJECT")
        }
        let bucket = String(rest[..<slash])
        let object = String(rest[rest.index(after: slash)...])
        guard Self.isBucketName(bucket) else {
            throw CVMError.usage("destination '\(text)': '\(bucket)' is not a valid GCS bucket name; expected 3–63 lower-case letters, digits, '-', '_' and '.', starting and ending with a letter or digit")
        }
        guard !object.isEmpty, object.utf8.count <= 1024, object != ".", object != "..",
              !object.contains("\r"), !object.contains("\n") else {
            throw CVMError.usage("destination '\(text)': the object name must be 1–1024 bytes without line breaks; expected gs://BUCKET/OBJECT")
        }
        self.init(bucket: bucket, object: object)
    }

    public var description: String { "gs://\(bucket)/\(object)" }

    static func isBucketName(_ s: String) -> Bool {
        let limit = s.contains(".") ? 222 : 63
        guard (3...limit).contains(s.utf8.count) else { return false }
        let bytes = Array(s.utf8)
        func alnum(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) }
        guard alnum(bytes.first!), alnum(bytes.last!) else { return false }
        return bytes.allSatisfy { alnum($0) || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E }
            && s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { (1...63).contains($0.count) }
    }
}
