import CCurl
import COpenSSL
import CVMSupport

/// How the server's TLS certificate is judged. The default trusts the system store (or the
/// configured CA bundle) and checks the host name; the other modes are for servers that
/// present a self-signed certificate whose identity is its fingerprint (the in-guest agent).
///
/// Pinning happens inside the TLS handshake (OpenSSL's certificate-verify callback, reached
/// through libcurl's SSL_CTX hook), so an impostor fails the handshake before a single request
/// byte is sent — what matters for answers that exist once, like the agent's API token.
public enum ServerCertificateCheck: Sendable, Equatable {
    /// CA-verified chain and host name (the default).
    case systemTrust
    /// Only a leaf certificate whose DER has this SHA-256 (64 lowercase hex digits); no CA or
    /// host-name check (the pin is the identity).
    case pinnedLeafSHA256(String)
    /// Trust on first use: any leaf is accepted and its fingerprint reported
    /// (`HTTPResponse.serverCertificateSHA256`) so the caller can record it as the pin.
    case trustOnFirstUse
    /// Anything is accepted; the fingerprint is still reported. Only for an explicit user
    /// choice (`--insecure`), never a fallback.
    case insecure
}

/// The server presented a leaf certificate other than the pinned one; the handshake was
/// aborted, nothing was sent. Thrown as is by `HTTPClient.send` so callers can say which
/// record to change.
public struct TLSPinMismatch: Error, Sendable, CustomStringConvertible {
    public let url: String
    /// Lowercase hex SHA-256 of the pinned and of the presented leaf DER.
    public let pinnedSHA256: String
    public let presentedSHA256: String
    public var description: String {
        "\(url): the server's TLS certificate sha256:\(presentedSHA256) is not the pinned sha256:\(pinnedSHA256); the connection was refused before sending the request"
    }
}

/// What the verify callback saw, for one attempt.
final class CertificateCheckState {
    let check: ServerCertificateCheck
    var presentedSHA256: String?
    var mismatch = false
    init(_ check: ServerCertificateCheck) { self.check = check }
}

/// Hex SHA-256 of a certificate's DER encoding.
func leafSHA256(_ cert: OpaquePointer) -> String? {
    var md = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var length: UInt32 = 0
    guard X509_digest(cert, EVP_sha256(), &md, &length) == 1, length == 32 else { return nil }
    return md.prefix(32).map { String(format: "%02x", $0) }.joined()
}

/// Sets up `h` to judge the server's certificate per `state.check` (not for `.systemTrust`).
/// The state must outlive the transfer.
func installCertificateCheck(_ h: UnsafeMutableRawPointer, _ state: CertificateCheckState) {
    // Peer verification stays on: OpenSSL then aborts the handshake when our callback says no.
    _ = cvm_curl_setopt_long(h, CURLOPT_SSL_VERIFYPEER, 1)
    // The pin (or the user's explicit choice) is the identity; the agent's self-signed
    // certificate names no IP address.
    _ = cvm_curl_setopt_long(h, CURLOPT_SSL_VERIFYHOST, 0)
    // A resumed TLS session or a reused connection would skip the certificate callback.
    _ = cvm_curl_setopt_long(h, CURLOPT_SSL_SESSIONID_CACHE, 0)
    _ = cvm_curl_setopt_long(h, CURLOPT_FRESH_CONNECT, 1)
    _ = cvm_curl_setopt_long(h, CURLOPT_FORBID_REUSE, 1)
    _ = cvm_curl_setopt_pointer(h, CURLOPT_SSL_CTX_DATA, Unmanaged.passUnretained(state).toOpaque())
    _ = cvm_curl_setopt_ssl_ctx_function(h) { _, sslContext, user in
        guard let sslContext, let user else { return CURLE_SSL_CERTPROBLEM }
        SSL_CTX_set_cert_verify_callback(OpaquePointer(sslContext), { storeContext, arg in
            guard let storeContext, let arg else { return 0 }
            let state = Unmanaged<CertificateCheckState>.fromOpaque(arg).takeUnretainedValue()
            guard let leaf = X509_STORE_CTX_get0_cert(storeContext), let seen = leafSHA256(leaf) else {
                X509_STORE_CTX_set_error(storeContext, X509_V_ERR_UNSPECIFIED)
                return 0
            }
            state.presentedSHA256 = seen
            if case .pinnedLeafSHA256(let pin) = state.check, pin.lowercased() != seen {
                state.mismatch = true
                X509_STORE_CTX_set_error(storeContext, X509_V_ERR_CERT_REJECTED)
                return 0
            }
            X509_STORE_CTX_set_error(storeContext, X509_V_OK)
            return 1
        }, user)
        return CURLE_OK
    }
}
