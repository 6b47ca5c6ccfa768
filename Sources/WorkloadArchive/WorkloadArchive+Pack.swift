import CVMSupport
import CZlib
import Foundation
import Workload

/// Packing for the host side of `POST /update-workload`: the folder's content as a pax tar,
/// gzip-compressed, reproducible (sorted entries, mtime 0, uid/gid 0, no names).
extension WorkloadArchive {
    public static func pack(_ folder: WorkloadFolder) throws -> [UInt8] {
        var tar: [UInt8] = []
        for entry in folder.entries {
            switch entry.kind {
            case .directory:
                tar += header(path: entry.path + "/", type: "5", size: 0, mode: entry.mode)
            case .symlink(let target):
                tar += header(path: entry.path, type: "2", size: 0, mode: 0o777, link: target)
            case .file:
                let data = try Data(contentsOf: folder.url(entry.path))
                tar += header(path: entry.path, type: "0", size: data.count, mode: entry.mode)
                tar += data
                tar += [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
            }
        }
        tar += [UInt8](repeating: 0, count: 1024)
        return try gzip(tar)
    }

    /// A ustar header, preceded by a pax header when the path or link does not fit.
    static func header(path: String, type: Character, size: Int, mode: UInt16, link: String = "") -> [UInt8] {
        var out: [UInt8] = []
        let pathBytes = Array(path.utf8), linkBytes = Array(link.utf8)
        if pathBytes.count > 100 || linkBytes.count > 100 {
            var records: [UInt8] = []
            if pathBytes.count > 100 { records += paxRecord("path", path) }
            if linkBytes.count > 100 { records += paxRecord("linkpath", link) }
            out += block(name: Array("PaxHeader".utf8), type: "x", size: records.count, mode: 0o644, link: [])
            out += records + [UInt8](repeating: 0, count: (512 - records.count % 512) % 512)
        }
        out += block(name: Array(pathBytes.prefix(100)), type: type, size: size, mode: mode, link: Array(linkBytes.prefix(100)))
        return out
    }

    static func paxRecord(_ key: String, _ value: String) -> [UInt8] {
        let body = " \(key)=\(value)\n"
        var length = body.utf8.count + 1
        while String(length).utf8.count + body.utf8.count != length { length += 1 }
        return Array((String(length) + body).utf8)
    }

    static func block(name: [UInt8], type: Character, size: Int, mode: UInt16, link: [UInt8]) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ bytes: [UInt8], _ at: Int) { for (i, b) in bytes.enumerated() { h[at + i] = b } }
        func octal(_ v: Int, width: Int) -> [UInt8] {
            let s = String(v, radix: 8)
            return Array((String(repeating: "0", count: max(0, width - 1 - s.count)) + s).utf8) + [0]
        }
        put(name, 0)
        put(octal(Int(mode & 0o7777), width: 8), 100)
        put(octal(0, width: 8), 108); put(octal(0, width: 8), 116)          // uid, gid
        put(octal(size, width: 12), 124); put(octal(0, width: 12), 136)     // size, mtime
        h[156] = type.asciiValue ?? UInt8(ascii: "0")
        put(link, 157)
        put(Array("ustar".utf8) + [0], 257); put(Array("00".utf8), 263)
        put([UInt8](repeating: 32, count: 8), 148)
        let sum = h.reduce(0) { $0 + Int($1) }
        put(octal(sum, width: 7) + [32], 148)
        return h
    }

    /// gzip (zlib's default level, header without name or time).
    public static func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
        var stream = z_stream()
        guard deflateInit2_(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY,
                            zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw CVMError.io("cannot start gzip compression")
        }
        defer { deflateEnd(&stream) }
        var input = bytes
        var out = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(bytes.count))) + 64)
        let produced: Int = try input.withUnsafeMutableBufferPointer { inBuf in
            try out.withUnsafeMutableBufferPointer { outBuf in
                stream.next_in = inBuf.baseAddress; stream.avail_in = uInt(inBuf.count)
                stream.next_out = outBuf.baseAddress; stream.avail_out = uInt(outBuf.count)
                guard deflate(&stream, Z_FINISH) == Z_STREAM_END else { throw CVMError.io("gzip compression did not finish") }
                return outBuf.count - Int(stream.avail_out)
            }
        }
        return Array(out.prefix(produced))
    }
}
