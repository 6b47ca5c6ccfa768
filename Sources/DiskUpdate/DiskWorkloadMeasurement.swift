import CVMCrypto
import CVMSupport
import DiskImage
import EXT4
import Workload

/// The workload measurement (PCR 23) of the workload stored on a disk's data partition, read
/// in place like update-disk reads it: what the agent will extend when that disk boots.
public enum DiskWorkloadMeasurement {
    public static func measure(disk path: String, partitionIndex: Int? = nil) throws -> WorkloadMeasurement {
        let source = try FileByteSource(path: path)
        let reader = try DiskImageFile.open(source: source, path: path)
        guard !reader.isSequential else {
            throw CVMError.unsupported("\(path): a \(reader.format.rawValue) disk is read sequentially only; convert it to raw first (cvm-cli convert)")
        }
        let inspection = try DiskInspection.inspect(reader, name: path)
        let partition = try DataPartition.find(in: inspection, name: path, index: partitionIndex)
        let ext4 = try EXT4Reader(source: PartitionBlockSource(disk: reader, offset: partition.offset, size: partition.size),
                               name: "\(path) partition \(partition.index)")
        let prefix = "workload/"
        var entries: [WorkloadFolder.Entry] = []
        var inodes: [String: UInt32] = [:]
        for entry in try ext4.entries() {
            let full = entry.path.hasPrefix("/") ? String(entry.path.dropFirst()) : entry.path
            guard full.hasPrefix(prefix) else { continue }
            let rel = String(full.dropFirst(prefix.count))
            let mode = entry.metadata.permissions
            switch entry.metadata.type {
            case .symlink:
                let target = String(decoding: entry.symlinkTarget ?? [], as: UTF8.self)
                entries.append(.init(path: rel, kind: .symlink(target: target), mode: mode))
            case .directory:
                entries.append(.init(path: rel, kind: .directory, mode: mode))
            case .regular:
                entries.append(.init(path: rel, kind: .file(size: entry.size), mode: mode))
                inodes[rel] = entry.inodeNumber
            default:
                throw CVMError.invalid("\(path): /workload/\(rel) is a \(entry.metadata.type.rawValue); a workload holds only files, folders and symlinks")
            }
        }
        guard !entries.isEmpty else {
            throw CVMError.invalid("\(path): the data partition (\(partition.index)) holds no /workload; run `cvm-cli update-disk` first")
        }
        entries.sort { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
        var inputs: [(name: String, content: [UInt8])] = []
        for entry in WorkloadMeasurement.measuredEntries(entries) {
            switch entry.kind {
            case .file:
                guard case .file(let size) = entry.kind, let inode = inodes[entry.path] else { continue }
                var hasher = SHA256Hasher()
                try EXT4ReaderFile(reader: ext4, inodeNumber: inode, size: size).stream { hasher.update($0) }
                inputs.append((entry.path, hasher.finalize()))
            case .symlink(let target):
                inputs.append((entry.path, SHA256.hash("symlink:" + target)))
            case .directory:
                continue
            }
        }
        return WorkloadMeasurement.fromContentDigests(inputs)
    }
}
