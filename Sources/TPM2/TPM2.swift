#if canImport(Glibc)
import Glibc
#endif
import CVMSupport

/// The few TPM 2.0 commands the agent needs, marshalled by hand (TPM 2.0 Library, Part 3):
/// PCR_Extend and PCR_Read on the SHA-256 bank. Transport: a TPM character device
/// (/dev/tpmrm0, /dev/tpm0) or anything that takes a command and returns its response.
public protocol TPMTransport {
    func transmit(_ command: [UInt8]) throws -> [UInt8]
}

public enum TPM2 {
    public static let algSHA256: UInt16 = 0x000B
    static let stNoSessions: UInt16 = 0x8001
    static let stSessions: UInt16 = 0x8002
    static let ccPCRExtend: UInt32 = 0x0000_0182
    static let ccPCRRead: UInt32 = 0x0000_017E
    /// The password authorization session (empty password), TPM_RS_PW.
    static let rsPW: UInt32 = 0x4000_0009

    /// TPM2_PCR_Extend of `pcr` in the SHA-256 bank with `digest` (32 bytes), authorised with
    /// the empty password (PCRs 16 and 23 are resettable/extendable by anyone).
    public static func extendCommand(pcr: UInt32, sha256 digest: [UInt8]) -> [UInt8] {
        var body = Marshal()
        body.u32(pcr)                    // @pcrHandle
        var auth = Marshal()
        auth.u32(rsPW); auth.u16(0); auth.u8(0); auth.u16(0)   // handle, nonce, attributes, hmac
        body.u32(UInt32(auth.bytes.count)); body.bytes += auth.bytes
        body.u32(1); body.u16(algSHA256); body.bytes += digest   // TPML_DIGEST_VALUES
        return command(tag: stSessions, code: ccPCRExtend, body: body.bytes)
    }

    /// TPM2_PCR_Read of the SHA-256 bank for the PCRs in `pcrs`.
    public static func readCommand(pcrs: [UInt32]) -> [UInt8] {
        var select = [UInt8](repeating: 0, count: 3)
        for p in pcrs where p < 24 { select[Int(p / 8)] |= 1 << (p % 8) }
        var body = Marshal()
        body.u32(1); body.u16(algSHA256); body.u8(3); body.bytes += select
        return command(tag: stNoSessions, code: ccPCRRead, body: body.bytes)
    }

    static func command(tag: UInt16, code: UInt32, body: [UInt8]) -> [UInt8] {
        var m = Marshal()
        m.u16(tag); m.u32(UInt32(10 + body.count)); m.u32(code)
        return m.bytes + body
    }

    /// Checks a response header; returns its parameter area (after tag, size, code).
    static func checkResponse(_ r: [UInt8], command: String) throws -> ArraySlice<UInt8> {
        guard r.count >= 10 else { throw CVMError.io("TPM2_\(command): response of \(r.count) bytes is too short") }
        let size = Int(be32(r, 2)), rc = be32(r, 6)
        guard size == r.count else { throw CVMError.io("TPM2_\(command): response size field \(size) but \(r.count) bytes received") }
        guard rc == 0 else { throw CVMError.io("TPM2_\(command) failed: TPM response code 0x\(String(rc, radix: 16))") }
        return r[10...]
    }

    /// Sends `command` and checks the response, sending it again while the TPM answers
    /// TPM_RC_RETRY, TPM_RC_YIELDED or TPM_RC_TESTING (warnings that mean "not now").
    static func transact(_ tpm: TPMTransport, _ bytes: [UInt8], command name: String) throws -> ArraySlice<UInt8> {
        var attempt = 0
        while true {
            let r = try tpm.transmit(bytes)
            if r.count >= 10, [0x922, 0x908, 0x90A].contains(be32(r, 6)), attempt < 20 {
                attempt += 1
                usleep(UInt32(10_000 * attempt))
                continue
            }
            return try checkResponse(r, command: name)
        }
    }

    public static func extend(_ tpm: TPMTransport, pcr: UInt32, sha256 digest: [UInt8]) throws {
        guard digest.count == 32 else { throw CVMError.usage("PCR extend: a SHA-256 digest has 32 bytes, got \(digest.count)") }
        _ = try transact(tpm, extendCommand(pcr: pcr, sha256: digest), command: "PCR_Extend")
    }

