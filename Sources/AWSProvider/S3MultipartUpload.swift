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
        // Each part carries one strong checksum, its SHA-256 (x-amz-checksum-sha256, declared
        // at CreateMultipartUpload; S3 checks it and keeps it). Over plain http (local
        // endpoints) the same digest is also the signed payload hash, so a part is hashed
        // once; over TLS the body goes UNSIGNED-PAYLOAD as the AWS SDKs send it.
        let signsPayload = objectURL.lowercased().hasPrefix("http://")
        let resume = try options.resumeStore.map { store in
            (store: store, key: "s3://\(bucket)/\(key) <- \(path)", source: try SourceFileIdentity(path: path))
        }
        // With --resume, an upload this file started earlier continues: parts S3 already holds
        // with the same size and SHA-256 (or MD5 ETag, where ListParts gives no checksum) are
        // not sent again.
        var uploadID = ""
        var stored: [Int: StoredPart] = [:]
        let saved = resume.flatMap { $0.store.load(S3ResumeState.self, key: $0.key) }
        if let resume, let state = saved, state.source == resume.source, state.partSize == partSize,
           state.checksumAlgorithm == Self.checksumAlgorithm,
           let parts = try listParts(objectURL, uploadID: state.uploadID) {
            uploadID = state.uploadID
            stored = parts
            options.log?("resuming multipart upload \(uploadID): S3 holds \(parts.count) of \(partCount) parts")
        } else {
            if let state = saved {
                options.log?("not resuming multipart upload \(state.uploadID): the file or the upload settings changed")
                abort(objectURL, uploadID: state.uploadID)
            }
            uploadID = try create(objectURL)
            if let resume {
                try resume.store.save(S3ResumeState(source: resume.source, uploadID: uploadID, partSize: partSize,
                                                    checksumAlgorithm: Self.checksumAlgorithm), key: resume.key)
            }
            options.log?("CreateMultipartUpload: \(partCount) parts of \(formatBytes(partSize)), upload id \(uploadID)")
        }
        let id = uploadID, have = stored
        // Parts that are holes in the file (most of a sparse disk) are zeros: their SHA-256 is
        // computed once, not read and hashed again for every part.
        let dataRanges = file.dataRanges(upTo: size)
        let zeroDigests = ZeroPartDigests()
        do {
            let etags = UncheckedSendable(ETagList(count: partCount))
            let done = ProgressTotal()
            let sent = ProgressTotal()
            let progress = options.progress
            progress?(0, size)
            try session.client.forEachConcurrently(partCount) { i in
                let start = UInt64(i) * partSize
                let range = start..<min(size, start + partSize)
                let stored = have[i + 1].flatMap { $0.size == UInt64(range.count) ? $0 : nil }
                let isHole = !Self.overlapsData(range, dataRanges)
                let needsMD5 = stored != nil && stored?.checksumSHA256 == nil
                let hashes = isHole && !needsMD5
                    ? (sha256: zeroDigests.sha256(count: range.count), md5: nil)
                    : try hashPart(number: i + 1, file: file, range: range, withMD5: needsMD5)
                let checksum = Base64.encode(hashes.sha256)
                if let stored, stored.matches(sha256: checksum, md5: hashes.md5) {
                    etags.value.set(i, (stored.etag, checksum))
                } else {
                    let etag = try uploadPart(objectURL, uploadID: id, number: i + 1, file: file, range: range,
                                              sha256: hashes.sha256, signsPayload: signsPayload)
                    etags.value.set(i, (etag, checksum))
                    _ = sent.add(UInt64(range.count))
                }
                progress?(done.add(UInt64(range.count)), size)
            }
            let etag = try complete(objectURL, uploadID: uploadID, parts: etags.value.all())
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

    /// True when `range` meets one of the sorted, disjoint `data` ranges (binary search: a
    /// fragmented file may have many).
    static func overlapsData(_ range: Range<UInt64>, _ data: [Range<UInt64>]) -> Bool {
        var lo = 0, hi = data.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if data[mid].upperBound <= range.lowerBound { lo = mid + 1 } else { hi = mid }
        }
        return lo < data.count && data[lo].lowerBound < range.upperBound
    }

    /// The parts S3 holds for `uploadID` (number → ETag, size), or nil when the upload is gone
    /// (completed, aborted or expired) and a new one must start.
    private func listParts(_ url: String, uploadID: String) throws -> [Int: StoredPart]? {
        var parts: [Int: StoredPart] = [:]
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
            let checksums = answer.fields.filter { $0.path.hasSuffix("/Part/ChecksumSHA256") }.map(\.text)
            guard numbers.count == tags.count, numbers.count == sizes.count else {
                throw CVMError.io("S3 ListParts: parts without number, ETag or size in the answer")
            }
            // S3 lists the part checksums of an upload created with one; an endpoint that
            // leaves them out is compared by the MD5 ETag instead.
            let hasChecksums = checksums.count == numbers.count
            for (i, n) in numbers.enumerated() {
                parts[n] = StoredPart(etag: tags[i], size: sizes[i], checksumSHA256: hasChecksums ? checksums[i] : nil)
            }
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

    /// The part checksum declared at CreateMultipartUpload and sent with every part.
    static let checksumAlgorithm = "SHA256"

    private func create(_ url: String) throws -> String {
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/octet-stream")
        headers.add("x-amz-checksum-algorithm", Self.checksumAlgorithm)
        let request = session.request("s3", method: "POST", url: url + "?uploads=", headers: headers)
        let response = try session.send("S3 CreateMultipartUpload", request)
        guard let id = XMLFields(response.body)?.child("UploadId"), !id.isEmpty else {
            throw CVMError.io("S3 CreateMultipartUpload: the answer has no UploadId: \(String(decoding: response.body.prefix(200), as: UTF8.self))")
        }
        return id
    }

    /// SHA-256 of a part (its checksum, and the signed payload hash over http) and, to compare
    /// with the MD5 ETag of a part S3 already holds, its MD5, from one read pass over the file
    /// range; the body then streams from the file again.
    private func hashPart(number: Int, file: FileDescriptor, range: Range<UInt64>,
                          withMD5: Bool) throws -> (sha256: [UInt8], md5: [UInt8]?) {
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
            sha.update(UnsafeRawBufferPointer(slice))
            if withMD5 { md5.update(UnsafeRawBufferPointer(slice)) }
            offset += UInt64(n)
        }
        return (sha.finalize(), withMD5 ? md5.finalize() : nil)
    }

    private func uploadPart(_ url: String, uploadID: String, number: Int, file: FileDescriptor,
                            range: Range<UInt64>, sha256: [UInt8], signsPayload: Bool) throws -> String {
        var headers = HTTPHeaders()
        // As the AWS SDKs send a flexible checksum: the algorithm, then the value.
        headers.add("x-amz-sdk-checksum-algorithm", Self.checksumAlgorithm)
        headers.add("x-amz-checksum-sha256", Base64.encode(sha256))
        let query = "?partNumber=\(number)&uploadId=\(PercentEncoding.encode(uploadID))"
        let request = session.request("s3", method: "PUT", url: url + query, headers: headers,
                                      body: FileRangeBody(file: file, range: range),
                                      payloadSHA256: signsPayload ? hexString(sha256) : nil)
        let response = try session.send("S3 UploadPart \(number)", request)
        guard let etag = response.headers["ETag"], !etag.isEmpty else {
            throw CVMError.io("S3 UploadPart \(number): the answer has no ETag header")
        }
        return etag
    }

    /// Every part with its ETag and checksum (S3 requires the checksums of an upload created
    /// with a checksum algorithm).
    private func complete(_ url: String, uploadID: String, parts: [(etag: String, sha256: String)]) throws -> String {
        var xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        for (i, part) in parts.enumerated() {
            xml += "<Part><PartNumber>\(i + 1)</PartNumber><ETag>\(xmlEscaped(part.etag))</ETag>"
                + "<ChecksumSHA256>\(xmlEscaped(part.sha256))</ChecksumSHA256></Part>"
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
    /// The part checksum the upload was created with (nil in states saved before checksums:
    /// such an upload is not continued).
    var checksumAlgorithm: String?
}

/// A part S3 already holds (ListParts).
struct StoredPart {
    let etag: String
    let size: UInt64
    /// Base64 SHA-256, when the endpoint lists part checksums.
    let checksumSHA256: String?

    /// Same bytes as ours: by the listed checksum, else by the MD5 ETag.
    func matches(sha256: String, md5: [UInt8]?) -> Bool {
        if let checksumSHA256 { return checksumSHA256 == sha256 }
        guard let md5 else { return false }
        return etag.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) == hexString(md5)
    }
}

