#if canImport(Glibc)
import Glibc
#endif
import CVMCrypto
import CVMSupport
import Foundation
import TPM2
import XCTest

/// Our TPM2 marshalling against swtpm (the software TPM QEMU uses), over its TCP command port.
final class TPM2Tests: XCTestCase {
    /// swtpm's data socket: raw TPM commands in, responses out.
    final class SocketTPM: TPMTransport {
        let fd: Int32
        init(port: UInt16) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            var ok = false
            for _ in 0..<50 {
                let rc = withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                if rc == 0 { ok = true; break }
                usleep(100_000)
            }
            guard ok else { throw CVMError.io("cannot connect to swtpm on port \(port)") }
        }
        deinit { close(fd) }
        func transmit(_ command: [UInt8]) throws -> [UInt8] {
            _ = command.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            var out: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            repeat {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { throw CVMError.io("swtpm closed the connection") }
                out += buffer.prefix(n)
            } while out.count < 10 || out.count < Int(UInt32(out[2]) << 24 | UInt32(out[3]) << 16 | UInt32(out[4]) << 8 | UInt32(out[5]))
            return out
        }
    }

    /// A fresh swtpm on 127.0.0.1 for `body`, stopped and removed afterwards.
    func withSwtpm(_ offset: UInt16, _ body: (SocketTPM, String) throws -> Void) throws {
        let swtpm = try ImageTestSupport.tool("swtpm", package: "swtpm")
        let dir = try ImageTestSupport.temporaryDirectory("swtpm")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = UInt16(20000 + Int(getpid()) % 20000) &+ offset
        let process = Process()
        process.executableURL = URL(fileURLWithPath: swtpm.path)
        process.arguments = ["socket", "--tpm2", "--tpmstate", "dir=\(dir)", "--flags", "not-need-init,startup-clear",
                             "--server", "type=tcp,port=\(port),bindaddr=127.0.0.1",
                             "--ctrl", "type=tcp,port=\(port + 1),bindaddr=127.0.0.1"]
        try process.run()
        defer { process.terminate(); process.waitUntilExit() }
        try body(try SocketTPM(port: port), dir)
    }

    func testExtendAndReadAgainstSwtpm() throws { try withSwtpm(0) { tpm, _ in

        let before = try TPM2.readSHA256(tpm)
        XCTAssertEqual(before.count, 24, "all 24 SHA-256 PCRs in several reads")
        XCTAssertEqual(before[23], [UInt8](repeating: 0, count: 32))
        let events = [SHA256.hash("one"), SHA256.hash("two")]
        var expected = [UInt8](repeating: 0, count: 32)
        for e in events {
            try TPM2.extend(tpm, pcr: 23, sha256: e)
            expected = SHA256.hash(expected + e)
        }
        XCTAssertEqual(try TPM2.readSHA256(tpm, pcrs: [23])[23], expected)
        // There is no PCR 30: the TPM's error code surfaces in our error.
        XCTAssertThrowsError(try TPM2.extend(tpm, pcr: 30, sha256: events[0])) {
            XCTAssertTrue("\($0)".contains("TPM2_PCR_Extend failed"), "\($0)")
        }
    } }

    /// AK + quote against swtpm, checked by an independent verifier (Python `cryptography`):
    /// the ECDSA signature over TPMS_ATTEST with the AK's PEM, extraData = SHA-256(nonce ||
    /// fingerprint), pcrDigest = SHA-256 of the PCR values. Then one changed input must fail it.
    func testQuoteVerifiesIndependently() throws { try withSwtpm(2) { tpm, dir in
        let python = try ImageTestSupport.tool("python3", package: "python3")
        try TPM2.extend(tpm, pcr: 23, sha256: SHA256.hash("workload"))
        let nonce = SHA256.hash("nonce") + [1, 2, 3]
        let fingerprint = SHA256.hash("certificate DER")
        let a = try PCRAttestation.make(tpm, nonce: nonce, tlsFingerprint: fingerprint)
        XCTAssertEqual(a.pcrs.count, 24)
        XCTAssertEqual(a.quote.attest.prefix(4), [0xFF, 0x54, 0x43, 0x47])
        // The AK is a primary key: the same template gives the same key again.
        let again = try PCRAttestation.make(tpm, nonce: nonce, tlsFingerprint: fingerprint)
        XCTAssertEqual(again.akPublicPEM, a.akPublicPEM)

        func document(_ pcrs: [UInt32: [UInt8]], fingerprint: [UInt8]) throws -> String {
            var bank: [String: String] = [:]
            for (i, v) in pcrs { bank[String(i)] = hexString(v) }
            let object: [String: Any] = ["quote": Base64.encode(a.quote.attest), "signature": Base64.encode(a.quote.signature),
                                         "ak_public": a.akPublicPEM, "pcrs": ["sha256": bank],
                                         "tls_fingerprint": "sha256:" + hexString(fingerprint)]
            let path = dir + "/collaterals-\(UUID().uuidString).json"
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
            return path
        }
        let script = ImageTestSupport.repo + "/scripts/verify-collaterals.py"
        let out = try python.run([script, try document(a.pcrs, fingerprint: fingerprint), hexString(nonce)])
        XCTAssertTrue(out.contains("\"verified\": true"), out)
        XCTAssertTrue(out.contains(hexString(a.qualifyingData)), out)
        // A wrong nonce, another TLS key, or a PCR value that was not quoted: the verifier refuses.
        XCTAssertThrowsError(try python.run([script, try document(a.pcrs, fingerprint: fingerprint), hexString(SHA256.hash("other"))]))
        XCTAssertThrowsError(try python.run([script, try document(a.pcrs, fingerprint: SHA256.hash("other")), hexString(nonce)]))
        var changed = a.pcrs
        changed[23] = SHA256.hash("not quoted")
        XCTAssertThrowsError(try python.run([script, try document(changed, fingerprint: fingerprint), hexString(nonce)]))
    } }
}
