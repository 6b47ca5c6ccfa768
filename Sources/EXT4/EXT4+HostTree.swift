#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CVMSupport

/// Turns a folder on the host into entries for `EXT4Formatter`.
public enum EXT4HostTree {
    /// Entries for `folder` placed at `destination` (e.g. `/workload`), the folder itself
    /// included. Modes and symlink targets are kept; owners become `uid`/`gid` and every time
    /// becomes `time`, so the result does not depend on who copied the folder or when.
    /// Files with several links inside the folder stay hard links. Extended attributes of
    /// host files are not copied.
    public static func entries(folder: String, destination: [[UInt8]], uid: UInt32 = 0, gid: UInt32 = 0,
                               time: EXT4Timestamp) throws -> [EXT4NewEntry] {
        var out: [EXT4NewEntry] = []
        var st = stat()
        // The folder itself may be a symlink to a directory; inside it, symlinks are kept as links.
        guard stat(folder, &st) == 0 else { throw CVMError.io("\(folder): cannot read: \(errnoDescription())") }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw CVMError.usage("\(folder): is not a directory") }
        try visit(path: folder, components: destination, st: st, uid: uid, gid: gid, time: time, into: &out)
        return out
    }

    private static func visit(path: String, components: [[UInt8]], st: stat, uid: UInt32, gid: UInt32,
                              time: EXT4Timestamp, into out: inout [EXT4NewEntry]) throws {
        let mode = UInt32(st.st_mode)
        let times = EXT4Times(all: time)
        let permissions = UInt16(truncatingIfNeeded: mode & 0o7777)
        func metadata(_ type: EXT4FileType) -> EXT4Metadata {
            EXT4Metadata(type: type, permissions: permissions, uid: uid, gid: gid, times: times)
        }
        let linkKey = st.st_nlink > 1 ? "host:\(st.st_dev):\(st.st_ino)" : nil
        switch mode & UInt32(S_IFMT) {
        case UInt32(S_IFDIR):
            out.append(EXT4NewEntry(components: components, metadata: metadata(.directory)))
            for name in try listDirectory(path) {
                let child = path + "/" + name
                var cst = stat()
                guard lstat(child, &cst) == 0 else { throw CVMError.io("\(child): cannot read: \(errnoDescription())") }
                try visit(path: child, components: components + [Array(name.utf8)], st: cst, uid: uid, gid: gid,
                          time: time, into: &out)
            }
        case UInt32(S_IFREG):
            let size = UInt64(st.st_size)
            out.append(EXT4NewEntry(components: components, metadata: metadata(.regular),
                                    content: size > 0 ? EXT4HostFile(path: path, size: size) : nil, hardLinkKey: linkKey))
        case UInt32(S_IFLNK):
            var buffer = [Int8](repeating: 0, count: 4097)
            let n = readlink(path, &buffer, 4096)
            guard n > 0 else { throw CVMError.io("\(path): cannot read the symlink: \(errnoDescription())") }
            let target = buffer.prefix(n).map { UInt8(bitPattern: $0) }
            out.append(EXT4NewEntry(components: components, metadata: metadata(.symlink), symlinkTarget: target,
                                    hardLinkKey: linkKey))
        case UInt32(S_IFIFO):
            out.append(EXT4NewEntry(components: components, metadata: metadata(.fifo), hardLinkKey: linkKey))
        case UInt32(S_IFSOCK):
            out.append(EXT4NewEntry(components: components, metadata: metadata(.socket), hardLinkKey: linkKey))
        case UInt32(S_IFCHR), UInt32(S_IFBLK):
            let dev = UInt64(st.st_rdev)
            var md = metadata((mode & UInt32(S_IFMT)) == UInt32(S_IFCHR) ? .characterDevice : .blockDevice)
            // glibc's encoding of dev_t (gnu_dev_major/minor).
            md.deviceMajor = UInt32(truncatingIfNeeded: ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF))
            md.deviceMinor = UInt32(truncatingIfNeeded: (dev & 0xFF) | ((dev >> 12) & ~0xFF))
            out.append(EXT4NewEntry(components: components, metadata: md, hardLinkKey: linkKey))
        default:
            throw CVMError.unsupported("\(path): unknown file type 0o\(String(mode & UInt32(S_IFMT), radix: 8))")
        }
    }

    private static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw CVMError.io("\(path): cannot list: \(errnoDescription())") }
        defer { closedir(dir) }
        var names: [String] = []
        while let e = readdir(dir) {
            let bytes = withUnsafeBytes(of: e.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            guard let name = String(validating: bytes, as: UTF8.self) else {
                throw CVMError.unsupported("\(path): a name in this folder is not valid UTF-8: \(String(decoding: bytes, as: UTF8.self))")
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}
