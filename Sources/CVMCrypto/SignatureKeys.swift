import COpenSSL
import CVMSupport

/// The signature schemes of signed documents (golden measurements), named as in JWS.
public enum SignatureAlgorithm: String, Sendable, CaseIterable {
    /// ECDSA over P-256 with SHA-256; the signature is DER (what `openssl dgst -sign` writes).
    case es256 = "ES256"
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    case rs256 = "RS256"
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.
    case ps256 = "PS256"
}

/// Which keys are accepted: ECDSA on P-256 and RSA of at least 2048 bits, nothing weaker.
enum KeyKind {
    case ecP256, rsa(bits: Int)

    static func of(_ key: OpaquePointer, source: String, what: String) throws -> KeyKind {
        switch EVP_PKEY_get_base_id(key) {
        case EVP_PKEY_EC:
            var name = [CChar](repeating: 0, count: 64)
            var length = 0
            guard EVP_PKEY_get_group_name(key, &name, name.count, &length) == 1 else {
                throw CVMError.invalid("\(source): the EC \(what) has no named curve; expected P-256")
            }
            let curve = String(decoding: name.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard curve == "prime256v1" || curve == "P-256" else {
                throw CVMError.invalid("\(source): the EC \(what) is on curve \(curve); expected P-256 (prime256v1)")
            }
            return .ecP256
        case EVP_PKEY_RSA, EVP_PKEY_RSA_PSS:
            let bits = Int(EVP_PKEY_get_bits(key))
            guard bits >= 2048 else {
                throw CVMError.invalid("\(source): the RSA \(what) has \(bits) bits; expected at least 2048")
            }
            return .rsa(bits: bits)
        default:
            throw CVMError.invalid("\(source): unsupported \(what) type; expected an ECDSA P-256 or RSA (≥ 2048 bits) key")
        }
    }

    func allows(_ algorithm: SignatureAlgorithm) -> Bool {
        switch (self, algorithm) {
        case (.ecP256, .es256), (.rsa, .rs256), (.rsa, .ps256): return true
        default: return false
        }
    }

    var defaultAlgorithm: SignatureAlgorithm {
        if case .ecP256 = self { return .es256 }
        return .rs256
    }
}

/// Reads a PEM object from memory with OpenSSL; never prompts for a passphrase (an encrypted
/// key fails instead). The PEM text never appears in an error.
func readPEM(_ pem: [UInt8], _ read: (OpaquePointer) -> OpaquePointer?) -> OpaquePointer? {
    guard !pem.isEmpty, pem.count < Int(Int32.max) else { return nil }
    return pem.withUnsafeBytes { raw in
        guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
        defer { BIO_free(bio) }
        return read(bio)
    }
}

private let noPassphrase: @convention(c) (UnsafeMutablePointer<CChar>?, Int32, Int32, UnsafeMutableRawPointer?) -> Int32 = { _, _, _, _ in 0 }

/// A private key that signs documents: ECDSA P-256 (SEC1 or PKCS#8 PEM) or RSA ≥ 2048 bits
/// (PKCS#1 or PKCS#8 PEM). Its description never shows key material.
public final class DocumentSigningKey: @unchecked Sendable, CustomStringConvertible {
    private let key: OpaquePointer
    private let kind: KeyKind

    public init(pem: [UInt8], source: String) throws {
        ERR_clear_error()
        defer { ERR_clear_error() }
        guard let loaded = readPEM(pem, { PEM_read_bio_PrivateKey($0, nil, noPassphrase, nil) }) else {
            throw CVMError.invalid("\(source): cannot read a private key; expected an unencrypted PEM private key (SEC1 'EC PRIVATE KEY', PKCS#8 'PRIVATE KEY' or PKCS#1 'RSA PRIVATE KEY')")
        }
        do {
            kind = try KeyKind.of(loaded, source: source, what: "private key")
        } catch {
            EVP_PKEY_free(loaded)
            throw error
        }
        key = loaded
    }

    deinit { EVP_PKEY_free(key) }

    /// ES256 for an EC key, RS256 for RSA.
    public var defaultAlgorithm: SignatureAlgorithm { kind.defaultAlgorithm }

    /// The public half, to compute the key id and to check a signature right after making it.
    public func publicKey() throws -> DocumentVerifyingKey {
        try DocumentVerifyingKey(spkiDER: try subjectPublicKeyInfoDER(key), source: "the private key")
    }

    public func sign(_ message: [UInt8], algorithm: SignatureAlgorithm) throws -> [UInt8] {
        guard kind.allows(algorithm) else {
            throw CVMError.usage("\(algorithm.rawValue) needs \(algorithm == .es256 ? "an EC P-256" : "an RSA") key; this key signs \(kind.defaultAlgorithm.rawValue)\(kind.defaultAlgorithm == .rs256 ? " or PS256" : "")")
        }
        ERR_clear_error()
        defer { ERR_clear_error() }
        guard let context = EVP_MD_CTX_new() else { throw CVMError.io("OpenSSL: cannot allocate a digest context") }
        defer { EVP_MD_CTX_free(context) }
        var pctx: OpaquePointer?
        guard EVP_DigestSignInit(context, &pctx, EVP_sha256(), nil, key) == 1 else {
            throw CVMError.io("OpenSSL: cannot start a \(algorithm.rawValue) signature")
        }
        if algorithm == .ps256 { try configurePSS(pctx) }
        let storage = message.isEmpty ? [0] : message
        var length = 0
        guard storage.withUnsafeBufferPointer({ EVP_DigestSign(context, nil, &length, $0.baseAddress, message.count) }) == 1,
              length > 0 else {
            throw CVMError.io("OpenSSL: cannot size the \(algorithm.rawValue) signature")
        }
        var signature = [UInt8](repeating: 0, count: length)
        let signed = storage.withUnsafeBufferPointer { m in
            signature.withUnsafeMutableBufferPointer { EVP_DigestSign(context, $0.baseAddress, &length, m.baseAddress, message.count) }
        }
        guard signed == 1 else { throw CVMError.io("OpenSSL: \(algorithm.rawValue) signing failed") }
        return Array(signature.prefix(length))
    }

