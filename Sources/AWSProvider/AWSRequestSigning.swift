import CloudAuth
import CVMSupport
import Foundation
import Transport

extension AWSSigV4Signer {
    /// Transport's per-attempt hook for this signer: each attempt gets a fresh date and
    /// signature over the minimal header set (host, content-type, content-md5, x-amz-*).
    ///
    /// `x-amz-content-sha256` is always sent: the caller's hex SHA-256 when it gave one, the
    /// hash of the empty string for a bodiless request, the hash of a small in-memory body, and
    /// `UNSIGNED-PAYLOAD` for a streamed body the caller did not hash.
    public var requestSigner: RequestSigner {
        let signer = self
        return { r in
            guard let request = SignableRequest(method: r.method, url: r.url,
                                                headers: r.headers.map { HTTPHeader($0.name, $0.value) }) else {
                throw CVMError.invalid("\(r.url): not an absolute http(s) URL")
            }
            let payload: AWSPayload
            if let hex = r.payloadSHA256 {
                payload = .sha256Hex(hex)
            } else if (r.contentLength ?? 0) == 0 {
                payload = .empty
            } else if let small = r.body as? BytesBody {
                payload = .bytes(small.bytes)
            } else {
                payload = .unsigned
            }
            for header in signer.signHeaders(request, payload: payload, at: Date()).headers {
                r.headers.set(header.name, header.value)
            }
            // Send the query exactly as it was signed (strictly encoded).
            r.url = request.url(scheme: r.url.lowercased().hasPrefix("https") ? "https" : "http")
        }
    }
}
