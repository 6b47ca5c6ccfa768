import COpenSSL
import CVMSupport

/// An RSA private key loaded from PEM (PKCS#8 `BEGIN PRIVATE KEY` or PKCS#1
/// `BEGIN RSA PRIVATE KEY`), used for RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signatures such as
/// Google service-account JWT assertions. Its description never shows key material.
public final class RSAPrivateKey: @unchecked Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    // EVP_PKEY is immutable after loading and OpenSSL allows concurrent signing with it.
    private let key: OpaquePointer

    /// Parses a PEM private key. `source` names where it came from (a file path or
    /// "GOOGLE_APPLICATION_CREDENTIALS private_key") for error messages; the PEM text itself
    /// never appears in an error.
    public init(pem: String, source: String) throws {
        ERR_clear_error()
        defer { ERR_clear_error() }
        let bytes = Array(pem.utf8)
        guard !bytes.isEmpty, bytes.count < Int(Int32.max) else {
            throw CVMError.invalid("\(source): empty or oversized private key; expected a PEM RSA private key")
        }
        let loaded: OpaquePointer? = bytes.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
            defer { BIO_free(bio) }
            // A callback that supplies no passphrase: an encrypted key fails instead of prompting.
            let noPassphrase: @convention(c) (UnsafeMutablePointer<CChar>?, Int32, Int32, UnsafeMutableRawPointer?) -> Int32 = { _, _, _, _ in 0 }
            return PEM_read_bio_PrivateKey(bio, nil, noPassphrase, nil)
        }
        guard let loaded else {
            throw CVMError.invalid("\(source): cannot parse the private key; expected an unencrypted PEM RSA private key (PKCS#8 or PKCS#1)")
        }
        guard EVP_PKEY_get_base_id(loaded) == EVP_PKEY_RSA else {
            EVP_PKEY_free(loaded)
            throw CVMError.invalid("\(source): the private key is not an RSA key; expected an RSA private key for RS256")
        }
        key = loaded
    }

    deinit { EVP_PKEY_free(key) }

    /// Key size in bits.
    public var bits: Int { Int(EVP_PKEY_get_bits(key)) }

    /// RSASSA-PKCS1-v1_5 signature over SHA-256(message) — JWS "RS256".
    public func signSHA256(_ message: [UInt8]) throws -> [UInt8] {
        ERR_clear_error()
        defer { ERR_clear_error() }
        guard let context = EVP_MD_CTX_new() else { throw CVMError.io("OpenSSL: cannot allocate a digest context") }
        defer { EVP_MD_CTX_free(context) }
        // RSA's default signature padding is PKCS#1 v1.5, which is what RS256 means.
        guard EVP_DigestSignInit(context, nil, EVP_sha256(), nil, key) == 1 else {
            throw CVMError.io("OpenSSL: cannot start an RS256 signature")
        }
        let storage = message.isEmpty ? [0] : message
        var length = 0
        let sized = storage.withUnsafeBufferPointer { m in
            EVP_DigestSign(context, nil, &length, m.baseAddress, message.count)
        }
        guard sized == 1, length > 0 else { throw CVMError.io("OpenSSL: cannot size the RS256 signature") }
        var signature = [UInt8](repeating: 0, count: length)
        let signed = storage.withUnsafeBufferPointer { m in
            signature.withUnsafeMutableBufferPointer { s in
                EVP_DigestSign(context, s.baseAddress, &length, m.baseAddress, message.count)
            }
        }
        guard signed == 1 else { throw CVMError.io("OpenSSL: RS256 signing failed") }
        return Array(signature.prefix(length))
    }

    public var description: String { "RSAPrivateKey(\(bits) bits, <redacted>)" }
    public var debugDescription: String { description }
}