    public var description: String { "DocumentSigningKey(<redacted>)" }
}

/// A public key that verifies document signatures, from PEM SubjectPublicKeyInfo
/// ('PUBLIC KEY'), PKCS#1 'RSA PUBLIC KEY', or DER SubjectPublicKeyInfo.
public final class DocumentVerifyingKey: @unchecked Sendable {
    private let key: OpaquePointer
    private let kind: KeyKind
    /// DER SubjectPublicKeyInfo: what the key id is the SHA-256 of.
    public let spkiDER: [UInt8]

    public init(pem: [UInt8], source: String) throws {
        ERR_clear_error()
        defer { ERR_clear_error() }
        var loaded = readPEM(pem, { PEM_read_bio_PUBKEY($0, nil, nil, nil) })
        if loaded == nil {
            loaded = readPEM(pem) { bio in
                guard let rsa = PEM_read_bio_RSAPublicKey(bio, nil, nil, nil) else { return nil }
                defer { RSA_free(rsa) }
                guard let pkey = EVP_PKEY_new() else { return nil }
                guard EVP_PKEY_set1_RSA(pkey, rsa) == 1 else { EVP_PKEY_free(pkey); return nil }
                return pkey
            }
        }
        guard let loaded else {
            throw CVMError.invalid("\(source): cannot read a public key; expected a PEM 'PUBLIC KEY' (SubjectPublicKeyInfo) or 'RSA PUBLIC KEY'")
        }
        do {
            kind = try KeyKind.of(loaded, source: source, what: "public key")
            spkiDER = try subjectPublicKeyInfoDER(loaded)
        } catch {
            EVP_PKEY_free(loaded)
            throw error
        }
        key = loaded
    }

    public init(spkiDER der: [UInt8], source: String) throws {
        ERR_clear_error()
        defer { ERR_clear_error() }
        let parsed: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_PUBKEY(nil, &cursor, buffer.count)
        }
        guard let parsed else { throw CVMError.invalid("\(source): not a DER SubjectPublicKeyInfo") }
        do {
            kind = try KeyKind.of(parsed, source: source, what: "public key")
        } catch {
            EVP_PKEY_free(parsed)
            throw error
        }
        key = parsed
        spkiDER = der
    }

    deinit { EVP_PKEY_free(key) }

    /// Hex SHA-256 of the SubjectPublicKeyInfo DER.
    public var keyID: String { hexString(SHA256.hash(spkiDER)) }

    public func allows(_ algorithm: SignatureAlgorithm) -> Bool { kind.allows(algorithm) }

    /// True only for a valid signature of `message` under `algorithm` with this key.
    public func verify(_ signature: [UInt8], of message: [UInt8], algorithm: SignatureAlgorithm) throws -> Bool {
        guard kind.allows(algorithm), !signature.isEmpty else { return false }
        ERR_clear_error()
        defer { ERR_clear_error() }
        guard let context = EVP_MD_CTX_new() else { throw CVMError.io("OpenSSL: cannot allocate a digest context") }
        defer { EVP_MD_CTX_free(context) }
        var pctx: OpaquePointer?
        guard EVP_DigestVerifyInit(context, &pctx, EVP_sha256(), nil, key) == 1 else {
            throw CVMError.io("OpenSSL: cannot start a \(algorithm.rawValue) verification")
        }
        if algorithm == .ps256 { try configurePSS(pctx) }
        let storage = message.isEmpty ? [0] : message
        let result = signature.withUnsafeBufferPointer { s in
            storage.withUnsafeBufferPointer { m in
                EVP_DigestVerify(context, s.baseAddress, s.count, m.baseAddress, message.count)
            }
        }
        return result == 1
    }
}

/// PSS as fixed for signed documents: MGF1 with SHA-256 and a 32-byte salt.
private func configurePSS(_ pctx: OpaquePointer?) throws {
    guard let pctx,
          EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1,
          EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1,
          EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) == 1 else {
        throw CVMError.io("OpenSSL: cannot configure RSA-PSS (MGF1-SHA256, 32-byte salt)")
    }
}

private func subjectPublicKeyInfoDER(_ key: OpaquePointer) throws -> [UInt8] {
    let length = i2d_PUBKEY(key, nil)
    guard length > 0 else { throw CVMError.io("OpenSSL: cannot encode the public key") }
    var der = [UInt8](repeating: 0, count: Int(length))
    let written = der.withUnsafeMutableBufferPointer { buffer -> Int32 in
        var cursor: UnsafeMutablePointer<UInt8>? = buffer.baseAddress
        return i2d_PUBKEY(key, &cursor)
    }
    guard written == length else { throw CVMError.io("OpenSSL: cannot encode the public key") }
    return der
}
