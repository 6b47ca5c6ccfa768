import CVMSupport

/// A GUID Partition Table read from a virtual disk (512-byte logical sectors).
///
/// Both headers and both entry arrays are checked (signature, header CRC32, entries CRC32,
/// self/alternate LBAs); the disk is refused when the primary and backup disagree, so a
/// damaged table is never silently used.
public struct GPT: Sendable {
    public struct Partition: Sendable, Equatable {
        /// 1-based index in the entry array (what `sgdisk` and `--partition N` use).
        public let index: Int
        public let name: String
        public let typeGUID: String
        public let uniqueGUID: String
        public let firstLBA: UInt64
        public let lastLBA: UInt64
        public let attributes: UInt64

        public var offset: UInt64 { firstLBA * GPT.sectorSize }
        public var size: UInt64 { (lastLBA - firstLBA + 1) * GPT.sectorSize }
    }

    public static let sectorSize: UInt64 = 512
    public let diskGUID: String
    public let firstUsableLBA: UInt64
    public let lastUsableLBA: UInt64
    public let backupLBA: UInt64
    public let partitions: [Partition]

    /// Reads and validates the GPT of `disk`. `name` is the file shown in errors.
    public static func read(from disk: DiskReader, name: String) throws -> GPT {
        try read(from: GPTRegionCache(disk), name: name)
    }

    static func read(from disk: GPTRegionCache, name: String) throws -> GPT {
        let size = disk.virtualSize
        guard size >= 34 * sectorSize else {
            throw CVMError.invalid("\(name): the virtual disk is \(size) bytes, too small to hold a GPT")
        }
        let lastLBA = size / sectorSize - 1
        let mbr = try disk.bytes(count: 512, at: 0)
        guard mbr[510] == 0x55, mbr[511] == 0xAA, (0..<4).contains(where: { mbr[446 + 16 * $0 + 4] == 0xEE }) else {
            throw CVMError.invalid("\(name): no protective MBR (type 0xEE) in sector 0; not a GPT disk")
        }
        let primary = try Header.read(disk, at: 1, name: name, which: "primary")
        let entries = try primary.readEntries(disk, name: name, which: "primary")
        // The backup is where the primary says; it should also be the last sector.
        let backup = try Header.read(disk, at: primary.alternateLBA, name: name, which: "backup")
        let backupEntries = try backup.readEntries(disk, name: name, which: "backup")
        guard backup.alternateLBA == 1, backup.diskGUID == primary.diskGUID,
              backup.entriesCRC == primary.entriesCRC, backupEntries == entries else {
            throw CVMError.invalid("\(name): the backup GPT (LBA \(primary.alternateLBA)) does not match the primary GPT")
        }
        guard primary.alternateLBA <= lastLBA else {
            throw CVMError.invalid("\(name): the GPT backup header LBA \(primary.alternateLBA) is beyond the disk's last sector \(lastLBA)")
        }
        var partitions: [Partition] = []
        for i in 0..<Int(primary.entryCount) {
            let o = i * Int(primary.entrySize)
            let type = Array(entries[o..<o + 16])
            if type.allSatisfy({ $0 == 0 }) { continue }
            let first = entries.le64(o + 32), last = entries.le64(o + 40)
            guard first <= last, first >= primary.firstUsableLBA, last <= primary.lastUsableLBA else {
                throw CVMError.invalid("\(name): GPT partition \(i + 1) spans LBA \(first)–\(last), outside the usable area \(primary.firstUsableLBA)–\(primary.lastUsableLBA)")
            }
            var units: [UInt16] = []
            for k in 0..<36 {
                let u = entries.le16(o + 56 + 2 * k)
                if u == 0 { break }
                units.append(u)
            }
            partitions.append(Partition(index: i + 1, name: String(decoding: units, as: UTF16.self),
                                        typeGUID: guidString(type), uniqueGUID: guidString(Array(entries[o + 16..<o + 32])),
                                        firstLBA: first, lastLBA: last, attributes: entries.le64(o + 48)))
        }
        let sorted = partitions.sorted { $0.firstLBA < $1.firstLBA }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.firstLBA <= a.lastLBA {
            throw CVMError.invalid("\(name): GPT partitions \(a.index) and \(b.index) overlap")
        }
        return GPT(diskGUID: guidString(primary.diskGUID), firstUsableLBA: primary.firstUsableLBA,
                   lastUsableLBA: primary.lastUsableLBA, backupLBA: primary.alternateLBA, partitions: partitions)
    }

    /// One GPT header (primary or backup), validated.
    struct Header {
        var currentLBA: UInt64
        var alternateLBA: UInt64
        var firstUsableLBA: UInt64
        var lastUsableLBA: UInt64
        var diskGUID: [UInt8]
        var entriesLBA: UInt64
        var entryCount: UInt32
        var entrySize: UInt32
        var entriesCRC: UInt32

