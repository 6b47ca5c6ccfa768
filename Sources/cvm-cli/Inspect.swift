import ArgumentParser
import CVMSupport
import DiskImage
import Foundation

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a disk image's format, sizes, GPT partitions and filesystem labels."
    )

    @Argument(help: "Disk image (raw, qcow2, VHD, VMDK, GCP tar.gz).")
    var disk: String

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        try runReportingErrors {
            let reader = try DiskImageFile.open(disk)
            let info = try DiskInspection.inspect(reader, name: disk)
            if json {
                try printJSON(InspectJSON(info))
                return
            }
            print("format:          \(info.format.rawValue)")
            print("virtual size:    \(info.virtualSize) (\(formatBytes(info.virtualSize)))")
            print("allocated bytes: \(info.allocatedBytes) (\(formatBytes(info.allocatedBytes)))")
            guard let parts = info.partitions else {
                print("partitions:      none (no GPT)")
                return
            }
            print("disk GUID:       \(info.diskGUID ?? "")")
            print("partitions:")
            for p in parts {
                let q = p.partition
                var line = "  \(q.index)  \(q.name.isEmpty ? "-" : q.name)  LBA \(q.firstLBA)–\(q.lastLBA)  \(formatBytes(q.size))  type \(q.typeGUID)"
                if let fs = p.filesystem {
                    line += "  \(fs.type) label=\(fs.label.isEmpty ? "-" : fs.label) uuid=\(fs.uuid)"
                }
                print(line)
            }
        }
    }
}

struct InspectJSON: Encodable {
    struct Partition: Encodable {
        let index: Int
        let name: String
        let typeGUID: String
        let uniqueGUID: String
        let firstLBA: UInt64
        let lastLBA: UInt64
        let size: UInt64
        let filesystem: FilesystemProbe?

        enum CodingKeys: String, CodingKey {
            case index, name, size, filesystem
            case typeGUID = "type_guid", uniqueGUID = "unique_guid", firstLBA = "first_lba", lastLBA = "last_lba"
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(name, forKey: .name)
            try c.encode(typeGUID, forKey: .typeGUID)
            try c.encode(uniqueGUID, forKey: .uniqueGUID)
            try c.encode(firstLBA, forKey: .firstLBA)
            try c.encode(lastLBA, forKey: .lastLBA)
            try c.encode(size, forKey: .size)
            try c.encode(filesystem, forKey: .filesystem)   // null when none, key always present
        }
    }

    let format: String
    let virtualSize: UInt64
    let allocatedBytes: UInt64
    let diskGUID: String?
    let partitions: [Partition]

    init(_ i: DiskInspection) {
        format = i.format.rawValue
        virtualSize = i.virtualSize
        allocatedBytes = i.allocatedBytes
        diskGUID = i.diskGUID
        partitions = (i.partitions ?? []).map {
            Partition(index: $0.partition.index, name: $0.partition.name, typeGUID: $0.partition.typeGUID,
                      uniqueGUID: $0.partition.uniqueGUID, firstLBA: $0.partition.firstLBA,
                      lastLBA: $0.partition.lastLBA, size: $0.partition.size, filesystem: $0.filesystem)
        }
    }

    enum CodingKeys: String, CodingKey {
        case format, partitions
        case virtualSize = "virtual_size", allocatedBytes = "allocated_bytes", diskGUID = "disk_guid"
    }
}
