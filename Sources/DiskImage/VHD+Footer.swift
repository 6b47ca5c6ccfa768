import CVMSupport

/// The 512-byte VHD hard disk footer (all integers big-endian), as read from or written to
/// a file. Field offsets follow the VHD specification.
struct VHDFooter: Equatable {
    static let size = 512
    static let cookie = "conectix"
    /// Seconds from the Unix epoch to 2000-01-01 00:00:00 UTC, the VHD time origin.
    static let timeOrigin: UInt64 = 946_684_800
    /// "No further structure": what fixed disks store as the data offset.
    static let noDataOffset = UInt64.max

    enum DiskType: UInt32 {
        case fixed = 2
        case dynamic = 3
        case differencing = 4
    }

    enum Field {
        static let cookie = 0
        static let features = 8
        static let formatVersion = 12
        static let dataOffset = 16
        static let timestamp = 24
        static let creatorApplication = 28
        static let creatorVersion = 32
        static let creatorHostOS = 36
        static let originalSize = 40
        static let currentSize = 48
        static let cylinders = 56
        static let heads = 58
        static let sectorsPerTrack = 59
        static let diskType = 60
        static let checksum = 64
        static let uniqueID = 68
        static let savedState = 84
    }

    var features: UInt32 = 2
    var formatVersion: UInt32 = 0x0001_0000
    var dataOffset: UInt64 = VHDFooter.noDataOffset
    var timestamp: UInt32 = 0
    var creatorApplication: [UInt8] = Array("cvmc".utf8)
    var creatorVersion: UInt32 = 0x0001_0000
    var creatorHostOS: [UInt8] = Array("Wi2k".utf8)
    var originalSize: UInt64 = 0
    var currentSize: UInt64 = 0
    var cylinders: UInt16 = 0
    var heads: UInt8 = 0
    var sectorsPerTrack: UInt8 = 0
    var diskTypeValue: UInt32 = DiskType.fixed.rawValue
    var uniqueID: [UInt8] = [UInt8](repeating: 0, count: 16)
    var savedState: UInt8 = 0

    var diskType: DiskType? { DiskType(rawValue: diskTypeValue) }

    /// One's complement of the byte sum with the 4 bytes at `checksumOffset` counted as zero:
    /// the checksum of the VHD footer and of the dynamic header.
    static func onesComplementSum(_ bytes: [UInt8], checksumOffset: Int) -> UInt32 {
        var sum: UInt32 = 0
        for (i, b) in bytes.enumerated() where i < checksumOffset || i >= checksumOffset + 4 {
            sum &+= UInt32(b)
        }
        return ~sum
    }

    /// The footer checksum of `bytes` (512 bytes, or the 511 of old Virtual PC versions).
    static func checksum(of bytes: [UInt8]) -> UInt32 {
        onesComplementSum(bytes, checksumOffset: Field.checksum)
    }

    /// True when `bytes` starts with the footer cookie.
    static func hasCookie(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 8 && bytes.ascii(0, 8) == cookie
    }

    /// Parses a footer after checking its cookie and checksum. `bytes` is 512 or 511 bytes
    /// long; `place` says which copy this is ("at the end of the file") for error messages.
    static func parse(_ bytes: [UInt8], name: String, where place: String) throws -> VHDFooter {
        guard bytes.count >= size - 1, hasCookie(bytes) else {
            throw CVMError.invalid("\(name): no VHD footer cookie 'conectix' \(place); the file is not a VHD or is damaged")
        }
        let stored = bytes.be32(Field.checksum)
        let computed = checksum(of: bytes)
        guard stored == computed else {
            throw CVMError.invalid("\(name): bad VHD footer checksum: stored \(hex32(stored)), computed \(hex32(computed)) (footer \(place)); the footer is corrupt")
        }
        var f = VHDFooter()
        f.features = bytes.be32(Field.features)
        f.formatVersion = bytes.be32(Field.formatVersion)
        f.dataOffset = bytes.be64(Field.dataOffset)
        f.timestamp = bytes.be32(Field.timestamp)
        f.creatorApplication = Array(bytes[Field.creatorApplication..<Field.creatorApplication + 4])
        f.creatorVersion = bytes.be32(Field.creatorVersion)
        f.creatorHostOS = Array(bytes[Field.creatorHostOS..<Field.creatorHostOS + 4])
        f.originalSize = bytes.be64(Field.originalSize)
        f.currentSize = bytes.be64(Field.currentSize)
        f.cylinders = bytes.be16(Field.cylinders)
        f.heads = bytes[Field.heads]
        f.sectorsPerTrack = bytes[Field.sectorsPerTrack]
        f.diskTypeValue = bytes.be32(Field.diskType)
        f.uniqueID = Array(bytes[Field.uniqueID..<Field.uniqueID + 16])
        f.savedState = bytes[Field.savedState]
        return f
    }

