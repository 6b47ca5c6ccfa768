import CVMSupport
import Foundation

/// The files of a workload folder, listed deterministically, with symlinks checked.
public struct WorkloadFolder: Sendable {
    public enum Kind: Sendable, Equatable {
        case file(size: UInt64)
        case directory
        case symlink(target: String)
    }

    public struct Entry: Sendable, Equatable {
        /// Path relative to the folder, `/`-separated, no leading `./`.
        public let path: String
        public let kind: Kind
        /// Permission bits (and setuid/setgid/sticky).
        public let mode: UInt16

        public init(path: String, kind: Kind, mode: UInt16) {
            self.path = path
            self.kind = kind
            self.mode = mode
        }
    }

    public let root: URL
    /// Name shown in messages (the folder as the user gave it, e.g. `workload`).
    public let displayName: String
    /// All entries, sorted by path bytes (UTF-8) so every listing is reproducible.
    public let entries: [Entry]

    public init(path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
            throw CVMError.usage("\(path): workload folder not found; expected a folder with docker-compose.yml")
        }
        root = URL(fileURLWithPath: path, isDirectory: true).standardizedFileURL
        displayName = path.hasSuffix("/") && path.count > 1 ? String(path.dropLast()) : path
        var list: [Entry] = []
        try Self.scan(root.path, relative: "", into: &list)
        entries = list.sorted { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
    }

    private static func scan(_ dir: String, relative: String, into list: inout [Entry]) throws {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir) } catch {
            throw CVMError.io("\(dir): cannot list the folder: \(error.localizedDescription)")
        }
        for name in names {
            let full = dir + "/" + name
            let rel = relative.isEmpty ? name : relative + "/" + name
            var st = stat()
            guard lstat(full, &st) == 0 else {
                throw CVMError.io("\(full): cannot stat: \(errnoDescription())")
            }
            let mode = UInt16(truncatingIfNeeded: st.st_mode & 0o7777)
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                list.append(Entry(path: rel, kind: .directory, mode: mode))
                try scan(full, relative: rel, into: &list)
            case S_IFLNK:
                let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: full)) ?? ""
                list.append(Entry(path: rel, kind: .symlink(target: target), mode: mode))
            case S_IFREG:
                list.append(Entry(path: rel, kind: .file(size: UInt64(st.st_size)), mode: mode))
            default:
                throw CVMError.invalid("\(full): not a regular file, folder or symlink; a workload holds only those")
            }
        }
    }

    public func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    public func entry(_ relative: String) -> Entry? { entries.first { $0.path == relative } }

    /// Display path for messages: `workload/config/x`.
    public func display(_ relative: String) -> String { displayName + "/" + relative }

    /// Whether a symlink at `path` with `target` resolves inside the folder (lexically: the
    /// guest resolves it in its own filesystem, where only the folder's own files exist).
    public static func symlinkStaysInside(path: String, target: String) -> Bool {
        if target.hasPrefix("/") { return false }
        var parts = path.split(separator: "/").dropLast().map(String.init)
        for comp in target.split(separator: "/", omittingEmptySubsequences: true) {
            if comp == "." { continue }
            if comp == ".." {
                if parts.isEmpty { return false }
                parts.removeLast()
            } else {
                parts.append(String(comp))
            }
        }
        return true
    }
}
