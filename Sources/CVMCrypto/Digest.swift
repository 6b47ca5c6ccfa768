import COpenSSL

/// A streaming message digest over OpenSSL's EVP interface; `SHA256Hasher` and `MD5Hasher`
/// are this with a fixed algorithm.
struct EVPDigester: ~Copyable {
    private let context: OpaquePointer
    private let length: Int

    /// - Parameters: `algorithm` is an OpenSSL `EVP_MD` (e.g. `EVP_sha256()`), `length` its size.
    init(_ algorithm: OpaquePointer?, length: Int) {
        context = EVP_MD_CTX_new()
        self.length = length
        EVP_DigestInit_ex(context, algorithm, nil)
    }

    deinit { EVP_MD_CTX_free(context) }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        EVP_DigestUpdate(context, base, bytes.count)
    }

    consuming func finalize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        var written: UInt32 = 0
        out.withUnsafeMutableBufferPointer { _ = EVP_DigestFinal_ex(context, $0.baseAddress, &written) }
        return out
    }
}
