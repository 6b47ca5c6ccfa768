/// Kinds of inodes the reader reports and the formatter writes.
public enum EXT4FileType: String, Sendable, Equatable {
    case regular, directory, symlink, characterDevice, blockDevice, fifo, socket

    /// The `S_IFMT` bits of `i_mode`.
    var modeBits: UInt16 {
        switch self {
        case .fifo: return 0o010000
        case .characterDevice: return 0o020000
        case .directory: return 0o040000
        case .blockDevice: return 0o060000
        case .regular: return 0o100000
        case .symlink: return 0o120000
        case .socket: return 0o140000
        }
    }

    init?(modeBits: UInt16) {
        switch modeBits & 0o170000 {
        case 0o010000: self = .fifo
        case 0o020000: self = .characterDevice
        case 0o040000: self = .directory
        case 0o060000: self = .blockDevice
        case 0o100000: self = .regular
        case 0o120000: self = .symlink
        case 0o140000: self = .socket
        default: return nil
        }
    }

    /// The directory-entry file type byte (`filetype` feature).
    var direntType: UInt8 {
        switch self {
        case .regular: return 1
        case .directory: return 2
        case .characterDevice: return 3
        case .blockDevice: return 4
        case .fifo: return 5
        case .socket: return 6
        case .symlink: return 7
        }
    }
}

/// A time as ext4 stores it: seconds since the Unix epoch (34 bits, signed base) and nanoseconds.
public struct EXT4Timestamp: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var seconds: Int64
    public var nanoseconds: UInt32

    public init(seconds: Int64, nanoseconds: UInt32 = 0) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    public var description: String { "\(seconds).\(nanoseconds)" }

    /// Decodes a 32-bit seconds field and its `_extra` field (2 epoch bits + 30 bits of ns).
    init(base: UInt32, extra: UInt32?) {
        var s = Int64(Int32(bitPattern: base))
        var ns: UInt32 = 0
        if let extra {
            s += Int64(extra & 3) << 32
            ns = min(extra >> 2, 999_999_999)
        }
        self.init(seconds: s, nanoseconds: ns)
    }

    /// Seconds clamped to what ext4 can store: 1901-12-13 to 2446-05-10.
    var storableSeconds: Int64 { min(max(seconds, -(1 << 31)), (1 << 34) - (1 << 31) - 1) }

    /// The 32-bit seconds field.
    var base: UInt32 { UInt32(truncatingIfNeeded: storableSeconds) }

    /// The `_extra` field: epoch bits that extend `base` beyond 2038, and nanoseconds.
    var extra: UInt32 {
        let epoch = UInt32(truncatingIfNeeded: (storableSeconds - Int64(Int32(bitPattern: base))) >> 32) & 3
        return epoch | (min(nanoseconds, 999_999_999) << 2)
    }
}

/// The four inode times.
public struct EXT4Times: Sendable, Equatable {
    public var access: EXT4Timestamp
    public var modification: EXT4Timestamp
    public var change: EXT4Timestamp
    public var creation: EXT4Timestamp

    public init(access: EXT4Timestamp, modification: EXT4Timestamp, change: EXT4Timestamp, creation: EXT4Timestamp) {
        self.access = access
        self.modification = modification
        self.change = change
        self.creation = creation
    }

    /// All four times set to `t`.
    public init(all t: EXT4Timestamp) {
        self.init(access: t, modification: t, change: t, creation: t)
    }
}

/// One extended attribute as ext4 stores it: a name-prefix index, the rest of the name, and the
/// raw value (POSIX ACLs stay in ext4's own encoding, so they carry over unchanged).
public struct EXT4Xattr: Sendable, Equatable, Hashable {
    public var nameIndex: UInt8
    public var name: [UInt8]
    public var value: [UInt8]

    public init(nameIndex: UInt8, name: [UInt8], value: [UInt8]) {
        self.nameIndex = nameIndex
        self.name = name
        self.value = value
    }

    /// Builds an attribute from its full name (`user.foo`, `security.selinux`, ...).
    public init(fullName: String, value: [UInt8]) {
        let bytes = Array(fullName.utf8)
        for (index, prefix) in EXT4Xattr.prefixes where !prefix.isEmpty {
            let p = Array(prefix.utf8)
            // The ACL names are whole names, the others are prefixes of a longer name.
            let whole = index == 2 || index == 3
            if whole ? bytes == p : (bytes.count > p.count && bytes.starts(with: p)) {
                self.init(nameIndex: index, name: Array(bytes.dropFirst(p.count)), value: value)
                return
            }
        }
        self.init(nameIndex: 0, name: bytes, value: value)
    }

    static let prefixes: [(UInt8, String)] = [
        (2, "system.posix_acl_access"), (3, "system.posix_acl_default"),
        (1, "user."), (4, "trusted."), (6, "security."), (7, "system."), (8, "system.richacl"),
    ]

    /// The full attribute name, e.g. `user.foo`.
    public var fullName: String {
        let prefix = EXT4Xattr.prefixes.first { $0.0 == nameIndex }?.1 ?? ""
        return prefix + String(decoding: name, as: UTF8.self)
    }
}

/// Metadata of one inode, shared by what the reader reports and what the formatter writes.
public struct EXT4Metadata: Sendable, Equatable {
    public var type: EXT4FileType
    /// Permission bits including setuid/setgid/sticky (the low 12 bits of `st_mode`).
    public var permissions: UInt16
    public var uid: UInt32
    public var gid: UInt32
    public var times: EXT4Times
    public var xattrs: [EXT4Xattr]
    /// User-visible inode flags (immutable, append-only, nodump, noatime, ...); layout flags
    /// such as extents or inline data are the formatter's choice and are ignored here.
    public var flags: UInt32
    /// Device number for character and block devices.
    public var deviceMajor: UInt32
    public var deviceMinor: UInt32

    public init(type: EXT4FileType, permissions: UInt16, uid: UInt32 = 0, gid: UInt32 = 0,
                times: EXT4Times, xattrs: [EXT4Xattr] = [], flags: UInt32 = 0,
                deviceMajor: UInt32 = 0, deviceMinor: UInt32 = 0) {
        self.type = type
        self.permissions = permissions & 0o7777
        self.uid = uid
        self.gid = gid
        self.times = times
        self.xattrs = xattrs
        self.flags = flags
        self.deviceMajor = deviceMajor
        self.deviceMinor = deviceMinor
    }

    /// Full `st_mode`: type bits and permissions.
    public var mode: UInt16 { type.modeBits | (permissions & 0o7777) }

    /// Inode flags a user can set with chattr and that mean the same on a new filesystem:
    /// secure-deletion, undelete, sync, immutable, append, nodump, noatime, dirsync, topdir,
    /// projinherit. Layout flags (extents, inline data, htree, huge file, EA inode) are excluded.
    public static let carriedFlags: UInt32 = 0x0000_00FB | 0x0001_0000 | 0x0002_0000 | 0x2000_0000
}

/// Splits `/a/b/c` into byte components (`[]` is the root).
public func ext4PathComponents(_ path: String) -> [[UInt8]] {
    path.split(separator: "/", omittingEmptySubsequences: true).map { Array($0.utf8) }
}

/// Joins byte components into `/a/b/c` (names that are not UTF-8 are shown with replacements).
public func ext4PathString(_ components: [[UInt8]]) -> String {
    components.isEmpty ? "/" : components.map { "/" + String(decoding: $0, as: UTF8.self) }.joined()
}
