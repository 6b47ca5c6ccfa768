#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CVMSupport

/// The files opened so far along a chain of qcow2 backing files, so that a loop or an
/// over-long chain is refused instead of recursing.
struct QCOW2BackingChain {
    static let maxDepth = 8

    struct FileID: Equatable {
        let device: UInt64
        let inode: UInt64
    }

    /// Backing files between the top image and the one being opened.
    var depth = 0
    var files: [FileID] = []

    /// The identity of an open file, or of `path` when the source is not a file.
    static func identity(of source: ByteSource, path: String) -> FileID? {
        if let file = source as? FileByteSource, let id = file.file.identity() {
            return FileID(device: id.dev, inode: id.ino)
        }
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }
}

extension QCOW2Reader {
    /// Opens the backing file `name` of the image at `imagePath`.
    ///
    /// A relative name is relative to the image's folder, as in QEMU. The format comes from
    /// the backing-format header extension when present (a backing file declared raw is read
    /// as raw whatever its content, so a guest cannot make it look like another format);
    /// otherwise it is detected from the content.
    static func openBacking(name: String, declaredFormat: String?, imagePath: String,
                            chain: QCOW2BackingChain) throws -> DiskReader {
        if name.hasPrefix("json:") {
            throw CVMError.unsupported("\(imagePath): the backing file is given as a QEMU json: specification, which is not supported; expected a file name")
        }
        let path = resolve(name, relativeTo: imagePath)
        var next = chain
        next.depth += 1
        guard next.depth <= QCOW2BackingChain.maxDepth else {
            throw CVMError.invalid("\(imagePath): the chain of backing files is deeper than \(QCOW2BackingChain.maxDepth) files (at \(path)); refusing to follow it further")
        }
        do {
            let source = try FileByteSource(path: path)
            if let id = QCOW2BackingChain.identity(of: source, path: path) {
                guard !next.files.contains(id) else {
                    throw CVMError.invalid("\(imagePath): backing file \(path) is already in the chain of backing files; the chain is a loop")
                }
                next.files.append(id)
            }
            if declaredFormat == "raw" {
                return RawReader(source: source)
            }
            let detected = try DiskImageFile.detect(source)
            switch declaredFormat {
            case nil, "qcow2", "vpc", "vmdk":
                if let declaredFormat, !detectedFormatMatches(declaredFormat, detected) {
                    throw CVMError.invalid("\(imagePath): backing file \(path) is declared as \(declaredFormat) but its content is \(detected.rawValue)")
                }
            case let other?:
                throw CVMError.unsupported("\(imagePath): backing file \(path) has format '\(other)', which is not supported; expected raw, qcow2, vpc or vmdk")
            }
            if detected == .qcow2 {
                return try QCOW2Reader(path: path, source: source, chain: next)
            }
            return try DiskImageFile.open(source: source, path: path)
        } catch let e as CVMError {
            // Keep the top image in the message: the user named that file, not the backing one.
            if e.message.hasPrefix(imagePath + ":") { throw e }
            let detail = e.message.hasPrefix(path + ": ") ? String(e.message.dropFirst(path.count + 2)) : e.message
            throw CVMError(e.kind, "\(imagePath): backing file \(path): \(detail)")
        }
    }

    /// `name` as a path: absolute names stay, relative ones join the image's folder.
    static func resolve(_ name: String, relativeTo imagePath: String) -> String {
        if name.hasPrefix("/") { return name }
        guard let slash = imagePath.lastIndex(of: "/") else { return name }
        return String(imagePath[...slash]) + name
    }

    private static func detectedFormatMatches(_ declared: String, _ detected: DiskFormat) -> Bool {
        switch declared {
        case "qcow2": return detected == .qcow2
        case "vpc": return detected == .vhdFixed || detected == .vhdDynamic
        case "vmdk": return detected == .vmdkStream
        default: return false
        }
    }
}
