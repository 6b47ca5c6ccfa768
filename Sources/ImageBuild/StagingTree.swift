import CVMSupport
import Foundation

/// A folder being filled with the files of a future file system (root or initramfs).
/// Owners and times are not kept here: the packers (mksquashfs -all-root -all-time, the cpio
/// writer) set them, so only names, modes, contents and symlink targets matter.
struct StagingTree {
    let root: String

    init(root: String) throws {
        self.root = root
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    func path(_ relative: String) -> String { root + "/" + relative }

    func directory(_ relative: String, mode: Int = 0o755) throws {
        try FileManager.default.createDirectory(atPath: path(relative), withIntermediateDirectories: true)
        chmod(path(relative), mode_t(mode))
    }

    func file(_ relative: String, contents: String, mode: Int = 0o644) throws {
        try directory((relative as NSString).deletingLastPathComponent)
        guard FileManager.default.createFile(atPath: path(relative), contents: Data(contents.utf8)) else {
            throw CVMError.io("\(path(relative)): cannot write")
        }
        chmod(path(relative), mode_t(mode))
    }

    func symlink(_ relative: String, to target: String) throws {
        try directory((relative as NSString).deletingLastPathComponent)
        unlink(path(relative))
        guard Foundation.symlink(target, path(relative)) == 0 else {
            throw CVMError.io("\(path(relative)): cannot create symlink: \(errnoDescription())")
        }
    }

    /// Copies a host file (regular or symlink, kept as a link) to `relative`.
    func copy(from source: String, to relative: String, mode: Int? = nil) throws {
        try directory((relative as NSString).deletingLastPathComponent)
        var st = stat()
        guard lstat(source, &st) == 0 else { throw CVMError.io("\(source): cannot read: \(errnoDescription())") }
        if (st.st_mode & S_IFMT) == S_IFLNK {
            let target = try FileManager.default.destinationOfSymbolicLink(atPath: source)
            try symlink(relative, to: target)
            return
        }
        let dest = path(relative)
        unlink(dest)
        let data = try Data(contentsOf: URL(fileURLWithPath: source))
        guard FileManager.default.createFile(atPath: dest, contents: data) else {
            throw CVMError.io("\(dest): cannot write")
        }
        chmod(dest, mode_t(mode ?? Int(st.st_mode & 0o7777)))
    }

    /// Shared libraries of an unpacked package (`[usr/]lib/<triplet>/*.so*`, the dynamic
    /// loader in lib64/), copied to the same paths.
    func copySharedLibraries(of package: UnpackedPackage) throws {
        for dir in ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64"] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: package.root + "/" + dir)) ?? []
            for name in names.sorted() where name.contains(".so") {
                var st = stat()
                let source = package.root + "/" + dir + "/" + name
                guard lstat(source, &st) == 0, (st.st_mode & S_IFMT) != S_IFDIR else { continue }
                try copy(from: source, to: dir + "/" + name)
            }
        }
    }

    /// Programs in the package's sbin/ and bin/ folders.
    func copyPrograms(of package: UnpackedPackage) throws {
        for dir in ["sbin", "bin", "usr/sbin", "usr/bin"] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: package.root + "/" + dir)) ?? []
            for name in names.sorted() {
                try copy(from: package.root + "/" + dir + "/" + name, to: dir + "/" + name)
            }
        }
    }

    /// All files under the tree, sorted by path bytes: (relative path, lstat).
    func walk() throws -> [(path: String, st: stat)] {
        var out: [(String, stat)] = []
        func visit(_ relative: String) throws {
            let full = relative.isEmpty ? root : path(relative)
            let names = try FileManager.default.contentsOfDirectory(atPath: full)
            for name in names.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
                let rel = relative.isEmpty ? name : relative + "/" + name
                var st = stat()
                guard lstat(path(rel), &st) == 0 else { throw CVMError.io("\(path(rel)): cannot read") }
                out.append((rel, st))
                if (st.st_mode & S_IFMT) == S_IFDIR { try visit(rel) }
            }
        }
        try visit("")
        return out
    }
}

/// Writes an uncompressed `newc` cpio archive (what the kernel unpacks as an initramfs):
/// entries in path order, owner root, one fixed time, inode numbers in order, so the same tree
/// always gives the same bytes.
enum CPIOWriter {
    struct Node {
        var path: String
        var mode: UInt32
        var data: [UInt8] = []
        var rdevMajor: UInt32 = 0
        var rdevMinor: UInt32 = 0
    }

    static func archive(tree: StagingTree, extra: [Node], mtime: UInt32) throws -> [UInt8] {
        var nodes: [Node] = []
        for (path, st) in try tree.walk() {
            var node = Node(path: path, mode: UInt32(st.st_mode))
            switch st.st_mode & S_IFMT {
            case S_IFREG: node.data = Array(try Data(contentsOf: URL(fileURLWithPath: tree.path(path))))
            case S_IFLNK: node.data = Array(try FileManager.default.destinationOfSymbolicLink(atPath: tree.path(path)).utf8)
            case S_IFDIR: break
            default: throw CVMError.unsupported("\(tree.path(path)): only files, folders and symlinks go into the initramfs")
            }
            nodes.append(node)
        }
        nodes += extra
        nodes.sort { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
        var out: [UInt8] = []
        func pad4() { while out.count % 4 != 0 { out.append(0) } }
        func header(_ node: Node, ino: UInt32) {
            let fields: [UInt32] = [ino, node.mode, 0, 0, (node.mode & 0o170000) == 0o040000 ? 2 : 1, mtime,
                                    UInt32(node.data.count), 0, 0, node.rdevMajor, node.rdevMinor,
                                    UInt32(node.path.utf8.count + 1), 0]
            out += Array("070701".utf8)
            for f in fields {
                let hex = String(f, radix: 16, uppercase: true)
                out += Array((String(repeating: "0", count: 8 - hex.count) + hex).utf8)
            }
            out += Array(node.path.utf8) + [0]
            pad4()
            out += node.data
            pad4()
        }
        for (i, node) in nodes.enumerated() { header(node, ino: UInt32(i + 1)) }
        header(Node(path: "TRAILER!!!", mode: 0), ino: 0)
        return out
    }
}
