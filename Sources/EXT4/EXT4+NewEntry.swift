/// One path of the file system `EXT4Formatter` writes.
public struct EXT4NewEntry {
    /// Path components from the root (`[]` is the root directory).
    public var components: [[UInt8]]
    public var metadata: EXT4Metadata
    /// Content of a regular file (nil: empty file).
    public var content: (any EXT4FileContent)?
    /// Target of a symbolic link.
    public var symlinkTarget: [UInt8]?
    /// Entries with the same key share one inode (hard links); the first in path order
    /// supplies metadata and content. Directories cannot be hard links.
    public var hardLinkKey: String?

    public init(components: [[UInt8]], metadata: EXT4Metadata, content: (any EXT4FileContent)? = nil,
                symlinkTarget: [UInt8]? = nil, hardLinkKey: String? = nil) {
        self.components = components
        self.metadata = metadata
        self.content = content
        self.symlinkTarget = symlinkTarget
        self.hardLinkKey = hardLinkKey
    }

    /// `path` like `/a/b`.
    public init(path: String, metadata: EXT4Metadata, content: (any EXT4FileContent)? = nil,
                symlinkTarget: [UInt8]? = nil, hardLinkKey: String? = nil) {
        self.init(components: ext4PathComponents(path), metadata: metadata, content: content,
                  symlinkTarget: symlinkTarget, hardLinkKey: hardLinkKey)
    }

    /// Carries an entry of an existing file system over unchanged: metadata, times, xattrs,
    /// symlink target, content (read from `reader` when written) and hard links.
    public init(carryingOver entry: EXT4Entry, from reader: EXT4Reader) {
        var content: (any EXT4FileContent)?
        if entry.metadata.type == .regular, entry.size > 0 {
            content = EXT4ReaderFile(reader: reader, inodeNumber: entry.inodeNumber, size: entry.size)
        }
        let shared = entry.metadata.type != .directory && entry.linkCount > 1
        self.init(components: entry.components, metadata: entry.metadata, content: content,
                  symlinkTarget: entry.symlinkTarget, hardLinkKey: shared ? "ext4-inode:\(entry.inodeNumber)" : nil)
    }

    public var path: String { ext4PathString(components) }
}