    /// The SHA-256 bank's values of `pcrs` (the TPM returns at most 8 per call: asks again for
    /// the rest). Keys are PCR indexes.
    public static func readSHA256(_ tpm: TPMTransport, pcrs: [UInt32] = Array(0..<24)) throws -> [UInt32: [UInt8]] {
        var wanted = Set(pcrs.filter { $0 < 24 })
        var out: [UInt32: [UInt8]] = [:]
        while !wanted.isEmpty {
            let r = try transact(tpm, readCommand(pcrs: wanted.sorted()), command: "PCR_Read")
            let p = Array(r)
            var o = 4                                    // pcrUpdateCounter
            guard p.count >= o + 4 else { throw CVMError.io("TPM2_PCR_Read: truncated response") }
            let selections = be32(p, o); o += 4
            var returned: [UInt32] = []
            for _ in 0..<selections {
                guard p.count >= o + 3 else { throw CVMError.io("TPM2_PCR_Read: truncated selection") }
                let alg = be16(p, o), n = Int(p[o + 2]); o += 3
                guard p.count >= o + n else { throw CVMError.io("TPM2_PCR_Read: truncated selection") }
                if alg == algSHA256 {
                    for byte in 0..<n { for bit in 0..<8 where p[o + byte] & (1 << bit) != 0 { returned.append(UInt32(byte * 8 + bit)) } }
                }
                o += n
            }
            guard p.count >= o + 4 else { throw CVMError.io("TPM2_PCR_Read: truncated digest list") }
            let count = Int(be32(p, o)); o += 4
            guard count == returned.count, count > 0 else {
                throw CVMError.io("TPM2_PCR_Read: the TPM returned \(count) digests for \(returned.count) selected PCRs (is the SHA-256 bank active?)")
            }
            for pcr in returned {
                guard p.count >= o + 2 else { throw CVMError.io("TPM2_PCR_Read: truncated digest") }
                let size = Int(be16(p, o)); o += 2
                guard p.count >= o + size else { throw CVMError.io("TPM2_PCR_Read: truncated digest") }
                out[pcr] = Array(p[o..<o + size]); o += size
                wanted.remove(pcr)
            }
        }
        return out
    }

    static func be16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) << 8 | UInt16(b[o + 1]) }
    static func be32(_ b: [UInt8], _ o: Int) -> UInt32 { UInt32(be16(b, o)) << 16 | UInt32(be16(b, o + 2)) }
}

/// Big-endian marshalling (TPM byte order).
struct Marshal {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes += [UInt8(v >> 8), UInt8(v & 0xFF)] }
    mutating func u32(_ v: UInt32) { u16(UInt16(v >> 16)); u16(UInt16(v & 0xFFFF)) }
}

/// A TPM character device (one write of a command, one read of its response), or a Unix
/// socket speaking the same raw command stream — swtpm's `--server type=unixio` channel, for
/// running the agent against a software TPM outside a VM (as tpm2-tools' swtpm TCTI does).
public final class TPMDevice: TPMTransport, @unchecked Sendable {
    public let path: String
    let fd: Int32

    /// Opens the first of /dev/tpmrm0 (the kernel's resource manager) and /dev/tpm0 that exists;
    /// a candidate that is a socket is connected to.
    public static func open(candidates: [String] = ["/dev/tpmrm0", "/dev/tpm0"]) throws -> TPMDevice {
        for path in candidates {
            var info = stat()
            if stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFSOCK {
                return TPMDevice(path: path, fd: try connectUnixSocket(path))
            }
            let fd = Glibc.open(path, O_RDWR)
            if fd >= 0 { return TPMDevice(path: path, fd: fd) }
        }
        throw CVMError.io("no TPM: cannot open \(candidates.joined(separator: " or ")): \(errnoDescription())")
    }

    static func connectUnixSocket(_ path: String) throws -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw CVMError.invalid("TPM socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CVMError.io("TPM socket \(path): \(errnoDescription())") }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let reason = errnoDescription()
            Glibc.close(fd)
            throw CVMError.io("TPM socket \(path): cannot connect: \(reason)")
        }
        return fd
    }

    init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    deinit { Glibc.close(fd) }

    public func transmit(_ command: [UInt8]) throws -> [UInt8] {
        let written = command.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == command.count else { throw CVMError.io("\(path): write failed: \(errnoDescription())") }
        // A device answers in one read; a socket may split the answer: read until the size in
        // the response header is complete.
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        repeat {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw CVMError.io("\(path): read failed: \(n == 0 ? "closed" : errnoDescription())") }
            out += buffer.prefix(n)
        } while out.count < 10 || out.count < Int(TPM2.be32(out, 2))
        return out
    }
}
