import CVMSupport
import DiskImage

/// A read-only FAT16/FAT32 file system inside a partition of a virtual disk (an EFI system
/// partition): enough to find and read the files the firmware boots. Long names (VFAT) and
/// 8.3 names are matched case-insensitively, as UEFI's FAT driver does.
public final class FATFileSystem {
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let isDirectory: Bool
        public let firstCluster: UInt32
        public let size: UInt32
    }

    let disk: DiskReader
    let offset: UInt64
    let size: UInt64
    let name: String
    let bytesPerSector: Int
    let sectorsPerCluster: Int
    let reservedSectors: Int
    let fatCount: Int
    let sectorsPerFAT: Int
    let rootEntryCount: Int
    let totalSectors: Int
    let rootCluster: UInt32
    public let isFAT32: Bool
    let clusterCount: Int
    var fat: [UInt8] = []

    var clusterSize: Int { bytesPerSector * sectorsPerCluster }
    var rootDirectorySector: Int { reservedSectors + fatCount * sectorsPerFAT }
    var firstDataSector: Int { rootDirectorySector + (rootEntryCount * 32 + bytesPerSector - 1) / bytesPerSector }

    /// `name` names the partition in errors ("disk.raw partition 1").
    public init(disk: DiskReader, offset: UInt64, size: UInt64, name: String) throws {
        self.disk = disk
        self.offset = offset
        self.size = size
        self.name = name
        guard size >= 512, offset + size <= disk.virtualSize else { throw CVMError.invalid("\(name): too small for a FAT file system") }
        let boot = try disk.bytes(count: 512, at: offset)
        bytesPerSector = Int(boot.le16(11))
        sectorsPerCluster = Int(boot[13])
        reservedSectors = Int(boot.le16(14))
        fatCount = Int(boot[16])
        rootEntryCount = Int(boot.le16(17))
        let fat16Size = Int(boot.le16(22))
        sectorsPerFAT = fat16Size != 0 ? fat16Size : Int(boot.le32(36))
        let total16 = Int(boot.le16(19))
        totalSectors = total16 != 0 ? total16 : Int(boot.le32(32))
        guard boot[510] == 0x55, boot[511] == 0xAA, [512, 1024, 2048, 4096].contains(bytesPerSector),
              sectorsPerCluster > 0, sectorsPerCluster & (sectorsPerCluster - 1) == 0, reservedSectors > 0,
              fatCount > 0, sectorsPerFAT > 0, totalSectors > 0 else {
            throw CVMError.invalid("\(name): no FAT boot sector (bad signature or BIOS parameter block)")
        }
        let rootSectors = (rootEntryCount * 32 + bytesPerSector - 1) / bytesPerSector
        let dataSectors = totalSectors - (reservedSectors + fatCount * sectorsPerFAT + rootSectors)
        guard dataSectors > 0, UInt64(totalSectors) * UInt64(bytesPerSector) <= size else {
            throw CVMError.invalid("\(name): the FAT file system's \(totalSectors) sectors do not fit the partition")
        }
        clusterCount = dataSectors / sectorsPerCluster
        // The FAT type follows from the cluster count alone (Microsoft's FAT specification).
        guard clusterCount >= 4085 else {
            throw CVMError.unsupported("\(name): FAT12 (\(clusterCount) clusters) is not supported; EFI system partitions are FAT16 or FAT32")
        }
        isFAT32 = clusterCount >= 65525
        rootCluster = isFAT32 ? boot.le32(44) : 0
        fat = try disk.bytes(count: sectorsPerFAT * bytesPerSector, at: offset + UInt64(reservedSectors * bytesPerSector))
    }

    func next(_ cluster: UInt32) -> UInt32? {
        let value: UInt32 = isFAT32 ? fat.le32(Int(cluster) * 4) & 0x0FFF_FFFF : UInt32(fat.le16(Int(cluster) * 2))
        let end: UInt32 = isFAT32 ? 0x0FFF_FFF8 : 0xFFF8
        return value >= end || value < 2 ? nil : value
    }

    /// The clusters of a chain, refusing loops and clusters outside the volume.
    func chain(_ first: UInt32) throws -> [UInt32] {
        var clusters: [UInt32] = []
        var current: UInt32? = first
        while let c = current {
            guard c >= 2, Int(c) < clusterCount + 2 else { throw CVMError.invalid("\(name): FAT chain reaches cluster \(c), outside the volume") }
            guard clusters.count <= clusterCount else { throw CVMError.invalid("\(name): FAT chain starting at cluster \(first) loops") }
            clusters.append(c)
            current = next(c)
        }
        return clusters
    }

    func readClusters(_ first: UInt32, limit: Int?) throws -> [UInt8] {
        var out: [UInt8] = []
        // Contiguous clusters are read in one go (a file written in one piece is one run).
        var runs: [(first: UInt32, count: Int)] = []
        for c in try chain(first) {
            if let last = runs.last, last.first + UInt32(last.count) == c { runs[runs.count - 1].count += 1 } else { runs.append((c, 1)) }
        }
        for run in runs {
            if let limit, out.count >= limit { break }
            let sector = firstDataSector + (Int(run.first) - 2) * sectorsPerCluster
            out += try disk.bytes(count: clusterSize * run.count, at: offset + UInt64(sector * bytesPerSector))
        }
        if let limit {
            guard out.count >= limit else { throw CVMError.invalid("\(name): a file's cluster chain is shorter than its size \(limit)") }
            out.removeLast(out.count - limit)
        }
        return out
    }

    /// Entries of a directory (nil = the root), without "." and "..".
    public func list(_ directory: Entry?) throws -> [Entry] {
        let raw: [UInt8]
        if let directory {
            raw = try readClusters(directory.firstCluster, limit: nil)
        } else if isFAT32 {
            raw = try readClusters(rootCluster, limit: nil)
        } else {
            raw = try disk.bytes(count: rootEntryCount * 32, at: offset + UInt64(rootDirectorySector * bytesPerSector))
        }
        var entries: [Entry] = []
        var longName: [UInt16] = []
        var o = 0
        while o + 32 <= raw.count {
            defer { o += 32 }
            let first = raw[o]
            if first == 0 { break }                     // end of directory
            if first == 0xE5 { longName = []; continue } // deleted
            let attributes = raw[o + 11]
            if attributes & 0x3F == 0x0F {              // a VFAT long-name piece, stored last piece first
                var units: [UInt16] = []
                for p in [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30] { units.append(raw.le16(o + p)) }
                if let end = units.firstIndex(where: { $0 == 0 || $0 == 0xFFFF }) { units.removeSubrange(end...) }
                longName = (first & 0x40 != 0) ? units : units + longName
                continue
            }
            defer { longName = [] }
            if attributes & 0x08 != 0 { continue }       // volume label
            // Windows NT's case flags (byte 12): an all-lower-case 8.3 name needs no long name.
            var base = raw.ascii(o, 8).trimmingCharacters(in: " ")
            var ext = raw.ascii(o + 8, 3).trimmingCharacters(in: " ")
            if raw[o + 12] & 0x08 != 0 { base = base.lowercased() }
            if raw[o + 12] & 0x10 != 0 { ext = ext.lowercased() }
            let short = ext.isEmpty ? base : base + "." + ext
            if short == "." || short == ".." { continue }
            let entryName = longName.isEmpty ? short : String(decoding: longName, as: UTF16.self)
            let cluster = UInt32(raw.le16(o + 26)) | (isFAT32 ? UInt32(raw.le16(o + 20)) << 16 : 0)
            entries.append(Entry(name: entryName, isDirectory: attributes & 0x10 != 0, firstCluster: cluster, size: raw.le32(o + 28)))
        }
        return entries
    }

    /// The entry at `path` ("EFI/BOOT/BOOTX64.EFI", "/" or "\" separated), nil when absent.
    public func lookup(_ path: String) throws -> Entry? {
        var current: Entry? = nil
        let parts = path.split(whereSeparator: { $0 == "/" || $0 == "\\" }).map(String.init)
        for (i, part) in parts.enumerated() {
            guard current == nil || current!.isDirectory else { return nil }
            guard let found = try list(current).first(where: { $0.name.uppercased() == part.uppercased() }) else { return nil }
            current = found
            if i == parts.count - 1 { return found }
        }
        return current
    }

    /// The whole content of a file.
    public func read(_ entry: Entry) throws -> [UInt8] {
        guard !entry.isDirectory else { throw CVMError.invalid("\(name): \(entry.name) is a directory") }
        guard entry.size > 0 else { return [] }
        return try readClusters(entry.firstCluster, limit: Int(entry.size))
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.last, set.contains(c) { s.removeLast() }
        return String(s)
    }
}
