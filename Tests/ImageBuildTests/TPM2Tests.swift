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