        static func read(_ disk: GPTRegionCache, at lba: UInt64, name: String, which: String) throws -> Header {
            let sectors = disk.virtualSize / GPT.sectorSize
            guard lba < sectors else {
                throw CVMError.invalid("\(name): the \(which) GPT header LBA \(lba) is beyond the end of the disk (\(sectors) sectors)")
            }
            let b = try disk.bytes(count: 512, at: lba * GPT.sectorSize)
            guard b.ascii(0, 8) == "EFI PART" else {
                throw CVMError.invalid("\(name): no \(which) GPT header at LBA \(lba) (signature 'EFI PART' missing)")
            }
            let headerSize = Int(b.le32(12))
            guard headerSize >= 92, headerSize <= 512 else {
                throw CVMError.invalid("\(name): the \(which) GPT header size \(headerSize) is invalid (92–512 expected)")
            }
            var copy = Array(b[0..<headerSize])
            let stored = copy.le32(16)
            copy.putLE32(0, at: 16)
            let computed = crc32(copy)
            guard stored == computed else {
                throw CVMError.invalid("\(name): \(which) GPT header CRC mismatch (stored \(hex32(stored)), computed \(hex32(computed)))")
            }
            let h = Header(currentLBA: b.le64(24), alternateLBA: b.le64(32), firstUsableLBA: b.le64(40),
                           lastUsableLBA: b.le64(48), diskGUID: Array(b[56..<72]), entriesLBA: b.le64(72),
                           entryCount: b.le32(80), entrySize: b.le32(84), entriesCRC: b.le32(88))
            guard h.currentLBA == lba else {
                throw CVMError.invalid("\(name): the \(which) GPT header at LBA \(lba) says it is at LBA \(h.currentLBA)")
            }
            guard h.entrySize >= 128, h.entrySize % 8 == 0, h.entrySize <= 4096,
                  h.entryCount >= 1, h.entryCount <= 16384,
                  UInt64(h.entryCount) * UInt64(h.entrySize) <= 4 << 20 else {
                throw CVMError.invalid("\(name): the \(which) GPT header declares \(h.entryCount) entries of \(h.entrySize) bytes; expected ≤ 16384 entries of 128–4096 bytes")
            }
            guard h.firstUsableLBA <= h.lastUsableLBA, h.lastUsableLBA < sectors else {
                throw CVMError.invalid("\(name): the \(which) GPT usable area \(h.firstUsableLBA)–\(h.lastUsableLBA) does not fit the disk (\(sectors) sectors)")
            }
            return h
        }

        func readEntries(_ disk: GPTRegionCache, name: String, which: String) throws -> [UInt8] {
            let length = UInt64(entryCount) * UInt64(entrySize)
            let sectors = disk.virtualSize / GPT.sectorSize
            guard entriesLBA < sectors, length <= (sectors - entriesLBA) * GPT.sectorSize else {
                throw CVMError.invalid("\(name): the \(which) GPT entry array at LBA \(entriesLBA) runs past the end of the disk")
            }
            let entries = try disk.bytes(count: Int(length), at: entriesLBA * GPT.sectorSize)
            let computed = crc32(entries)
            guard computed == entriesCRC else {
                throw CVMError.invalid("\(name): \(which) GPT partition entries CRC mismatch (stored \(hex32(entriesCRC)), computed \(hex32(computed)))")
            }
            return entries
        }
    }
}

/// Mixed-endian GUID text as GPT tools print it (upper case, like sgdisk).
func guidString(_ b: [UInt8]) -> String {
    func h(_ x: UInt8) -> String { let s = String(x, radix: 16, uppercase: true); return s.count == 1 ? "0" + s : s }
    let order = [3, 2, 1, 0, -1, 5, 4, -1, 7, 6, -1, 8, 9, -1, 10, 11, 12, 13, 14, 15]
    return order.map { $0 < 0 ? "-" : h(b[$0]) }.joined()
}

func hex32(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - s.count) + s
}

/// Serves the reads of GPT parsing from two windows — the start of the disk and its last
/// MiBs — read once each in ascending order, so a sequential format (tar.gz) is decompressed
/// at most once and the backup entries (before the backup header) need no second pass.
final class GPTRegionCache {
    let disk: DiskReader
    var virtualSize: UInt64 { disk.virtualSize }
    private var windows: [(offset: UInt64, bytes: [UInt8])] = []
    static let headWindow: UInt64 = 1 << 20
    static let tailWindow: UInt64 = 4 << 20 + 512

    init(_ disk: DiskReader) { self.disk = disk }

    func bytes(count: Int, at offset: UInt64) throws -> [UInt8] {
        if let w = windows.first(where: { offset >= $0.offset && offset + UInt64(count) <= $0.offset + UInt64($0.bytes.count) }) {
            let start = Int(offset - w.offset)
            return Array(w.bytes[start..<start + count])
        }
        let size = disk.virtualSize
        let window: Range<UInt64>
        if offset < Self.headWindow, offset + UInt64(count) <= min(Self.headWindow, size) {
            window = 0..<min(Self.headWindow, size)
        } else if size >= Self.tailWindow, offset >= size - Self.tailWindow {
            window = (size - Self.tailWindow)..<size
        } else {
            return try disk.bytes(count: count, at: offset)
        }
        let bytes = try disk.bytes(count: Int(window.upperBound - window.lowerBound), at: window.lowerBound)
        windows.append((window.lowerBound, bytes))
        let start = Int(offset - window.lowerBound)
        return Array(bytes[start..<start + count])
    }
}
