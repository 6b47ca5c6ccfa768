import CVMSupport

/// True when every byte is zero.
public func isAllZero(_ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { isAllZero($0) }
}

/// True when every byte of `buffer` is zero. Word-at-a-time; the hot loop of zero skipping.
@inline(__always)
public func isAllZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
    guard let base = buffer.baseAddress else { return true }
    let count = buffer.count
    var i = 0
    // Unaligned head.
    while i < count, (Int(bitPattern: base) + i) & 7 != 0 {
        if base.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }
        i += 1
    }
    let words = (count - i) / 32
    var p = (base + i).assumingMemoryBound(to: UInt64.self)
    for _ in 0..<words {
        if (p[0] | p[1] | p[2] | p[3]) != 0 { return false }
        p += 4
    }
    i += words * 32
    while i < count {
        if base.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }
        i += 1
    }
    return true
}

/// CRC-32 (IEEE, as used by GPT, gzip and zlib's crc32()).
import CZlib
public func crc32(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
    guard let base = bytes.baseAddress, bytes.count > 0 else { return seed }
    var crc = UInt(seed)
    var offset = 0
    while offset < bytes.count {
        let n = min(bytes.count - offset, Int(UInt32.max))
        crc = CZlib.crc32(crc, base.assumingMemoryBound(to: UInt8.self) + offset, UInt32(n))
        offset += n
    }
    return UInt32(truncatingIfNeeded: crc)
}

public func crc32(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { crc32($0, seed: seed) }
}
