import CVMSupport

/// What `cvm-cli inspect` reports about a disk image.
public struct DiskInspection: Sendable {
    public struct PartitionInfo: Sendable {
        public let partition: GPT.Partition
        public let filesystem: FilesystemProbe?
    }

    public let format: DiskFormat
    public let virtualSize: UInt64
    public let allocatedBytes: UInt64
    /// nil when the disk has no GPT (a protective MBR is missing); a damaged GPT is an error.
    public let partitions: [PartitionInfo]?
    public let diskGUID: String?

    /// Reads the format, sizes, GPT and filesystem labels. Reads ascend through the disk so
    /// sequential formats (tar.gz) are decompressed once.
    public static func inspect(_ disk: DiskReader, name: String) throws -> DiskInspection {
        let allocated = try disk.allocatedBytes()
        let mbr = try disk.bytes(count: min(512, Int(disk.virtualSize)), at: 0)
        let hasProtectiveMBR = mbr.count == 512 && mbr[510] == 0x55 && mbr[511] == 0xAA
            && (0..<4).contains(where: { mbr[446 + 16 * $0 + 4] == 0xEE })
        guard hasProtectiveMBR else {
            return DiskInspection(format: disk.format, virtualSize: disk.virtualSize, allocatedBytes: allocated,
                                  partitions: nil, diskGUID: nil)
        }
        // For sequential readers, read superblocks before the backup header at the end.
        let cache = GPTRegionCache(disk)
        let gptProbe = try GPTPrimaryPeek.partitionsInOrder(cache, name: name)
        var probes: [Int: FilesystemProbe] = [:]
        for p in gptProbe {
            if let fs = try FilesystemProbe.probe(disk, partitionOffset: p.offset, partitionSize: p.size) {
                probes[p.index] = fs
            }
        }
        let gpt = try GPT.read(from: cache, name: name)
        let parts = gpt.partitions.map { PartitionInfo(partition: $0, filesystem: probes[$0.index]) }
        return DiskInspection(format: disk.format, virtualSize: disk.virtualSize, allocatedBytes: allocated,
                              partitions: parts, diskGUID: gpt.diskGUID)
    }
}

/// The primary GPT's partitions by ascending offset, read without touching the backup header
/// (which sits at the end of the disk); full validation follows in `GPT.read`.
enum GPTPrimaryPeek {
    static func partitionsInOrder(_ disk: GPTRegionCache, name: String) throws -> [GPT.Partition] {
        let h = try GPT.Header.read(disk, at: 1, name: name, which: "primary")
        let entries = try h.readEntries(disk, name: name, which: "primary")
        var out: [GPT.Partition] = []
        for i in 0..<Int(h.entryCount) {
            let o = i * Int(h.entrySize)
            if entries[o..<o + 16].allSatisfy({ $0 == 0 }) { continue }
            let first = entries.le64(o + 32), last = entries.le64(o + 40)
            guard first <= last, last < disk.virtualSize / GPT.sectorSize else { continue }
            out.append(GPT.Partition(index: i + 1, name: "", typeGUID: "", uniqueGUID: "",
                                     firstLBA: first, lastLBA: last, attributes: 0))
        }
        return out.sorted { $0.firstLBA < $1.firstLBA }
    }
}
