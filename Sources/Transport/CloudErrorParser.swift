import Foundation

/// What a cloud said about a failure, extracted from its error body and headers.
public struct CloudErrorDetails: Sendable, Equatable {
    public var code: String?
    public var message: String?
    public var requestID: String?

    public init(code: String? = nil, message: String? = nil, requestID: String? = nil) {
        self.code = code
        self.message = message
        self.requestID = requestID
    }
}

/// Extracts error details from an error answer (status, headers, first 64 KiB of the body).
public typealias CloudErrorParser = @Sendable (_ status: Int, _ headers: HTTPHeaders, _ body: [UInt8]) -> CloudErrorDetails?

/// Understands the common shapes: XML `<Code>`/`<Message>` (S3, EC2, Azure Storage), JSON
/// `{"error":{"code","message"}}` (ARM, Google), OAuth `{"error","error_description"}`,
/// AWS JSON `{"__type"|"code","message"}`, and the request-id headers of the three clouds.
public enum GenericCloudErrorParser {
    /// Header names that carry a request id, most specific first.
    public static let requestIDHeaders = [
        "x-amz-request-id", "x-amzn-requestid", "x-ms-request-id", "x-goog-request-id",
        "x-guploader-uploadid", "x-request-id",
    ]

    public static func parse(status: Int, headers: HTTPHeaders, body: [UInt8]) -> CloudErrorDetails? {
        var details = CloudErrorDetails()
        let text = String(decoding: body, as: UTF8.self)
        let trimmed = text.drop { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }
        if trimmed.hasPrefix("{") {
            parseJSON(body, into: &details)
        } else if trimmed.hasPrefix("<") {
            details.code = xmlElement("Code", in: text)
            details.message = xmlElement("Message", in: text)
            details.requestID = xmlElement("RequestId", in: text) ?? xmlElement("RequestID", in: text)
        }
        // Bodiless answers (HEAD, some Azure and EBS errors) put the code in a header.
        if details.code == nil, let c = headers["x-ms-error-code"] { details.code = c }
        if details.code == nil, let t = headers["x-amzn-errortype"] {
            details.code = String(t.prefix { $0 != ":" })
        }
        for name in requestIDHeaders {
            if let id = headers[name], !id.isEmpty { details.requestID = id; break }
        }
        if details.code == nil && details.message == nil && details.requestID == nil { return nil }
        return details
    }

    private static func parseJSON(_ body: [UInt8], into details: inout CloudErrorDetails) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { return }
        if let error = object["error"] as? [String: Any] {
            // ARM: code is a string; Google: code is the HTTP status and `status` the name.
            details.code = (error["code"] as? String) ?? (error["status"] as? String)
            if details.code == nil, let errors = error["errors"] as? [[String: Any]] {
                details.code = errors.first?["reason"] as? String
            }
            details.message = error["message"] as? String
        } else if let error = object["error"] as? String {
            details.code = error
            details.message = object["error_description"] as? String
        } else {
            if let type = (object["__type"] as? String) ?? (object["code"] as? String) ?? (object["Code"] as? String) {
                // AWS JSON types may be "namespace#Code".
                details.code = type.split(separator: "#").last.map(String.init)
            }
            details.message = (object["message"] as? String) ?? (object["Message"] as? String)
        }
    }

    /// The text of the first `<name>…</name>`, entities decoded.
    static func xmlElement(_ name: String, in text: String) -> String? {
        guard let open = text.range(of: "<\(name)>"),
              let close = text.range(of: "</\(name)>", range: open.upperBound..<text.endIndex) else { return nil }
        let raw = String(text[open.upperBound..<close.lowerBound])
        return raw.replacingOccurrences(of: "&lt;", with: "<")
            .replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"")
            .replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }
}
