import CVMSupport
import Foundation

/// Recognises container image archives: `docker save` (manifest.json at the root) and OCI
/// image layouts (oci-layout + index.json). Only member names are read, never contents.
enum ImageArchiveCheck {
    static func run(_ folder: WorkloadFolder, into out: inout [WorkloadDiagnostic]) {
        for entry in folder.entries where !entry.path.contains("/") && entry.path.hasSuffix(".tar") {
            let file = folder.display(entry.path)
            guard case .file = entry.kind else {
                out.append(.init(.error, file: file, "must be a regular file (a docker-save or OCI image archive)"))
                continue
            }
            do {
                let names = Set(try memberNames(folder.url(entry.path).path))
                let isDockerSave = names.contains("manifest.json")
                let isOCI = names.contains("oci-layout") && names.contains("index.json")
                if !isDockerSave && !isOCI {
                    out.append(.init(.error, file: file, "is a tar archive but not a container image: expected manifest.json (docker save) or oci-layout + index.json (OCI) at its root"))
                }
            } catch let e as CVMError {
                out.append(.init(.error, file: file, "is not a container image archive: \(e.message)"))
            } catch {
                out.append(.init(.error, file: file, "is not a container image archive: \(error)"))
            }
        }
    }

    /// Names of the members of an uncompressed tar (ustar, GNU long names, PAX paths),
    /// normalised without a leading `./`.
    static func memberNames(_ path: String) throws -> [String] {
        let file = try FileDescriptor.openForReading(path)
        let size = try file.size()
        var names: [String] = []
        var offset: UInt64 = 0
        var pendingName: String?
        var header = [UInt8](repeating: 0, count: 512)
        while offset + 512 <= size, names.count < 1_000_000 {
            try header.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
            if header.allSatisfy({ $0 == 0 }) { break }
            guard checksumMatches(header) else {
                throw CVMError.invalid("tar header checksum mismatch at byte \(offset)")
            }
            let memberSize = try parseSize(header, at: offset)
            let dataStart = offset + 512
            let padded = (memberSize + 511) / 512 * 512
            guard dataStart <= size, padded <= size - dataStart else {
                throw CVMError.invalid("tar member at byte \(offset) runs past the end of the file (truncated)")
            }
            let type = header[156]
            if type == UInt8(ascii: "L") || type == UInt8(ascii: "x") {
                let n = Int(min(memberSize, 1 << 16))
                let data = try file.read(count: n, at: dataStart)
                pendingName = type == UInt8(ascii: "L") ? cString(data[...]) : paxPath(data)
            } else if type != UInt8(ascii: "g") {
                var name = pendingName ?? {
                    let base = cString(header[0..<100])
                    let magic = header[257..<262]
                    let prefix = Array(magic) == Array("ustar".utf8) ? cString(header[345..<500]) : ""
                    return prefix.isEmpty ? base : prefix + "/" + base
                }()
                pendingName = nil
                while name.hasPrefix("./") { name.removeFirst(2) }
                names.append(name)
            }
            offset = dataStart + padded
        }
        if names.isEmpty { throw CVMError.invalid("no tar members found") }
        return names
    }

    static func checksumMatches(_ h: [UInt8]) -> Bool {
        var sum = 0
        for (i, b) in h.enumerated() { sum += (148..<156).contains(i) ? 32 : Int(b) }
        let field = cString(h[148..<156]).trimmingCharacters(in: .whitespaces)
        return Int(field, radix: 8) == sum
    }

    static func parseSize(_ h: [UInt8], at offset: UInt64) throws -> UInt64 {
        if h[124] & 0x80 != 0 {   // GNU base-256
            var v: UInt64 = 0
            for b in h[125..<136] {
                guard v >> 56 == 0 else { throw CVMError.invalid("tar member size at byte \(offset) is too large") }
                v = v << 8 | UInt64(b)
            }
            return v
        }
        let text = cString(h[124..<136]).trimmingCharacters(in: .whitespaces)
        guard let v = UInt64(text.isEmpty ? "0" : text, radix: 8) else {
            throw CVMError.invalid("tar member size at byte \(offset) is not an octal number")
        }
        return v
    }

    static func cString(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// The `path=` record of a PAX extended header.
    static func paxPath(_ data: [UInt8]) -> String? {
        let text = String(decoding: data, as: UTF8.self)
        for line in text.split(separator: "\n") {
            if let r = line.range(of: " path=") { return String(line[r.upperBound...]) }
        }
        return nil
    }
}

/// Private keys under `config/` would be measured and published with the golden measurement.
enum PrivateKeyCheck {
    static func run(_ folder: WorkloadFolder, into out: inout [WorkloadDiagnostic]) {
        for entry in folder.entries where entry.path.hasPrefix("config/") {
            guard case .file(let size) = entry.kind, size > 0 else { continue }
            let name = (entry.path as NSString).lastPathComponent
            var suspicious = ["id_rsa", "id_ecdsa", "id_ed25519"].contains(name) || name.hasSuffix(".key")
            if !suspicious, let file = try? FileDescriptor.openForReading(folder.url(entry.path).path),
               let head = try? file.read(count: Int(min(size, 64 * 1024)), at: 0) {
                let text = String(decoding: head, as: UTF8.self)
                suspicious = text.contains("PRIVATE KEY-----")
            }
            if suspicious {
                out.append(.init(.warning, file: folder.display(entry.path),
                                 "looks like a private key; files under config/ are measured and published — put keys in secrets/"))
            }
        }
    }
}
