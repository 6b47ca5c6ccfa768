import CVMSupport

/// Writes a protective MBR and both GPT headers and entry arrays (128 entries of 128 bytes,
/// 512-byte sectors), as `sgdisk` lays them out. Every GUID comes from the caller, so the same
/// layout always gives the same bytes.
public struct GPTLayout: Sendable {
    public struct Entry: Sendable {
        public var name: String
        /// Partition type GUID text (e.g. `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`).
        public var typeGUID: String
        public var uniqueGUID: [UInt8]
        public var firstLBA: UInt64
        public var lastLBA: UInt64
        public var attributes: UInt64 = 0

        public init(name: String, typeGUID: String, uniqueGUID: [UInt8], firstLBA: UInt64, lastLBA: UInt64, attributes: UInt64 = 0) {
            self.name = name
            self.typeGUID = typeGUID
            self.uniqueGUID = uniqueGUID
            self.firstLBA = firstLBA
            self.lastLBA = lastLBA
            self.attributes = attributes
        }
    }

    public static let entryCount = 128
    public static let entrySize = 128
    /// Sectors taken by the entry array (16 KiB).
    public static let entrySectors: UInt64 = 32
    /// First LBA a partition may use (after the MBR, header and entries).
    public static let firstUsableLBA: UInt64 = 2 + entrySectors

    public var diskGUID: [UInt8]
    public var entries: [Entry]
    public var diskSize: UInt64

    public init(diskGUID: [UInt8], diskSize: UInt64, entries: [Entry]) {
        self.diskGUID = diskGUID
        self.diskSize = diskSize
        self.entries = entries
    }

    public var lastLBA: UInt64 { diskSize / GPT.sectorSize - 1 }
    /// Last LBA a partition may use (before the backup entries and header).
    public var lastUsableLBA: UInt64 { lastLBA - 1 - Self.entrySectors }

    /// The structures to write: (byte offset, bytes). Checks that the partitions fit and
    /// do not overlap.
    public func encoded() throws -> [(offset: UInt64, bytes: [UInt8])] {
        guard diskSize % GPT.sectorSize == 0, diskSize >= (Self.firstUsableLBA + Self.entrySectors + 2) * GPT.sectorSize else {
            throw CVMError.invalid("GPT: a disk of \(diskSize) bytes is too small or not a whole number of sectors")
        }
        guard entries.count <= Self.entryCount, diskGUID.count == 16 else {
            throw CVMError.invalid("GPT: at most \(Self.entryCount) partitions and a 16-byte disk GUID")
        }
        var array = [UInt8](repeating: 0, count: Self.entryCount * Self.entrySize)
        let sorted = entries.sorted { $0.firstLBA < $1.firstLBA }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.firstLBA <= a.lastLBA {
            throw CVMError.invalid("GPT: partitions '\(a.name)' and '\(b.name)' overlap")
        }
        for (i, e) in entries.enumerated() {
            guard e.firstLBA >= Self.firstUsableLBA, e.lastLBA <= lastUsableLBA, e.firstLBA <= e.lastLBA else {
                throw CVMError.invalid("GPT: partition '\(e.name)' (LBA \(e.firstLBA)–\(e.lastLBA)) is outside the usable area \(Self.firstUsableLBA)–\(lastUsableLBA)")
            }
            guard let type = guidBytes(e.typeGUID), e.uniqueGUID.count == 16 else {
                throw CVMError.invalid("GPT: partition '\(e.name)' has a malformed GUID")
            }
            let units = Array(e.name.utf16)
            guard units.count <= 36 else { throw CVMError.invalid("GPT: partition name '\(e.name)' is longer than 36 UTF-16 units") }
            let o = i * Self.entrySize
            array.replaceSubrange(o..<o + 16, with: type)
            array.replaceSubrange(o + 16..<o + 32, with: e.uniqueGUID)
            array.putLE64(e.firstLBA, at: o + 32)
            array.putLE64(e.lastLBA, at: o + 40)
            array.putLE64(e.attributes, at: o + 48)
            for (k, u) in units.enumerated() { array.putLE16(u, at: o + 56 + 2 * k) }
        }
        let arrayCRC = crc32(array)

        func header(current: UInt64, alternate: UInt64, entriesLBA: UInt64) -> [UInt8] {
            var h = [UInt8](repeating: 0, count: 512)
            h.replaceSubrange(0..<8, with: Array("EFI PART".utf8))
            h.putLE32(0x0001_0000, at: 8)          // revision 1.0
            h.putLE32(92, at: 12)
            h.putLE64(current, at: 24)
            h.putLE64(alternate, at: 32)
            h.putLE64(Self.firstUsableLBA, at: 40)
            h.putLE64(lastUsableLBA, at: 48)
            h.replaceSubrange(56..<72, with: diskGUID)
            h.putLE64(entriesLBA, at: 72)
            h.putLE32(UInt32(Self.entryCount), at: 80)
            h.putLE32(UInt32(Self.entrySize), at: 84)
            h.putLE32(arrayCRC, at: 88)
            h.putLE32(crc32(Array(h[0..<92])), at: 16)
            return h
        }

        var mbr = [UInt8](repeating: 0, count: 512)
        let p = 446
        mbr[p + 2] = 0x02                           // CHS of LBA 1
        mbr[p + 4] = 0xEE
        mbr[p + 5] = 0xFF; mbr[p + 6] = 0xFF; mbr[p + 7] = 0xFF
        mbr.putLE32(1, at: p + 8)
        mbr.putLE32(UInt32(min(lastLBA, 0xFFFF_FFFF)), at: p + 12)
        mbr[510] = 0x55; mbr[511] = 0xAA

        let backupEntriesLBA = lastLBA - Self.entrySectors
        return [
            (0, mbr),
            (GPT.sectorSize, header(current: 1, alternate: lastLBA, entriesLBA: 2)),
            (2 * GPT.sectorSize, array),
            (backupEntriesLBA * GPT.sectorSize, array),
            (lastLBA * GPT.sectorSize, header(current: lastLBA, alternate: 1, entriesLBA: backupEntriesLBA)),
        ]
    }
}

/// GUID text → on-disk bytes (first three fields little-endian), nil when malformed.
public func guidBytes(_ text: String) -> [UInt8]? {
    let hex = text.filter { $0 != "-" }
    guard hex.count == 32, text.count == 36 else { return nil }
    var raw: [UInt8] = []
    var i = hex.startIndex
    while i < hex.endIndex {
        let j = hex.index(i, offsetBy: 2)
        guard let b = UInt8(hex[i..<j], radix: 16) else { return nil }
        raw.append(b)
        i = j
    }
    return [raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6]] + Array(raw[8..<16])
}

/// On-disk GUID bytes → text as `sgdisk` prints it.
public func guidText(_ bytes: [UInt8]) -> String { guidString(bytes) }

/// 16 bytes → an RFC 4122 version-4-shaped GUID (on-disk order), as systemd derives partition
/// UUIDs from hashes, so a GUID taken from a digest is still a well-formed random-type GUID.
public func guidFromDigest(_ digest: [UInt8]) -> [UInt8] {
    var b = Array(digest.prefix(16))
    // Text form byte 6 (on-disk index 7) carries the version, byte 8 the variant.
    b[7] = (b[7] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return b
}