/// The SHA-256 of an all-zero part, per length, computed once for all workers.
final class ZeroPartDigests: @unchecked Sendable {
    private let lock = NSLock()
    private var digests: [Int: [UInt8]] = [:]

    func sha256(count: Int) -> [UInt8] {
        lock.withLock {
            if let known = digests[count] { return known }
            var sha = SHA256Hasher()
            let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: min(count, 1 << 20), alignment: 16)
            defer { zeros.deallocate() }
            zeros.initializeMemory(as: UInt8.self, repeating: 0)
            var left = count
            while left > 0 {
                let n = min(left, zeros.count)
                sha.update(UnsafeRawBufferPointer(rebasing: zeros[0..<n]))
                left -= n
            }
            let digest = sha.finalize()
            digests[count] = digest
            return digest
        }
    }
}

/// Part ETags and checksums filled in by parallel workers.
final class ETagList: @unchecked Sendable {
    private let lock = NSLock()
    private var parts: [(etag: String, sha256: String)]
    init(count: Int) { parts = Array(repeating: ("", ""), count: count) }
    func set(_ i: Int, _ part: (etag: String, sha256: String)) { lock.withLock { parts[i] = part } }
    func all() -> [(etag: String, sha256: String)] { lock.withLock { parts } }
}

/// A thread-safe running total of bytes done.
final class ProgressTotal: @unchecked Sendable {
    private let lock = NSLock()
    private var total: UInt64 = 0
    func add(_ n: UInt64) -> UInt64 { lock.withLock { total += n; return total } }
}
