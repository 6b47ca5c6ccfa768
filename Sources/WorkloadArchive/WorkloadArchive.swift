#if canImport(Glibc)
import Glibc
#endif
import CVMSupport
import CZlib
import Foundation

/// A workload folder as a tar.gz (the body of the agent's `POST /update-workload`): the archive's
/// root is the folder's content. Reading is strict: regular files, directories and symlinks only;
/// no absolute paths, no `..`; sizes bounded — the archive comes from the network.
public enum WorkloadArchive {
    /// The agent's limits for an update (docs/agent-api.md); the host checks them before sending.
    public static let maxCompressedBytes = 64 << 20
    public static let maxUnpackedBytes = 256 << 20

    public struct Entry: Sendable, Equatable {
        public enum Kind: Sendable, Equatable { case file([UInt8]), directory, symlink(String) }
        public let path: String
        public let kind: Kind
    }

    /// gunzip of `bytes`, refusing more than `limit` decompressed bytes.
    public static func gunzip(_ bytes: [UInt8], limit: Int) throws -> [UInt8] {
        var stream = z_stream()
        guard inflateInit2_(&stream, 16 + MAX_WBITS, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw CVMError.io("cannot start gzip decompression")
        }
        defer { inflateEnd(&stream) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var input = bytes
        return try input.withUnsafeMutableBufferPointer { inBuf in
            stream.next_in = inBuf.baseAddress
            stream.avail_in = uInt(inBuf.count)
            while true {
                let (rc, produced) = chunk.withUnsafeMutableBufferPointer { outBuf -> (Int32, Int) in
                    stream.next_out = outBuf.baseAddress
                    stream.avail_out = uInt(outBuf.count)
                    let rc = inflate(&stream, Z_NO_FLUSH)
                    return (rc, outBuf.count - Int(stream.avail_out))
                }
                out += chunk.prefix(produced)
                guard out.count <= limit else { throw CVMError.usage("the workload archive decompresses to more than \(limit) bytes") }
                if rc == Z_STREAM_END { return out }
                guard rc == Z_OK else { throw CVMError.usage("the body is not valid gzip data (zlib error \(rc))") }
                if stream.avail_in == 0 && produced == 0 { throw CVMError.usage("the gzip data ends early") }
            }
        }
    }

    /// The entries of a ustar/pax/GNU tar, validated; "./" prefixes removed, the root itself skipped.
    public static func entries(tar bytes: [UInt8]) throws -> [Entry] {
        var out: [Entry] = []
        var offset = 0
        var longName: String?, longLink: String?
        var symlinks: Set<String> = []
        while offset + 512 <= bytes.count {
            let header = Array(bytes[offset..<offset + 512])
            if header.allSatisfy({ $0 == 0 }) { return out }
            var sum = 0
            for (i, b) in header.enumerated() { sum += (148..<156).contains(i) ? 32 : Int(b) }
            guard let recorded = octal(header[148..<156]), recorded == sum else {
                throw CVMError.usage("tar: bad header checksum at offset \(offset)")
            }
            guard let size = octal(header[124..<136]) else { throw CVMError.usage("tar: bad size field at offset \(offset)") }
            let dataStart = offset + 512
            guard size <= bytes.count - dataStart else { throw CVMError.usage("tar: the archive ends inside an entry") }
            let data = Array(bytes[dataStart..<dataStart + size])
            offset = dataStart + (size + 511) / 512 * 512
            let type = header[156]
            switch type {
            case UInt8(ascii: "L"): longName = cString(data[...]); continue
            case UInt8(ascii: "K"): longLink = cString(data[...]); continue
            case UInt8(ascii: "x"):
                let pax = paxRecords(data)
                if let p = pax["path"] { longName = p }
                if let l = pax["linkpath"] { longLink = l }
                continue
            case UInt8(ascii: "g"): continue
            default: break
            }
            var name = cString(header[0..<100])
            if header[257..<262].elementsEqual(Array("ustar".utf8)) {
                let prefix = cString(header[345..<500])
                if !prefix.isEmpty { name = prefix + "/" + name }
            }
            if let l = longName { name = l }
            let link = longLink ?? cString(header[157..<257])
            longName = nil; longLink = nil
            guard let path = try validatedPath(name) else { continue }
            // Nothing may be written through (or over) a symlink the archive made: that is how a
            // chain of "inside" links reaches outside.
            let components = path.split(separator: "/")
            for n in 1...components.count where symlinks.contains(components.prefix(n).joined(separator: "/")) {
                throw CVMError.usage("tar: \(path) goes through the symlink \(components.prefix(n).joined(separator: "/")) of the same archive")
            }
            switch type {
            case 0, UInt8(ascii: "0"), UInt8(ascii: "7"): out.append(Entry(path: path, kind: .file(data)))
            case UInt8(ascii: "5"): out.append(Entry(path: path, kind: .directory))
            case UInt8(ascii: "2"):
                guard symlinkStaysInside(path: path, target: link) else {
                    throw CVMError.usage("tar: \(path) is a symlink to '\(link)', outside the workload folder")
                }
                out.append(Entry(path: path, kind: .symlink(link)))
                symlinks.insert(path)
            default:
                throw CVMError.usage("tar: \(path) is neither a regular file, a directory nor a symlink (type '\(Character(UnicodeScalar(type)))')")
            }
        }
        throw CVMError.usage("tar: the archive has no end-of-archive blocks")
    }

    /// "./a/b" → "a/b"; "." or "./" → nil (the root); absolute or `..` → error.
    static func validatedPath(_ raw: String) throws -> String? {
        guard !raw.hasPrefix("/") else { throw CVMError.usage("tar: absolute path '\(raw)' (paths are relative to the workload folder)") }
        let parts = raw.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
        guard !parts.contains("..") else { throw CVMError.usage("tar: path '\(raw)' leaves the workload folder") }
        return parts.isEmpty ? nil : parts.joined(separator: "/")
    }

    /// Lexically inside the folder (as WorkloadFolder.symlinkStaysInside, which the caller's
    /// WorkloadCheck applies again on the written folder).
    static func symlinkStaysInside(path: String, target: String) -> Bool {
        if target.hasPrefix("/") || target.isEmpty { return false }
        var depth = path.split(separator: "/").count - 1
        for comp in target.split(separator: "/") where comp != "." {
            depth += comp == ".." ? -1 : 1
            if depth < 0 { return false }
        }
        return true
    }

    static func octal(_ field: ArraySlice<UInt8>) -> Int? {
        let text = String(decoding: field.prefix { $0 != 0 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        if text.isEmpty { return 0 }
        guard let v = Int(text, radix: 8), v >= 0 else { return nil }
        return v
    }

    static func cString(_ field: ArraySlice<UInt8>) -> String { String(decoding: field.prefix { $0 != 0 }, as: UTF8.self) }

    /// pax extended header records: "<len> key=value\n".
    static func paxRecords(_ data: [UInt8]) -> [String: String] {
        var out: [String: String] = [:]
        var i = 0
        while i < data.count {
            guard let space = data[i...].firstIndex(of: 32), let len = Int(String(decoding: data[i..<space], as: UTF8.self)),
                  len > 0, i + len <= data.count else { break }
            let record = String(decoding: data[(space + 1)..<(i + len - 1)], as: UTF8.self)
            if let eq = record.firstIndex(of: "=") { out[String(record[..<eq])] = String(record[record.index(after: eq)...]) }
            i += len
        }
        return out
    }

    /// Writes `entries` under `folder` (created; must not exist): directories 0755, files 0644.
    public static func write(_ entries: [Entry], to folder: String) throws {
        let fm = FileManager.default
        guard !fm.fileExists(atPath: folder) else { throw CVMError.io("\(folder) already exists") }
        try fm.createDirectory(atPath: folder, withIntermediateDirectories: false)
        for entry in entries {
            let full = folder + "/" + entry.path
            let parent = (full as NSString).deletingLastPathComponent
            try fm.createDirectory(atPath: parent, withIntermediateDirectories: true)
            switch entry.kind {
            case .directory:
                if !fm.fileExists(atPath: full) { try fm.createDirectory(atPath: full, withIntermediateDirectories: true) }
            case .file(let bytes):
                guard fm.createFile(atPath: full, contents: Data(bytes), attributes: [.posixPermissions: 0o644]) else {
                    throw CVMError.io("cannot write \(full)")
                }
            case .symlink(let target):
                try fm.createSymbolicLink(atPath: full, withDestinationPath: target)
            }
        }
    }
}
