import COpenSSL
import CVMSupport

/// SHA-256 through OpenSSL's EVP interface (hardware-accelerated where the CPU has SHA
/// extensions). Streaming: feed any number of chunks, then `finalize()`.
public struct SHA256Hasher: ~Copyable {
    private var digester = EVPDigester(EVP_sha256(), length: 32)

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) { digester.update(bytes) }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { digester.update($0) }
    }

    public consuming func finalize() -> [UInt8] { digester.finalize() }
}

public enum SHA256 {
    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        var h = SHA256Hasher()
        h.update(bytes)
        return h.finalize()
    }

    public static func hash(_ string: String) -> [UInt8] { hash(Array(string.utf8)) }

    /// Hashes a file in 1 MiB chunks (never the whole file in memory).
    public static func hash(fileAt path: String) throws -> [UInt8] {
        let file = try FileDescriptor.openForReading(path)
        let size = try file.size()
        var h = SHA256Hasher()
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while offset < size {
            let n = try file.readUpTo(into: buffer, at: offset)
            if n == 0 { break }
            h.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += UInt64(n)
        }
        return h.finalize()
    }
}

/// Lower-case hex of bytes.
public func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
    return String(decoding: out, as: UTF8.self)
}

/// Bytes of an even-length hex string (either case); nil for anything else.
public func decodeHex(_ text: String) -> [UInt8]? {
    let utf8 = Array(text.utf8)
    guard utf8.count % 2 == 0 else { return nil }
    func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }
    var out: [UInt8] = []
    out.reserveCapacity(utf8.count / 2)
    var i = 0
    while i < utf8.count {
        guard let high = nibble(utf8[i]), let low = nibble(utf8[i + 1]) else { return nil }
        out.append(high << 4 | low)
        i += 2
    }
    return out
}
