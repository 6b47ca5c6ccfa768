import CVMSupport
import Foundation

/// The Secure Boot keys a confidential VM's firmware starts with, as DER X.509 certificates,
/// read from `--secure-boot-certs DIR`: `PK.crt`, `KEK.crt`, `db.crt` and any further `db*.crt`
/// (added to db in name order). Each file is PEM (one or more certificates) or DER, told apart
/// by content, not by name.
public struct SecureBootCerts: Sendable, Equatable {
    public var pk: [UInt8]
    public var kek: [[UInt8]]
    public var db: [[UInt8]]

    public init(pk: [UInt8], kek: [[UInt8]], db: [[UInt8]]) {
        self.pk = pk
        self.kek = kek
        self.db = db
    }

    public static func load(directory: String, flag: String = "--secure-boot-certs") throws -> SecureBootCerts {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw CVMError.usage("\(flag) \(directory): not a folder; expected one holding PK.crt, KEK.crt and db.crt")
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        func required(_ name: String) throws -> String {
            guard names.contains(name) else {
                throw CVMError.usage("\(flag) \(directory): \(name) is missing; expected PK.crt, KEK.crt and db.crt (PEM or DER)")
            }
            return directory + "/" + name
        }
        let pkList = try certificates(inFile: try required("PK.crt"))
        guard pkList.count == 1 else {
            throw CVMError.invalid("\(directory)/PK.crt: holds \(pkList.count) certificates; the platform key is exactly one")
        }
        let kek = try certificates(inFile: try required("KEK.crt"))
        var db = try certificates(inFile: try required("db.crt"))
        for extra in names.filter({ $0 != "db.crt" && $0.hasPrefix("db") && $0.hasSuffix(".crt") }).sorted() {
            db += try certificates(inFile: directory + "/" + extra)
        }
        return SecureBootCerts(pk: pkList[0], kek: kek, db: db)
    }

    /// The DER certificates in a PEM or DER file.
    public static func certificates(inFile path: String) throws -> [[UInt8]] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CVMError.io("\(path): cannot read it")
        }
        return try certificates(in: Array(data), name: path)
    }

    public static func certificates(in bytes: [UInt8], name: String) throws -> [[UInt8]] {
        guard !bytes.isEmpty else { throw CVMError.invalid("\(name): empty; expected an X.509 certificate (PEM or DER)") }
        if bytes.first == 0x30 {
            try checkDER(bytes, name: name)
            return [bytes]
        }
        let text = String(decoding: bytes, as: UTF8.self)
        let begin = "-----BEGIN CERTIFICATE-----", end = "-----END CERTIFICATE-----"
        var out: [[UInt8]] = []
        var rest = text[...]
        while let b = rest.range(of: begin) {
            guard let e = rest.range(of: end, range: b.upperBound..<rest.endIndex) else {
                throw CVMError.invalid("\(name): a PEM certificate has no END line")
            }
            let body = rest[b.upperBound..<e.lowerBound].filter { !$0.isWhitespace }
            guard let der = Data(base64Encoded: String(body)) else {
                throw CVMError.invalid("\(name): certificate \(out.count + 1) is not valid base64")
            }
            try checkDER(Array(der), name: "\(name) (certificate \(out.count + 1))")
            out.append(Array(der))
            rest = rest[e.upperBound...]
        }
        guard !out.isEmpty else {
            throw CVMError.invalid("\(name): neither a DER certificate nor PEM with '\(begin)'; expected an X.509 certificate")
        }
        return out
    }

    /// A DER certificate is one SEQUENCE whose length covers the whole file.
    static func checkDER(_ der: [UInt8], name: String) throws {
        func fail() -> CVMError { CVMError.invalid("\(name): not a DER X.509 certificate (a SEQUENCE spanning the file)") }
        guard der.count >= 4, der[0] == 0x30 else { throw fail() }
        var length = 0, header = 2
        if der[1] < 0x80 {
            length = Int(der[1])
        } else {
            let n = Int(der[1] & 0x7F)
            guard n >= 1, n <= 4, der.count >= 2 + n else { throw fail() }
            for i in 0..<n { length = length << 8 | Int(der[2 + i]) }
            header = 2 + n
        }
        guard header + length == der.count, der[header] == 0x30 else { throw fail() }
    }
}
