import CloudAuth
import CVMSupport
import Foundation
import Transport

/// The JSON API's resumable-upload protocol for one object: start a session, send chunks with
/// `Content-Range`, ask where the server is. Every request carries the OAuth bearer token, also
/// against `STORAGE_EMULATOR_HOST` (an auth-checking proxy may sit in front).
/// The session URI is a capability: it is kept out of every log line and error.
struct GCSResumableSession {
    /// What the server said after a chunk or a status query.
    enum Answer {
        /// 308: the server holds bytes `0..<confirmed` (0 when the answer had no `Range`).
        case incomplete(confirmed: UInt64)
        /// 200/201: the object exists; its resource.
        case finished([String: Any])
    }

    let client: HTTPClient
    let tokens: GoogleAccessTokenSource
    let deadline: Double

    /// `POST {endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=…` → session URI.
    func start(endpoint: String, object: GCSObjectName, contentType: String, length: UInt64?) throws -> String {
        let url = "\(endpoint)/upload/storage/v1/b/\(PercentEncoding.encode(object.bucket))/o?uploadType=resumable&name=\(PercentEncoding.encode(object.object))"
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/json; charset=UTF-8")
        headers.add("X-Upload-Content-Type", contentType)
        if let length { headers.add("X-Upload-Content-Length", String(length)) }
        let metadata = try JSONSerialization.data(withJSONObject: ["name": object.object, "contentType": contentType])
        var request = makeRequest("POST", url, headers: headers, body: BytesBody(Array(metadata)), sessionURI: nil)
        request.acceptedStatuses = [200, 201]
        let response = try send("GCS start resumable upload", request)
        guard let location = response.headers["Location"], !location.isEmpty else {
            throw CVMError.io("GCS start resumable upload of \(object): the answer has no Location header (status \(response.status))")
        }
        let scheme = location.prefix { $0 != ":" }.lowercased()
        guard scheme == "https" || (scheme == "http" && endpoint.lowercased().hasPrefix("http://")) else {
            // An https endpoint never hands the data to a plain-http session.
            throw CVMError.io("GCS start resumable upload of \(object): the session URI is not https; refusing to send data over plain HTTP")
        }
        return location
    }

    /// `PUT session` with `Content-Range: bytes START-END/TOTAL|*` and the chunk as body.
    /// `hashes` (the whole object's) go on the final chunk as `X-Goog-Hash`, which GCS checks.
    func put(sessionURI: String, chunk: SlicesBody, at offset: UInt64, total: UInt64?,
             hashes: (md5: String, crc32c: String)?, progress: TransferProgressHandler?) throws -> Answer {
        var headers = HTTPHeaders()
        let totalText = total.map(String.init) ?? "*"
        if chunk.size == 0 {
            headers.add("Content-Range", "bytes */\(totalText)")
        } else {
            headers.add("Content-Range", "bytes \(offset)-\(offset + chunk.size - 1)/\(totalText)")
        }
        if let hashes { headers.add("X-Goog-Hash", "crc32c=\(hashes.crc32c),md5=\(hashes.md5)") }
        let request = makeRequest("PUT", sessionURI, headers: headers, body: chunk.size == 0 ? nil : chunk,
                                  sessionURI: sessionURI)
        return try answer(try send("GCS upload chunk at \(offset)", request, progress: progress))
    }

    /// `PUT session` with an empty body and `Content-Range: bytes */TOTAL|*`: where is the
    /// server? Nil when the session is gone (404/410: expired or cancelled).
    func status(sessionURI: String, total: UInt64?) throws -> Answer? {
        var headers = HTTPHeaders()
        headers.add("Content-Range", "bytes */\(total.map(String.init) ?? "*")")
        var request = makeRequest("PUT", sessionURI, headers: headers, body: nil, sessionURI: sessionURI)
        request.acceptedStatuses = [200, 201, 308, 404, 410]
        let response = try send("GCS upload status", request)
        if response.status == 404 || response.status == 410 { return nil }
        return try answer(response)
    }

    /// `DELETE session`: cancels an unfinished upload (GCS answers 499). Best effort.
    func cancel(sessionURI: String) {
        var request = makeRequest("DELETE", sessionURI, headers: HTTPHeaders(), body: nil, sessionURI: sessionURI)
        request.acceptedStatuses = Set(200..<600)
        request.deadline = 30
        // Also after an interrupt: a client that ignores cancellation.
        var configuration = client.configuration
        configuration.isCancelled = nil
        _ = try? HTTPClient(configuration: configuration, logger: client.logger).send(request)
    }

    private func answer(_ response: HTTPResponse) throws -> Answer {
        if response.status == 308 {
            // "Range: bytes=0-N" means 0…N are stored; no Range means nothing is.
            guard let range = response.headers["Range"] else { return .incomplete(confirmed: 0) }
            let text = range.trimmingCharacters(in: .whitespaces)
            guard text.hasPrefix("bytes=0-"), let last = UInt64(text.dropFirst(8)) else {
                throw CVMError.io("GCS upload: the server answered 308 with an unexpected Range '\(text.prefix(60))'; expected bytes=0-N")
            }
            return .incomplete(confirmed: last + 1)
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] else {
            throw CVMError.io("GCS upload: the final answer (HTTP \(response.status)) is not an object resource")
        }
        return .finished(object)
    }

    private func makeRequest(_ method: String, _ url: String, headers: HTTPHeaders, body: (any RequestBody)?,
                             sessionURI: String?) -> HTTPRequest {
        var request = HTTPRequest(method: method, url: url, headers: headers, body: body, sign: tokens.requestSigner)
        request.acceptedStatuses = [200, 201, 308]
        request.deadline = deadline
        request.secretQueryParameters = ["upload_id"]
        if let sessionURI {
            request.secretValues = [sessionURI]
            if let id = Redactor.queryValue("upload_id", in: sessionURI) { request.secretValues.append(id) }
        }
        if let token = tokens.currentToken { request.secretValues.append(token) }
        return request
    }

    private func send(_ operation: String, _ request: HTTPRequest, progress: TransferProgressHandler? = nil) throws -> HTTPResponse {
        do {
            return try client.send(request, progress: progress)
        } catch let error as CVMError {
            throw CVMError(error.kind, "\(operation): \(error.message)")
        }
    }
}

extension Redactor {
    /// The raw value of query parameter `name` in `url`, if present.
    static func queryValue(_ name: String, in url: String) -> String? {
        guard let q = url.firstIndex(of: "?") else { return nil }
        for item in url[url.index(after: q)...].split(separator: "&") {
            let parts = item.split(separator: "=", maxSplits: 1)
            if parts.count == 2, parts[0] == name { return String(parts[1]) }
        }
        return nil
    }
}
