import CVMSupport

/// Rebuilding a data partition: everything of the old file system carried over, one folder
/// replaced by a host folder. This is what `update-disk` does to the `workload/` folder.
public enum EXT4Rebuild {
    /// Entries of the file system in `reader` with the subtree at `destination` (e.g.
    /// `[Array("workload".utf8)]`) replaced by the host `folder`: owner `uid`/`gid`, modes and
    /// symlinks kept, every time set to `time`. Everything else is carried over unchanged.
    public static func entries(carryingOver reader: EXT4Reader, replacing destination: [[UInt8]],
                               withHostFolder folder: String, uid: UInt32 = 0, gid: UInt32 = 0,
                               time: EXT4Timestamp) throws -> [EXT4NewEntry] {
        guard !destination.isEmpty else {
            throw CVMError.usage("\(reader.name): the folder to replace cannot be the root")
        }
        var out: [EXT4NewEntry] = []
        var parentFound = destination.count == 1
        try reader.walk { entry in
            if entry.isWithin(destination) { return }
            if entry.components == Array(destination.dropLast()) {
                guard entry.metadata.type == .directory else {
                    throw CVMError.invalid("\(reader.name): \(entry.path) is not a directory; cannot place \(ext4PathString(destination)) in it")
                }
                parentFound = true
            }
            out.append(EXT4NewEntry(carryingOver: entry, from: reader))
        }
        guard parentFound else {
            throw CVMError.invalid("\(reader.name): \(ext4PathString(Array(destination.dropLast()))) does not exist; cannot place \(ext4PathString(destination)) in it")
        }
        out += try EXT4HostTree.entries(folder: folder, destination: destination, uid: uid, gid: gid, time: time)
        return out
    }

    /// Reads the file system on `source` and writes a new one to `output` of the same size,
    /// UUID, label, reserved-block count and journal choice, with `destination` replaced by
    /// the host `folder`.
    ///
    /// - Note: `output` must be a different place than `source` (old content is read while the
    ///   new one is written) and must read as zeros where nothing is written, e.g. a new sparse
    ///   temporary file of `source.size` bytes that the caller then copies into the partition.
    /// - Parameters:
    ///   - sourceName / outputName: shown in error messages.
    ///   - time: every time of the new folder's entries, and the superblock's times.
    @discardableResult
    public static func rebuild(source: EXT4BlockSource, sourceName: String, output: EXT4Output, outputName: String,
                               replacing destination: [[UInt8]], withHostFolder folder: String,
                               time: EXT4Timestamp) throws -> EXT4FormatSummary {
        let reader = try EXT4Reader(source: source, name: sourceName)
        let entries = try entries(carryingOver: reader, replacing: destination, withHostFolder: folder, time: time)
        let options = EXT4FormatOptions(size: source.size, uuid: reader.uuid, label: reader.labelBytes, timestamp: time,
                                        reservedBlocks: reader.reservedBlockCount, journal: reader.hasJournal, name: outputName)
        return try EXT4Formatter(options: options).format(entries, to: output)
    }
}