    /// The 512 bytes of this footer with its checksum filled in.
    func encoded() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: VHDFooter.size)
        for (i, c) in VHDFooter.cookie.utf8.enumerated() { b[Field.cookie + i] = c }
        b.putBE32(features, at: Field.features)
        b.putBE32(formatVersion, at: Field.formatVersion)
        b.putBE64(dataOffset, at: Field.dataOffset)
        b.putBE32(timestamp, at: Field.timestamp)
        for i in 0..<4 {
            b[Field.creatorApplication + i] = i < creatorApplication.count ? creatorApplication[i] : 0
            b[Field.creatorHostOS + i] = i < creatorHostOS.count ? creatorHostOS[i] : 0
        }
        b.putBE32(creatorVersion, at: Field.creatorVersion)
        b.putBE64(originalSize, at: Field.originalSize)
        b.putBE64(currentSize, at: Field.currentSize)
        b.putBE16(cylinders, at: Field.cylinders)
        b[Field.heads] = heads
        b[Field.sectorsPerTrack] = sectorsPerTrack
        b.putBE32(diskTypeValue, at: Field.diskType)
        for i in 0..<16 { b[Field.uniqueID + i] = i < uniqueID.count ? uniqueID[i] : 0 }
        b[Field.savedState] = savedState
        b.putBE32(VHDFooter.checksum(of: b), at: Field.checksum)
        return b
    }

    /// VHD time (seconds since 2000-01-01 UTC) for a Unix time; earlier times clamp to 0 and
    /// times after 2136 to the largest value the 32-bit field holds.
    static func vhdTime(unixSeconds: UInt64) -> UInt32 {
        guard unixSeconds > timeOrigin else { return 0 }
        return UInt32(clamping: unixSeconds - timeOrigin)
    }

    /// Lower-case hexadecimal without prefix, for messages.
}

/// The dynamic disk header ("cxsparse", 1024 bytes, big-endian) that dynamic and differencing
/// VHDs keep at the footer's data offset.
struct VHDDynamicHeader {
    static let size = 1024
    static let cookie = "cxsparse"

    enum Field {
        static let cookie = 0
        static let dataOffset = 8
        static let tableOffset = 16
        static let headerVersion = 24
        static let maxTableEntries = 28
        static let blockSize = 32
        static let checksum = 36
    }

    let tableOffset: UInt64
    let maxTableEntries: UInt32
    let blockSize: UInt32

    /// Parses the header after checking its cookie and checksum (the footer's algorithm over
    /// 1024 bytes). `offset` is where it was read, for messages.
    static func parse(_ bytes: [UInt8], name: String, at offset: UInt64) throws -> VHDDynamicHeader {
        guard bytes.count == size, bytes.ascii(Field.cookie, 8) == cookie else {
            throw CVMError.invalid("\(name): no VHD dynamic header cookie 'cxsparse' at offset \(offset) (the footer's data offset); the dynamic VHD is damaged")
        }
        let stored = bytes.be32(Field.checksum)
        let computed = VHDFooter.onesComplementSum(bytes, checksumOffset: Field.checksum)
        guard stored == computed else {
            throw CVMError.invalid("\(name): bad VHD dynamic header checksum: stored \(hex32(stored)), computed \(hex32(computed)); the header is corrupt")
        }
        return VHDDynamicHeader(tableOffset: bytes.be64(Field.tableOffset),
                                maxTableEntries: bytes.be32(Field.maxTableEntries),
                                blockSize: bytes.be32(Field.blockSize))
    }
}
