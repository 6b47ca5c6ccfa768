/// Tar header blocks (512 bytes): building the GNU header GCP images use and parsing the
/// headers other tools write (GNU/oldgnu, ustar, PAX preambles, old GNU sparse maps).
///
/// Every parsed field is untrusted: parsers return nil or a description of what is wrong
/// and never trap.
enum TarBlock {
    static let size = 512
    /// GNU tar's default record: 20 blocks; archives are padded to a whole record.
    static let recordSize: UInt64 = 10240

    // Field offsets and widths shared by all formats.
    static let nameRange = 0..<100
    static let modeRange = 100..<108
    static let uidRange = 108..<116
    static let gidRange = 116..<124
    static let sizeRange = 124..<136
    static let mtimeRange = 136..<148
    static let checksumRange = 148..<156
    static let typeflagOffset = 156
    static let magicRange = 257..<265
    static let unameRange = 265..<297
    static let gnameRange = 297..<329
    /// POSIX ustar only: prepended to the name with a slash.
    static let prefixRange = 345..<500
    // Old GNU sparse header: 4 map entries, the "more entries follow" flag and the real size.
    static let gnuSparseMapStart = 386
    static let gnuSparseEntriesInHeader = 4
    static let gnuIsExtendedOffset = 482
    static let gnuRealSizeRange = 483..<495
    // Old GNU sparse extension block: 21 map entries, then the flag.
    static let gnuExtensionEntries = 21
    static let gnuExtensionIsExtendedOffset = 504
    static let sparseEntrySize = 24

    /// "ustar  \0": GNU and old GNU tar's magic and version.
    static let gnuMagic: [UInt8] = Array("ustar  ".utf8) + [0]

