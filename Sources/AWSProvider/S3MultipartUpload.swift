import CloudAuth
import CVMCrypto
import CVMSupport
import Foundation
import Transport

/// Uploads a file to S3 as is with a multipart upload, parts streamed from the file and sent
/// in parallel; an upload that fails is aborted so no parts are left billed.
public struct S3MultipartUpload: Sendable {
    public static let minimumPartSize: UInt64 = 5 << 20
    public static let maximumPartSize: UInt64 = 5 << 30
    public static let maximumParts: UInt64 = 10_000
    public static let maximumObjectSize: UInt64 = 5 << 40

    let session: AWSSession
    let options: AWSUploadOptions

    public init(session: AWSSession, options: AWSUploadOptions) {
        self.session = session
        self.options = options
    }

    /// The smallest multiple of 1 MiB, at least 5 MiB, that needs no more than 10,000 parts.
    public static func partSize(forFileSize size: UInt64) throws -> UInt64 {
        guard size <= maximumObjectSize else {
            throw CVMError.unsupported("a file of \(formatBytes(size)) is larger than S3's 5 TiB object limit")
        }
        let mib: UInt64 = 1 << 20
        let needed = (size + maximumParts - 1) / maximumParts
        let rounded = (needed + mib - 1) / mib * mib
        let part = max(minimumPartSize, rounded)
        guard part <= maximumPartSize else {
            throw CVMError.unsupported("a file of \(formatBytes(size)) needs parts over 5 GiB; S3 objects are limited to 10,000 parts of 5 GiB")
        }
        return part
    }

