#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import CVMCrypto
import CVMSupport

/// The agent's TLS identity: an EC P-256 key made at start, kept only in memory, and a
/// self-signed certificate for it. Clients pin its SHA-256 fingerprint (printed on the serial
/// console and reported by /golden-measurement), not a CA chain.
final class TLSIdentity: @unchecked Sendable {
    let context: OpaquePointer
    /// `sha256:<hex of the certificate's DER>`.
    let fingerprint: String

    init() throws {
        guard let keyContext = EVP_PKEY_CTX_new_id(NID_X9_62_id_ecPublicKey, nil) else { throw Self.error("EVP_PKEY_CTX_new_id") }
        defer { EVP_PKEY_CTX_free(keyContext) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(keyContext) == 1,
              EVP_PKEY_CTX_set_ec_paramgen_curve_nid(keyContext, NID_X9_62_prime256v1) == 1,
              EVP_PKEY_keygen(keyContext, &key) == 1, let key else { throw Self.error("EC key generation") }
        defer { EVP_PKEY_free(key) }

        guard let cert = X509_new() else { throw Self.error("X509_new") }
        defer { X509_free(cert) }
        let serialNumber = UInt64.random(in: 1...0x7FFF_FFFF_FFFF_FFFF)   // the system's CSPRNG
        guard X509_set_version(cert, 2) == 1,
              ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert), serialNumber) == 1,
              X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != nil,
              X509_gmtime_adj(X509_getm_notAfter(cert), 10 * 365 * 86400) != nil,
              X509_set_pubkey(cert, key) == 1 else { throw Self.error("certificate fields") }
        let name = X509_get_subject_name(cert)
        let cn = Array("cvm-agent".utf8)
        guard X509_NAME_add_entry_by_txt(name, "CN", 0x1001 /* MBSTRING_ASC */, cn, Int32(cn.count), -1, 0) == 1,
              X509_set_issuer_name(cert, name) == 1,
              X509_sign(cert, key, EVP_sha256()) > 0 else { throw Self.error("certificate signing") }

        var derPointer: UnsafeMutablePointer<UInt8>?
        let length = i2d_X509(cert, &derPointer)
        guard length > 0, let derPointer else { throw Self.error("i2d_X509") }
        let der = Array(UnsafeBufferPointer(start: derPointer, count: Int(length)))
        CRYPTO_free(derPointer, #file, #line)
        fingerprint = "sha256:" + hexString(SHA256.hash(der))

        guard let context = SSL_CTX_new(TLS_server_method()) else { throw Self.error("SSL_CTX_new") }
        guard SSL_CTX_use_certificate(context, cert) == 1, SSL_CTX_use_PrivateKey(context, key) == 1,
              SSL_CTX_check_private_key(context) == 1 else {
            SSL_CTX_free(context)
            throw Self.error("SSL_CTX certificate")
        }
        _ = SSL_CTX_ctrl(context, 123 /* SSL_CTRL_SET_MIN_PROTO_VERSION */, Int(TLS1_2_VERSION), nil)
        self.context = context
    }

    /// Wraps an accepted socket; nil when the handshake fails (the client is dropped).
    func accept(_ fd: Int32) -> Connection? {
        guard let ssl = SSL_new(context) else { return nil }
        SSL_set_fd(ssl, fd)
        guard SSL_accept(ssl) == 1 else {
            SSL_free(ssl)
            return nil
        }
        return TLSConnection(ssl: ssl, fd: fd)
    }

    static func error(_ what: String) -> CVMError {
        let code = ERR_get_error()
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return CVMError.io("TLS: \(what) failed: \(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
    }
}

final class TLSConnection: Connection {
    let ssl: OpaquePointer
    let fd: Int32
    init(ssl: OpaquePointer, fd: Int32) { self.ssl = ssl; self.fd = fd }

    func read(into buffer: inout [UInt8]) -> Int {
        let n = buffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
        return Int(n)
    }

    func write(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { SSL_write(ssl, $0.baseAddress! + sent, Int32($0.count - sent)) }
            if n <= 0 { return false }
            sent += Int(n)
        }
        return true
    }

    func close() {
        SSL_shutdown(ssl)
        SSL_free(ssl)
        Glibc.close(fd)
    }
}