    /// The header of one regular file in GNU format (what `tar --format=gnu` writes for a
    /// file owned by root): octal fields, or GNU base-256 when a value does not fit.
    static func gnuRegularFileHeader(name: String, size: UInt64, mtime: UInt64, mode: UInt64 = 0o644) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: Self.size)
        put(Array(name.utf8.prefix(nameRange.count)), into: &block, at: nameRange)
        putNumber(mode, into: &block, at: modeRange)
        putNumber(0, into: &block, at: uidRange)
        putNumber(0, into: &block, at: gidRange)
        putNumber(size, into: &block, at: sizeRange)
        putNumber(mtime, into: &block, at: mtimeRange)
        block[typeflagOffset] = UInt8(ascii: "0")
        put(gnuMagic, into: &block, at: magicRange)
        put(Array("root".utf8), into: &block, at: unameRange)
        put(Array("root".utf8), into: &block, at: gnameRange)
        // GNU writes the checksum as six octal digits, NUL, space.
        let sum = checksum(block)
        put(octalDigits(UInt64(sum), count: 6) + [0, UInt8(ascii: " ")], into: &block, at: checksumRange)
        return block
    }

    private static func put(_ bytes: [UInt8], into block: inout [UInt8], at range: Range<Int>) {
        for (i, b) in bytes.prefix(range.count).enumerated() { block[range.lowerBound + i] = b }
    }

    /// Octal with a NUL terminator when it fits in the field, else GNU base-256
    /// (0x80 then the value big-endian), as GNU tar does for sizes of 8 GiB and more.
    static func putNumber(_ value: UInt64, into block: inout [UInt8], at range: Range<Int>) {
        let digits = range.count - 1
        if digits < 21, value >> UInt64(3 * digits) != 0 {
            var field = [UInt8](repeating: 0, count: range.count)
            field[0] = 0x80
            var v = value
            var i = range.count - 1
            while i > 0 { field[i] = UInt8(truncatingIfNeeded: v); v >>= 8; i -= 1 }
            put(field, into: &block, at: range)
        } else {
            put(octalDigits(value, count: digits) + [0], into: &block, at: range)
        }
    }

    static func octalDigits(_ value: UInt64, count: Int) -> [UInt8] {
        var out = [UInt8](repeating: UInt8(ascii: "0"), count: count)
        var v = value
        var i = count - 1
        while i >= 0, v != 0 { out[i] = UInt8(ascii: "0") + UInt8(v & 7); v >>= 3; i -= 1 }
        return out
    }

    /// Unsigned sum of the block with the checksum field counted as spaces.
    static func checksum(_ block: [UInt8]) -> UInt32 {
        var sum: UInt32 = 0
        for (i, b) in block.enumerated() {
            sum &+= checksumRange.contains(i) ? 32 : UInt32(b)
        }
        return sum
    }

    /// Old tars summed signed chars; readers accept either sum.
    static func signedChecksum(_ block: [UInt8]) -> Int32 {
        var sum: Int32 = 0
        for (i, b) in block.enumerated() {
            sum &+= checksumRange.contains(i) ? 32 : Int32(Int8(bitPattern: b))
        }
        return sum
    }

    /// A numeric field: octal digits (leading spaces, ended by NUL or space) or GNU base-256
    /// (first byte has the top bit set). nil when malformed, negative or over 64 bits.
    static func parseNumber(_ block: [UInt8], _ range: Range<Int>) -> UInt64? {
        guard range.lowerBound >= 0, range.upperBound <= block.count, !range.isEmpty else { return nil }
        let first = block[range.lowerBound]
        if first & 0x80 != 0 {
            if first & 0x40 != 0 { return nil }  // negative
            var value = UInt64(first & 0x3F)
            for i in range.dropFirst() {
                guard value >> 56 == 0 else { return nil }
                value = value << 8 | UInt64(block[i])
            }
            return value
        }
        var i = range.lowerBound
        while i < range.upperBound, block[i] == UInt8(ascii: " ") { i += 1 }
        var value: UInt64 = 0
        var digits = 0
        while i < range.upperBound, block[i] >= UInt8(ascii: "0"), block[i] <= UInt8(ascii: "7") {
            guard value >> 61 == 0 else { return nil }
            value = value << 3 | UInt64(block[i] - UInt8(ascii: "0"))
            digits += 1
            i += 1
        }
        guard digits > 0 else { return nil }
        // After the digits only terminators (NUL, space) may follow.
        while i < range.upperBound {
            guard block[i] == 0 || block[i] == UInt8(ascii: " ") else { return nil }
            i += 1
        }
        return value
    }

    /// A NUL-terminated text field.
    static func text(_ block: [UInt8], _ range: Range<Int>) -> String {
        guard range.upperBound <= block.count else { return "" }
        let bytes = block[range].prefix { $0 != 0 }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func isAllZero(_ block: [UInt8]) -> Bool { block.allSatisfy { $0 == 0 } }

    /// Outcome of checking a block's checksum field against its content.
    enum ChecksumCheck: Equatable {
        case valid
        /// The field is not a number at all: not a tar header.
        case unreadable
        case mismatch(stored: UInt64, computed: UInt32)
    }

    static func verifyChecksum(_ block: [UInt8]) -> ChecksumCheck {
        guard block.count == size, let stored = parseNumber(block, checksumRange) else { return .unreadable }
        let unsigned = checksum(block)
        if stored == UInt64(unsigned) { return .valid }
        let signed = signedChecksum(block)
        if signed >= 0, stored == UInt64(signed) { return .valid }
        return .mismatch(stored: stored, computed: unsigned)
    }

    /// True when the block carries a ustar/GNU magic ("ustar\0" or "ustar ").
    static func hasTarMagic(_ block: [UInt8]) -> Bool {
        guard block.count == size else { return false }
        return block[257..<262].elementsEqual("ustar".utf8) && (block[262] == 0 || block[262] == UInt8(ascii: " "))
    }

    /// The member name: POSIX ustar joins prefix and name; GNU uses those bytes for other fields.
    static func memberName(_ block: [UInt8]) -> String {
        let name = text(block, nameRange)
        let posix = block.count == size && block[257..<263].elementsEqual(Array("ustar".utf8) + [0])
        if posix {
            let prefix = text(block, prefixRange)
            if !prefix.isEmpty { return prefix + "/" + name }
        }
        return name
    }

    /// Untrusted text shown in a message: control characters replaced, length bounded.
    static func printable(_ s: String, limit: Int = 240) -> String {
        var out = ""
        for scalar in s.unicodeScalars.prefix(limit) {
            out.unicodeScalars.append(scalar.value < 0x20 || scalar.value == 0x7F ? "?" : scalar)
        }
        if s.unicodeScalars.count > limit { out += "…" }
        return out
    }
}

/// One entry of a sparse map: `length` bytes of the file at `offset` are stored, back to back
/// with the other entries, in the member's data.
struct TarSparseEntry: Equatable {
    var offset: UInt64
    var length: UInt64
}

extension TarBlock {
    /// Reads old GNU sparse map entries from `block` starting at byte `start`; stops at the
    /// first empty entry. Returns nil when an entry is malformed.
    static func sparseEntries(_ block: [UInt8], start: Int, count: Int) -> [TarSparseEntry]? {
        var out: [TarSparseEntry] = []
        for i in 0..<count {
            let o = start + i * sparseEntrySize
            guard o + sparseEntrySize <= block.count else { return nil }
            // GNU tar ends the map at an entry whose length field is empty.
            if block[o + 12] == 0 { break }
            guard let offset = parseNumber(block, o..<o + 12),
                  let length = parseNumber(block, o + 12..<o + 24) else { return nil }
            out.append(TarSparseEntry(offset: offset, length: length))
        }
        return out
    }
}
