import CloudAuth
import CVMSupport
import Foundation
import Transport

extension AzureSharedKeySigner {
    /// Transport's per-attempt hook: each attempt gets a fresh `x-ms-date` and signature. The
    /// `Content-Length` the transport will send is signed too (an empty line when 0, as the
    /// service expects), and the query goes out exactly as it was signed.
    public var requestSigner: RequestSigner {
        let signer = self
        return { r in
            guard let request = SignableRequest(method: r.method, url: r.url,
                                                headers: r.headers.map { HTTPHeader($0.name, $0.value) }) else {
                throw CVMError.invalid("\(r.url): not an absolute http(s) URL")
            }
            var signable = request
            if let length = r.contentLength { signable.headers.append(HTTPHeader("Content-Length", String(length))) }
            for header in signer.sign(signable, at: Date()).headers {
                r.headers.set(header.name, header.value)
            }
            r.url = request.url(scheme: r.url.lowercased().hasPrefix("https") ? "https" : "http")
        }
    }
}
