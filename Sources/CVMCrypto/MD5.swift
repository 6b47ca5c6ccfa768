import COpenSSL

/// MD5 through OpenSSL's EVP interface. Only for protocol checksums (`Content-MD5`, GCS
/// `md5Hash`), never for security.
public struct MD5Hasher: ~Copyable {
    private var digester = EVPDigester(EVP_md5(), length: 16)

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) { digester.update(bytes) }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { digester.update($0) }
    }

    public consuming func finalize() -> [UInt8] { digester.finalize() }
}

public enum MD5 {
    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        var h = MD5Hasher()
        h.update(bytes)
        return h.finalize()
    }

    public static func hash(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var h = MD5Hasher()
        h.update(bytes)
        return h.finalize()
    }
}
