import CVMCrypto
import CVMSupport
import CZlib
import Deploy
import Foundation

/// RegisterImage's `UefiData`: AWS's UEFI variable store ("AMZNUEFI", version 0), the format
/// awslabs' `uefivars -o aws` reads and writes, holding PK, KEK and db as authenticated
/// non-volatile variables whose data are EFI_SIGNATURE_LISTs of X.509 certificates.
///
/// Layout (little-endian): magic `AMZNUEFI` (u64), CRC-32C (u32) over everything after it,
/// version 0 (u32), then a zlib stream of: variable count (u64), and per variable its name
/// (u64 length + UTF-8), data (u64 length + bytes), vendor GUID (16 bytes), attributes (u32)
/// and, for time-based authenticated ones, a timestamp (16 bytes) and digest (u64 length + 32
/// bytes) — all zero for keys set up front. The tool compresses with a preset dictionary; the
/// zlib header says whether one is needed, so a stream without it reads back the same.
public enum AWSUEFIData {
    static let magic: UInt64 = 0x4946_4555_4E5A_4D41   // "AMZNUEFI"
    /// NV | BS | RT | time-based authenticated write.
    static let authenticatedAttributes: UInt32 = 0x27
    static let globalVariableGUID = guid("8be4df61-93ca-11d2-aa0d-00e098032b8c")
    static let imageSecurityDatabaseGUID = guid("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
    static let certX509GUID = guid("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
    /// SignatureOwner of the entries we write.
    static let ownerGUID = guid("7b4c62a5-0c44-4e7d-9b34-6a1c2f3e8d11")
    /// AWS's limit on the base64 text.
    static let maximumLength = 64_000

    /// The base64 `UefiData` for these keys.
    public static func encode(_ certs: SecureBootCerts) throws -> String {
        let variables: [(String, [UInt8], [UInt8])] = [
            ("PK", signatureList([certs.pk]), globalVariableGUID),
            ("KEK", signatureList(certs.kek), globalVariableGUID),
            ("db", signatureList(certs.db), imageSecurityDatabaseGUID),
        ]
        var raw: [UInt8] = []
        append64(&raw, UInt64(variables.count))
        for (name, data, vendor) in variables {
            append64(&raw, UInt64(name.utf8.count)); raw += Array(name.utf8)
            append64(&raw, UInt64(data.count)); raw += data
            raw += vendor
            append32(&raw, authenticatedAttributes)
            raw += [UInt8](repeating: 0, count: 16)                 // timestamp: none
            append64(&raw, 32); raw += [UInt8](repeating: 0, count: 32)   // digest: none
        }
        var body: [UInt8] = []
        append32(&body, 0)                                          // version
        body += try zlibCompress(raw)
        var out: [UInt8] = []
        append64(&out, magic)
        append32(&out, crc32c(body))
        out += body
        let text = Data(out).base64EncodedString()
        guard text.count <= maximumLength else {
            throw CVMError.invalid("--secure-boot-certs: the UEFI variable store is \(text.count) base64 characters; AWS accepts at most \(maximumLength) (use fewer or smaller db certificates)")
        }
        return text
    }

    /// One EFI_SIGNATURE_LIST per certificate (their sizes differ): type X.509, list size,
    /// header size 0, signature size, then owner GUID + DER.
    static func signatureList(_ ders: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        for der in ders {
            let signatureSize = 16 + der.count
            out += certX509GUID
            append32(&out, UInt32(28 + signatureSize))
            append32(&out, 0)
            append32(&out, UInt32(signatureSize))
            out += ownerGUID
            out += der
        }
        return out
    }

    /// A GUID's wire form: the first three fields little-endian, the rest as written.
    static func guid(_ text: String) -> [UInt8] {
        let hex = text.replacingOccurrences(of: "-", with: "")
        var b: [UInt8] = stride(from: 0, to: 32, by: 2).map {
            UInt8(hex[hex.index(hex.startIndex, offsetBy: $0)..<hex.index(hex.startIndex, offsetBy: $0 + 2)], radix: 16)!
        }
        b[0..<4].reverse(); b[4..<6].reverse(); b[6..<8].reverse()
        return b
    }

    static func zlibCompress(_ input: [UInt8]) throws -> [UInt8] {
        var size = compressBound(uLong(input.count))
        var out = [UInt8](repeating: 0, count: Int(size))
        let status = out.withUnsafeMutableBufferPointer { o in
            input.withUnsafeBufferPointer { i in compress2(o.baseAddress, &size, i.baseAddress, uLong(i.count), 9) }
        }
        guard status == Z_OK else { throw CVMError.io("UefiData: zlib compress2 failed (\(status))") }
        return Array(out.prefix(Int(size)))
    }

    /// CRC-32C (CVMCrypto's), as AWS checks the store with.
    static func crc32c(_ bytes: [UInt8]) -> UInt32 {
        var crc = CRC32C()
        bytes.withUnsafeBytes { crc.update($0) }
        return crc.value
    }

    private static func append64(_ out: inout [UInt8], _ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
    private static func append32(_ out: inout [UInt8], _ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
}
