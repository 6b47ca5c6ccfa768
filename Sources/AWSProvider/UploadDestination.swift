import CVMSupport

/// Where `cvm-cli upload` sends a disk.
public enum UploadDestination: Sendable, Equatable, CustomStringConvertible {
    /// `ebs://REGION`: an EBS snapshot made with the EBS direct APIs.
    case ebsSnapshot(region: String)
    /// `s3://BUCKET/KEY`: an S3 object (multipart upload of the disk file as is).
    case s3Object(bucket: String, key: String)

    public init(parsing text: String) throws {
        let lower = text.lowercased()
        if lower.hasPrefix("ebs://") {
            var region = String(text.dropFirst(6))
            while region.hasSuffix("/") { region.removeLast() }
            guard Self.isRegionName(region) else {
                throw CVMError.usage("destination '\(text)': '\(region)' is not an AWS region name; expected ebs://REGION such as ebs://us-east-2")
            }
            self = .ebsSnapshot(region: region)
        } else if lower.hasPrefix("s3://") {
            let rest = text.dropFirst(5)
            guard let slash = rest.firstIndex(of: "/") else {
                throw CVMError.usage("destination '\(text)' has no object key; expected s3://BUCKET/KEY")
            }
            let bucket = String(rest[..<slash])
            let key = String(rest[rest.index(after: slash)...])
            guard Self.isBucketName(bucket) else {
                throw CVMError.usage("destination '\(text)': '\(bucket)' is not a valid S3 bucket name; expected 3–63 lower-case letters, digits, '.' and '-'")
            }
            guard !key.isEmpty, key.utf8.count <= 1024 else {
                throw CVMError.usage("destination '\(text)': the object key must be 1–1024 bytes; expected s3://BUCKET/KEY")
            }
            self = .s3Object(bucket: bucket, key: key)
        } else {
            throw CVMError.usage("destination '\(text)' is not supported; expected ebs://REGION, s3://BUCKET/KEY or gs://BUCKET/OBJECT")
        }
    }

    public var description: String {
        switch self {
        case .ebsSnapshot(let region): return "ebs://\(region)"
        case .s3Object(let bucket, let key): return "s3://\(bucket)/\(key)"
        }
    }

    /// `us-east-2`, `eu-west-1`, `us-gov-west-1`, `local-1`: letters, digits and dashes.
    static func isRegionName(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 32 && s.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
            && s.first != "-" && s.last != "-"
    }

    static func isBucketName(_ s: String) -> Bool {
        (3...63).contains(s.count)
            && s.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x2E }
            && s.first != "-" && s.first != "." && s.last != "-" && s.last != "."
    }
}
