import COpenSSL
import CVMSupport

/// HMAC-SHA256 through OpenSSL's EVP MAC interface (SigV4's key chain, Azure SharedKey).
public enum HMACSHA256 {
    /// The 32-byte MAC of `message` under `key`.
    public static func mac(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var length = 0
        // OpenSSL wants non-NULL pointers even for empty input: give empty arrays one spare byte.
        let keyStorage = key.isEmpty ? [0] : key
        let messageStorage = message.isEmpty ? [0] : message
        let ok = keyStorage.withUnsafeBufferPointer { k in
            messageStorage.withUnsafeBufferPointer { m in
                out.withUnsafeMutableBufferPointer { o in
                    EVP_Q_mac(nil, "HMAC", nil, "SHA256", nil, k.baseAddress, key.count,
                              m.baseAddress, message.count, o.baseAddress, 32, &length) != nil
                }
            }
        }
        // Only fails if OpenSSL cannot provide HMAC/SHA-256 at all, which no supported build does.
        precondition(ok && length == 32, "OpenSSL HMAC-SHA256 unavailable")
        return out
    }

    public static func mac(key: [UInt8], message: String) -> [UInt8] {
        mac(key: key, message: Array(message.utf8))
    }
}