    /// Uploads `path` to `bucket`/`key`; returns the object's ETag, parts and bytes sent.
    public func upload(path: String, bucket: String, key: String) throws -> (etag: String, parts: Int, bytes: UInt64) {
        let file = try FileDescriptor.openForReading(path)
        defer { file.close() }
        let size = try file.size()
        let partSize = try options.s3PartSize ?? Self.partSize(forFileSize: size)
        guard partSize >= Self.minimumPartSize, partSize <= Self.maximumPartSize else {
            throw CVMError.usage("S3 part size \(partSize) is out of range; expected 5 MiB to 5 GiB")
        }
        let partCount = max(1, Int((size + partSize - 1) / partSize))
        guard UInt64(partCount) <= Self.maximumParts else {
            throw CVMError.usage("\(path): \(partCount) parts of \(formatBytes(partSize)) exceed S3's 10,000; use larger parts")
        }
        let objectURL = try self.objectURL(bucket: bucket, key: key)
        // As the AWS SDKs do: over TLS the part's integrity rests on Content-MD5 and the body
        // is sent UNSIGNED-PAYLOAD (one hash pass fewer); over plain http (local endpoints)
        // the SHA-256 of the part is signed too.
        let signsPayload = objectURL.lowercased().hasPrefix("http://")
        let resume = try options.resumeStore.map { store in
            (store: store, key: "s3://\(bucket)/\(key) <- \(path)", source: try SourceFileIdentity(path: path))
        }
        // With --resume, an upload this file started earlier continues: parts S3 already holds
        // with the same size and MD5 are not sent again.
        var uploadID = ""
        var stored: [Int: (etag: String, size: UInt64)] = [:]
        if let resume, let state = resume.store.load(S3ResumeState.self, key: resume.key),
           state.source == resume.source, state.partSize == partSize,
           let parts = try listParts(objectURL, uploadID: state.uploadID) {
            uploadID = state.uploadID
            stored = parts
            options.log?("resuming multipart upload \(uploadID): S3 holds \(parts.count) of \(partCount) parts")
        } else {
            uploadID = try create(objectURL)
            if let resume {
                try resume.store.save(S3ResumeState(source: resume.source, uploadID: uploadID, partSize: partSize), key: resume.key)
            }
            options.log?("CreateMultipartUpload: \(partCount) parts of \(formatBytes(partSize)), upload id \(uploadID)")
        }
        let id = uploadID, have = stored
        do {
            let etags = UncheckedSendable(ETagList(count: partCount))
            let done = ProgressTotal()
            let sent = ProgressTotal()
            let progress = options.progress
            progress?(0, size)
            try session.client.forEachConcurrently(partCount) { i in
                let start = UInt64(i) * partSize
                let range = start..<min(size, start + partSize)
                let hashes = try hashPart(number: i + 1, file: file, range: range, withSHA256: signsPayload)
                if let have = have[i + 1], have.size == UInt64(range.count),
                   have.etag.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) == hexString(hashes.md5) {
                    etags.value.set(i, have.etag)
                } else {
                    let etag = try uploadPart(objectURL, uploadID: id, number: i + 1, file: file, range: range, hashes: hashes)
                    etags.value.set(i, etag)
                    _ = sent.add(UInt64(range.count))
                }
                progress?(done.add(UInt64(range.count)), size)
            }
            let etag = try complete(objectURL, uploadID: uploadID, etags: etags.value.all())
            if let resume { resume.store.remove(key: resume.key) }
            return (etag, partCount, sent.add(0))
        } catch {
            if resume != nil {
                options.log?("multipart upload \(uploadID) kept for --resume")
            } else {
                abort(objectURL, uploadID: uploadID)
            }
            throw error
        }
    }

    /// The parts S3 holds for `uploadID` (number → ETag, size), or nil when the upload is gone
    /// (completed, aborted or expired) and a new one must start.
    private func listParts(_ url: String, uploadID: String) throws -> [Int: (etag: String, size: UInt64)]? {
        var parts: [Int: (etag: String, size: UInt64)] = [:]
        var marker = 0
        while true {
            var query = "?max-parts=1000&uploadId=\(PercentEncoding.encode(uploadID))"
            if marker > 0 { query = "?max-parts=1000&part-number-marker=\(marker)&uploadId=\(PercentEncoding.encode(uploadID))" }
            let request = session.request("s3", method: "GET", url: url + query)
            let response: HTTPResponse
            do {
                response = try session.send("S3 ListParts", request)
            } catch let error as CVMError where error.message.contains("NoSuchUpload") {
                return nil
            }
            guard let answer = XMLFields(response.body) else {
                throw CVMError.io("S3 ListParts: the answer is not XML: \(String(decoding: response.body.prefix(200), as: UTF8.self))")
            }
            let numbers = answer.fields.filter { $0.path.hasSuffix("/Part/PartNumber") }.compactMap { Int($0.text) }
            let tags = answer.fields.filter { $0.path.hasSuffix("/Part/ETag") }.map(\.text)
            let sizes = answer.fields.filter { $0.path.hasSuffix("/Part/Size") }.compactMap { UInt64($0.text) }
            guard numbers.count == tags.count, numbers.count == sizes.count else {
                throw CVMError.io("S3 ListParts: parts without number, ETag or size in the answer")
            }
            for (i, n) in numbers.enumerated() { parts[n] = (tags[i], sizes[i]) }
            guard answer.child("IsTruncated") == "true", let next = answer.child("NextPartNumberMarker").flatMap(Int.init),
                  next > marker else { return parts }
            marker = next
        }
    }

    /// Path-style (`endpoint/bucket/key`) with an endpoint override or a dotted bucket name,
    /// else virtual-hosted (`https://bucket.s3.region.amazonaws.com/key`).
    func objectURL(bucket: String, key: String) throws -> String {
        let path = PercentEncoding.encodePath(key)
        if session.hasEndpointOverride("s3") || bucket.contains(".") {
            return try session.endpoint("s3") + "/" + bucket + "/" + path
        }
        return "https://\(bucket).s3.\(session.region).amazonaws.com/\(path)"
    }

    private func create(_ url: String) throws -> String {
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/octet-stream")
        let request = session.request("s3", method: "POST", url: url + "?uploads=", headers: headers)
        let response = try session.send("S3 CreateMultipartUpload", request)
        guard let id = XMLFields(response.body)?.child("UploadId"), !id.isEmpty else {
            throw CVMError.io("S3 CreateMultipartUpload: the answer has no UploadId: \(String(decoding: response.body.prefix(200), as: UTF8.self))")
        }
        return id
    }

    /// MD5 (Content-MD5, and S3's ETag of a part) and, when the payload is signed, SHA-256 of a part,
    /// from one read pass over the file range; the body then streams from the file again.
    private func hashPart(number: Int, file: FileDescriptor, range: Range<UInt64>,
                          withSHA256: Bool) throws -> (md5: [UInt8], sha256: [UInt8]?) {
        var md5 = MD5Hasher()
        var sha = SHA256Hasher()
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        var offset = range.lowerBound
        while offset < range.upperBound {
            let n = Int(min(UInt64(chunk), range.upperBound - offset))
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
            do {
                try file.read(into: slice, at: offset)
            } catch let error as CVMError {
                throw CVMError(error.kind, "S3 UploadPart \(number): \(error.message)")
            }
            md5.update(UnsafeRawBufferPointer(slice))
            if withSHA256 { sha.update(UnsafeRawBufferPointer(slice)) }
            offset += UInt64(n)
        }
        return (md5.finalize(), withSHA256 ? sha.finalize() : nil)
    }

    private func uploadPart(_ url: String, uploadID: String, number: Int, file: FileDescriptor,
                            range: Range<UInt64>, hashes: (md5: [UInt8], sha256: [UInt8]?)) throws -> String {
        var headers = HTTPHeaders()
        headers.add("Content-MD5", Base64.encode(hashes.md5))
        let query = "?partNumber=\(number)&uploadId=\(PercentEncoding.encode(uploadID))"
        let request = session.request("s3", method: "PUT", url: url + query, headers: headers,
                                      body: FileRangeBody(file: file, range: range),
                                      payloadSHA256: hashes.sha256.map(hexString))
        let response = try session.send("S3 UploadPart \(number)", request)
        guard let etag = response.headers["ETag"], !etag.isEmpty else {
            throw CVMError.io("S3 UploadPart \(number): the answer has no ETag header")
        }
        return etag
    }

    private func complete(_ url: String, uploadID: String, etags: [String]) throws -> String {
        var xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        for (i, etag) in etags.enumerated() {
            xml += "<Part><PartNumber>\(i + 1)</PartNumber><ETag>\(xmlEscaped(etag))</ETag></Part>"
        }
        xml += "</CompleteMultipartUpload>"
        let body = Array(xml.utf8)
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/xml")
        let request = session.request("s3", method: "POST", url: url + "?uploadId=\(PercentEncoding.encode(uploadID))",
                                      headers: headers, body: BytesBody(body), payloadSHA256: sha256Hex(body))
        let response = try session.send("S3 CompleteMultipartUpload", request)
        // S3 may answer 200 and still report an error in the body.
        let answer = XMLFields(response.body)
        if answer?.root == "Error" {
            let code = answer?.first("Error/Code") ?? "unknown"
            let message = answer?.first("Error/Message") ?? ""
            throw CVMError.io("S3 CompleteMultipartUpload: \(code): \(message)")
        }
        let etag = answer?.child("ETag") ?? ""
        options.log?("CompleteMultipartUpload: ETag \(etag.isEmpty ? "missing in \(String(decoding: response.body.prefix(300), as: UTF8.self))" : etag)")
        return etag
    }

    /// Best effort, and also after an interrupt: the original error matters more than a failed abort.
    private func abort(_ url: String, uploadID: String) {
        var request = session.request("s3", method: "DELETE", url: url + "?uploadId=\(PercentEncoding.encode(uploadID))")
        request.deadline = 60
        do {
            _ = try session.send("S3 AbortMultipartUpload", request, via: session.uncancellableClient())
            options.log?("AbortMultipartUpload: \(uploadID) aborted")
        } catch {
            options.log?("AbortMultipartUpload: \(error)")
        }
    }
}

/// What `--resume` needs to continue a multipart upload of the same, unchanged file.
struct S3ResumeState: Codable {
    let source: SourceFileIdentity
    let uploadID: String
    let partSize: UInt64
}

/// Part ETags filled in by parallel workers.
final class ETagList: @unchecked Sendable {
    private let lock = NSLock()
    private var etags: [String]
    init(count: Int) { etags = Array(repeating: "", count: count) }
    func set(_ i: Int, _ etag: String) { lock.withLock { etags[i] = etag } }
    func all() -> [String] { lock.withLock { etags } }
}

/// A thread-safe running total of bytes done.
final class ProgressTotal: @unchecked Sendable {
    private let lock = NSLock()
    private var total: UInt64 = 0
    func add(_ n: UInt64) -> UInt64 { lock.withLock { total += n; return total } }
}
