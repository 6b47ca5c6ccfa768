#if canImport(Glibc)
import Glibc
#endif
import Attestation
import CVMCrypto
import CVMSupport
import Foundation
import Golden
import TPM2
import XCTest

/// `AttestationVerifier` and `cvm-cli verify` on real quotes from swtpm: PCRs extended with the
/// digests of a synthetic (well-formed TCG2) firmware event log and with workload events, then
/// quoted through `PCRAttestation.make` exactly as the agent does. Each tampering must fail the
/// named check or PCR, and `scripts/verify-collaterals.py` (Python `cryptography`, independent
/// code) must agree on pass/fail for the same files.
final class AttestationVerifyTests: XCTestCase {
    /// Collaterals and a golden measurement of one swtpm, as JSON objects, and what made them.
    struct Fixture {
        var dir: String
        var nonce: [UInt8]
        var fingerprint: [UInt8]
        var collaterals: [String: Any]
        var golden: [String: Any]
    }

    /// A TCG2 crypto-agile log: the Spec ID Event03 header, an EV_NO_ACTION, then one event per
    /// entry with SHA-1 (unused, zeros) and SHA-256 digests.
    static func eventLog(_ events: [(pcr: UInt32, type: UInt32, data: [UInt8])]) -> [UInt8] {
        func le32(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 24)] }
        func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
        var spec = Array("Spec ID Event03".utf8) + [0]
        spec += le32(0) + [0, 2, 0, 2]                                  // platform class, version 2.0, UINTN = 8 bytes
        spec += le32(2) + le16(0x0004) + le16(20) + le16(0x000B) + le16(32) + [0]
        var log = le32(0) + le32(3) + [UInt8](repeating: 0, count: 20) + le32(UInt32(spec.count)) + spec
        func event(_ pcr: UInt32, _ type: UInt32, _ digest: [UInt8], _ data: [UInt8]) -> [UInt8] {
            le32(pcr) + le32(type) + le32(2) + le16(0x0004) + [UInt8](repeating: 0, count: 20) + le16(0x000B) + digest
                + le32(UInt32(data.count)) + data
        }
        log += event(0, 3, [UInt8](repeating: 0, count: 32), Array("StartupLocality\0\0".utf8))   // never extended
        for e in events { log += event(e.pcr, e.type, SHA256.hash(e.data), e.data) }
        return log
    }

    /// Extends PCRs 0, 4, 7 (firmware log) and 23 (workload events), quotes them with a nonce and
    /// a TLS fingerprint, and returns the collaterals and golden documents the agent would serve.
    func makeFixture(_ tpm: SocketTPM, dir: String) throws -> Fixture {
        let firmware: [(pcr: UInt32, type: UInt32, data: [UInt8])] = [
            (0, 0x8000_0008, Array("platform firmware blob".utf8)),     // EV_EFI_PLATFORM_FIRMWARE_BLOB
            (7, 0x8000_0001, Array("SecureBoot=0".utf8)),               // EV_EFI_VARIABLE_DRIVER_CONFIG
            (4, 0x8000_0003, Array("the UKI's Authenticode hash".utf8)), // EV_EFI_BOOT_SERVICES_APPLICATION
            (4, 0x0000_0004, Array("separator".utf8)),                  // EV_SEPARATOR
        ]
        for e in firmware { try TPM2.extend(tpm, pcr: e.pcr, sha256: SHA256.hash(e.data)) }
        var workload: [[String: String]] = []
        for (name, content) in [("docker-compose.yml", "services: {}\n"), ("config/web/default.conf", "listen 80;\n")] {
            let contentDigest = SHA256.hash(content)
            let digest = SHA256.hash(Array(name.utf8) + [0] + contentDigest)
            try TPM2.extend(tpm, pcr: 23, sha256: digest)
            workload.append(["name": name, "content_sha256": hexString(contentDigest), "digest": hexString(digest)])
        }
        let nonce = SHA256.hash(UUID().uuidString)
        let fingerprint = SHA256.hash("the agent's certificate DER")
        let a = try PCRAttestation.make(tpm, nonce: nonce, tlsFingerprint: fingerprint)
        var bank: [String: String] = [:]
        for (i, v) in a.pcrs { bank[String(i)] = hexString(v) }
        let log = Base64.encode(Self.eventLog(firmware))
        let collaterals: [String: Any] = [
            "version": 1, "nonce": hexString(nonce), "qualifying_data": hexString(a.qualifyingData),
            "quote": Base64.encode(a.quote.attest), "signature": Base64.encode(a.quote.signature),
            "ak_public": a.akPublicPEM, "pcrs": ["sha256": bank], "event_log": log, "workload_events": workload,
            "workload_pcr23_base": String(repeating: "0", count: 64),
            "tls_fingerprint": "sha256:" + hexString(fingerprint), "agent_version": "0.1.0",
        ]
        let golden: [String: Any] = [
            "version": 1, "tee": "none", "pcrs": ["sha256": bank], "event_log": log, "workload_events": workload,
            "tls_fingerprint": "sha256:" + hexString(fingerprint), "agent_version": "0.1.0",
        ]
        return Fixture(dir: dir, nonce: nonce, fingerprint: fingerprint, collaterals: collaterals, golden: golden)
    }

    static func write(_ object: Any, _ path: String) throws -> String {
        try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            .write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Two P-256 key pairs made by openssl: (private, public) PEM paths.
    static func makeKeys(_ dir: String) throws -> [(String, String)] {
        let sh = try ImageTestSupport.tool("sh", package: "dash")
        _ = try ImageTestSupport.tool("openssl", package: "openssl")
        return try ["a", "b"].map { name in
            try sh.run(["-c", "openssl ecparam -name prime256v1 -genkey -noout -out \"$1/\(name).pem\" && openssl ec -in \"$1/\(name).pem\" -pubout -out \"$1/\(name).pub\" 2>/dev/null", "sh", dir])
            return (dir + "/\(name).pem", dir + "/\(name).pub")
        }
    }

    static func signed(_ golden: [String: Any], key: String) throws -> [String: Any] {
        let bytes = Array(try JSONSerialization.data(withJSONObject: golden, options: [.sortedKeys]))
        let signingKey = try DocumentSigningKey(pem: Array(try Data(contentsOf: URL(fileURLWithPath: key))), source: key)
        let document = try SignedGoldenMeasurement.sign(document: bytes, source: "golden", key: signingKey).documentBytes
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(document)) as? [String: Any])
    }

    func testEveryTamperingFailsTheNamedCheckAndThePythonVerifierAgrees() throws { try withSwtpm(4) { tpm, dir in
        let f = try makeFixture(tpm, dir: dir)
        let keys = try Self.makeKeys(dir)
        let python = try ImageTestSupport.tool("python3", package: "python3")
        let script = ImageTestSupport.repo + "/scripts/verify-collaterals.py"

        struct Case {
            var name: String
            var collaterals: [String: Any]
            var golden: [String: Any]
            var nonce: [UInt8]? = nil
            var tlsFingerprint: [UInt8]? = nil
            var publicKey: String? = nil
            /// The failed check or "PCR n" the report must name; nil: it must pass.
            var expectedFailure: String?
        }
        func quoteFlipped(_ field: String, at index: (Int) -> Int) -> [String: Any] {
            var c = f.collaterals
            var bytes = Base64.decode(c[field] as! String)!
            bytes[index(bytes.count)] ^= 0x01
            c[field] = Base64.encode(bytes)
            return c
        }
        func withPCR(_ doc: [String: Any], _ pcr: String, _ value: String) -> [String: Any] {
            var d = doc
            var bank = (d["pcrs"] as! [String: Any])["sha256"] as! [String: String]
            bank[pcr] = value
            d["pcrs"] = ["sha256": bank]
            return d
        }
        var badLog = f.collaterals
        var logBytes = Self.eventLog([(0, 0x8000_0008, Array("platform firmware blob".utf8)), (7, 0x8000_0001, Array("SecureBoot=0".utf8)),
                                      (4, 0x8000_0003, Array("the UKI's Authenticode hash".utf8)), (4, 4, Array("separator".utf8))])
        XCTAssertEqual(Base64.encode(logBytes), f.collaterals["event_log"] as? String)
        // The last event's SHA-256 digest ends 4 + "separator" bytes before the log's end.
        logBytes[logBytes.count - 4 - 9 - 1] ^= 0x80
        badLog["event_log"] = Base64.encode(logBytes)
        var badWorkload = f.collaterals
        var events = f.collaterals["workload_events"] as! [[String: String]]
        events[1]["digest"] = hexString(SHA256.hash("another file"))
        events[1].removeValue(forKey: "content_sha256")
        badWorkload["workload_events"] = events
        var otherNonceField = f.collaterals
        otherNonceField["nonce"] = hexString(SHA256.hash("someone else's nonce"))
        let prediction: [String: Any] = [
            "pcrs": ["sha256": ["23": ((f.golden["pcrs"] as! [String: Any])["sha256"] as! [String: String])["23"]!]],
            "workload_events": f.golden["workload_events"]!,
            "unpredictable": ["4": "boot chain: not predicted", "7": "firmware: not predicted"],
        ]

        let cases: [Case] = [
            Case(name: "untouched", collaterals: f.collaterals, golden: f.golden, expectedFailure: nil),
            Case(name: "untouched with the nonce and fingerprint given", collaterals: f.collaterals, golden: f.golden,
                 nonce: f.nonce, tlsFingerprint: f.fingerprint, expectedFailure: nil),
            Case(name: "golden predict output", collaterals: f.collaterals, golden: prediction, expectedFailure: nil),
            Case(name: "signed golden, right key", collaterals: f.collaterals, golden: try Self.signed(f.golden, key: keys[0].0),
                 publicKey: keys[0].1, expectedFailure: nil),
            Case(name: "a quote byte", collaterals: quoteFlipped("quote") { $0 - 1 }, golden: f.golden, expectedFailure: "signature"),
            Case(name: "a signature byte", collaterals: quoteFlipped("signature") { $0 - 1 }, golden: f.golden, expectedFailure: "signature"),
            Case(name: "wrong nonce", collaterals: f.collaterals, golden: f.golden, nonce: SHA256.hash("a verifier's other nonce"),
                 expectedFailure: "nonce"),
            Case(name: "nonce field rewritten", collaterals: otherNonceField, golden: f.golden, expectedFailure: "extra_data"),
            Case(name: "wrong TLS fingerprint", collaterals: f.collaterals, golden: f.golden, tlsFingerprint: SHA256.hash("other cert"),
                 expectedFailure: "tls_fingerprint"),
            Case(name: "a PCR value in the collaterals", collaterals: withPCR(f.collaterals, "4", hexString(SHA256.hash("x"))), golden: f.golden,
                 expectedFailure: "pcr_digest"),
            Case(name: "an event-log digest", collaterals: badLog, golden: f.golden, expectedFailure: "event_log"),
            Case(name: "a workload event", collaterals: badWorkload, golden: f.golden, expectedFailure: "workload_events"),
            Case(name: "a golden PCR", collaterals: f.collaterals, golden: withPCR(f.golden, "7", hexString(SHA256.hash("y"))),
                 expectedFailure: "PCR 7"),
            Case(name: "signed golden, wrong key", collaterals: f.collaterals, golden: try Self.signed(f.golden, key: keys[0].0),
                 publicKey: keys[1].1, expectedFailure: "golden_signature"),
            Case(name: "signed golden changed after signing", collaterals: f.collaterals,
                 golden: { var s = try! Self.signed(f.golden, key: keys[0].0); s["golden_measurement"] = withPCR(f.golden, "0", hexString(SHA256.hash("z"))); return s }(),
                 publicKey: keys[0].1, expectedFailure: "golden_signature"),
        ]

        for (i, c) in cases.enumerated() {
            let collateralsPath = try Self.write(c.collaterals, dir + "/collaterals-\(i).json")
            let goldenPath = try Self.write(c.golden, dir + "/golden-\(i).json")
            var options = AttestationVerifier.Options()
            options.nonce = c.nonce
            options.tlsFingerprint = c.tlsFingerprint
            if let key = c.publicKey {
                options.publicKey = try DocumentVerifyingKey(pem: Array(try Data(contentsOf: URL(fileURLWithPath: key))), source: key)
            }
            let report = try AttestationVerifier.verify(
                try Collaterals.parse(Array(try Data(contentsOf: URL(fileURLWithPath: collateralsPath))), source: collateralsPath),
                against: try GoldenReference.parse(Array(try Data(contentsOf: URL(fileURLWithPath: goldenPath))), source: goldenPath),
                options: options)
            if let expected = c.expectedFailure {
                XCTAssertFalse(report.passed, "\(c.name): passed")
                if expected.hasPrefix("PCR ") {
                    let index = UInt32(expected.dropFirst(4))!
                    XCTAssertEqual(report.pcrs.first { $0.index == index }?.status, .mismatch, "\(c.name): \(report.text)")
                    XCTAssertEqual(report.pcrs.filter { $0.status == .mismatch }.count, 1, "\(c.name): only PCR \(index) differs")
                } else {
                    XCTAssertEqual(report.checks.first { $0.name == expected }?.status, .fail, "\(c.name): \(report.text)")
                }
                XCTAssertTrue(report.reasons.contains { $0.hasPrefix(expected + ":") }, "\(c.name): \(report.reasons)")
            } else {
                XCTAssertTrue(report.passed, "\(c.name): \(report.text)")
                XCTAssertTrue(report.pcrs.contains { $0.status == .match }, "\(c.name)")
            }
            // The independent verifier agrees on the same files.
            var args = [script, collateralsPath, hexString(c.nonce ?? f.nonce), "--golden", goldenPath]
            if let key = c.publicKey { args += ["--pubkey", key] }
            if let fp = c.tlsFingerprint { args += ["--tls-fingerprint", "sha256:" + hexString(fp)] }
            let oracle = try python.runCapturing(args)
            XCTAssertEqual(oracle.status == 0, report.passed, "\(c.name): verify-collaterals.py says \(oracle.stdout)\(oracle.stderr)")
        }

        // Every single-bit change anywhere in the quote or signature, and every truncation, fails
        // the signature check (and never crashes the parser).
        let goldenReference = try GoldenReference.parse(Array(try JSONSerialization.data(withJSONObject: f.golden)), source: "g")
        for field in ["quote", "signature"] {
            let original = Base64.decode(f.collaterals[field] as! String)!
            var variants: [[UInt8]] = (0..<original.count * 8).map { bit in
                var b = original
                b[bit / 8] ^= 1 << (bit % 8)
                return b
            }
            variants += (0..<original.count).map { Array(original.prefix($0)) }
            variants.append(original + [0])
            for (n, bytes) in variants.enumerated() {
                var c = f.collaterals
                c[field] = Base64.encode(bytes)
                if bytes.isEmpty { continue }          // empty base64 is refused as input
                let report = try AttestationVerifier.verify(try Collaterals.parse(Array(try JSONSerialization.data(withJSONObject: c)), source: "c"),
                                                            against: goldenReference, options: .init())
                XCTAssertFalse(report.passed, "\(field) variant \(n)")
                XCTAssertEqual(report.checks.first { $0.name == "signature" }?.status, .fail, "\(field) variant \(n)")
            }
        }

        // The prediction's other PCRs are reported with their reasons, not compared.
        let report = try AttestationVerifier.verify(try Collaterals.parse(Array(try JSONSerialization.data(withJSONObject: f.collaterals)), source: "c"),
                                                    against: try GoldenReference.parse(Array(try JSONSerialization.data(withJSONObject: prediction)), source: "p"),
                                                    options: .init())
        XCTAssertEqual(report.pcrs.first { $0.index == 4 }?.status, .unpredictable)
        XCTAssertEqual(report.pcrs.first { $0.index == 4 }?.reason, "boot chain: not predicted")
        XCTAssertEqual(report.pcrs.first { $0.index == 0 }?.status, .notInGolden)
        XCTAssertEqual(report.pcrs.filter { $0.status == .match }.map(\.index), [23])

        // A signed golden measurement without a key is a usage error that says what to pass.
        XCTAssertThrowsError(try AttestationVerifier.verify(
            try Collaterals.parse(Array(try JSONSerialization.data(withJSONObject: f.collaterals)), source: "c"),
            against: try GoldenReference.parse(Array(try JSONSerialization.data(withJSONObject: try Self.signed(f.golden, key: keys[0].0))), source: "signed.json"),
            options: .init())) {
            XCTAssertEqual(($0 as? CVMError)?.kind, .usage)
            XCTAssertTrue("\($0)".contains("--pubkey"), "\($0)")
        }
    } }

    /// `cvm-cli verify`: exit 0 and a readable table on a full match, exit 1 with the reasons on a
    /// mismatch, one JSON document with --json, and one `cvm-cli: error:` line for bad input.
    func testCLIExitCodesTableAndJSON() throws { try withSwtpm(6) { tpm, dir in
        let f = try makeFixture(tpm, dir: dir)
        let cli = ExternalTool(name: "cvm-cli", package: "cvm-cli", path: try ImageTestSupport.product("cvm-cli"))
        let collaterals = try Self.write(f.collaterals, dir + "/collaterals.json")
        let golden = try Self.write(f.golden, dir + "/golden.json")
        let nonce = hexString(f.nonce)

        let pass = try cli.runCapturing(["verify", collaterals, golden, "--nonce", nonce, "--tls-fingerprint", "sha256:" + hexString(f.fingerprint)])
        XCTAssertEqual(pass.status, 0, pass.stderr)
        XCTAssertTrue(pass.stdout.contains("Verdict: PASS"), pass.stdout)
        let bank = (f.golden["pcrs"] as! [String: Any])["sha256"] as! [String: String]
        for pcr in 0..<24 {
            XCTAssertTrue(pass.stdout.contains("\n\(String(pcr).padding(toLength: 4, withPad: " ", startingAt: 0)) MATCH          \(bank[String(pcr)]!)"),
                          "PCR \(pcr) row missing:\n\(pass.stdout)")
        }
        for check in ["signature", "quote", "nonce", "tls_fingerprint", "extra_data", "pcr_digest", "event_log", "workload_events"] {
            XCTAssertTrue(pass.stdout.contains("PASS    \(check)"), "\(check):\n\(pass.stdout)")
        }
        XCTAssertEqual(pass.stderr, "")

        // --json: one document with the verdict, the checks and the PCRs.
        let json = try cli.runCapturing(["--json", "verify", collaterals, golden])
        XCTAssertEqual(json.status, 0, json.stderr)
        let parsed = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(parsed["verified"] as? Bool, true)
        XCTAssertEqual(parsed["verdict"] as? String, "pass")
        XCTAssertEqual((parsed["pcrs"] as? [[String: Any]])?.count, 24)
        XCTAssertEqual((parsed["pcrs"] as? [[String: Any]])?.first?["status"] as? String, "match")

        // A golden PCR that differs: exit 1, the table shows both values, stderr names the PCR.
        var changed = f.golden
        var changedBank = bank
        let wrong = hexString(SHA256.hash("not this firmware"))
        changedBank["0"] = wrong
        changed["pcrs"] = ["sha256": changedBank]
        let changedPath = try Self.write(changed, dir + "/changed.json")
        let fail = try cli.runCapturing(["verify", collaterals, changedPath])
        XCTAssertEqual(fail.status, 1)
        XCTAssertTrue(fail.stdout.contains("0    MISMATCH       \(bank["0"]!)  \(wrong)"), fail.stdout)
        XCTAssertTrue(fail.stdout.contains("Verdict: FAIL"), fail.stdout)
        XCTAssertTrue(fail.stderr.hasPrefix("cvm-cli: error: verification failed: PCR 0: quoted \(bank["0"]!), golden \(wrong)"), fail.stderr)
        let failJSON = try cli.runCapturing(["verify", collaterals, changedPath, "--json"])
        XCTAssertEqual(failJSON.status, 1)
        let failParsed = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(failJSON.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(failParsed["verdict"] as? String, "fail")
        XCTAssertEqual(failParsed["reasons"] as? [String], ["PCR 0: quoted \(bank["0"]!), golden \(wrong)"])

        // A wrong --nonce: exit 1 naming the nonce check.
        let stale = try cli.runCapturing(["verify", collaterals, golden, "--nonce", hexString(SHA256.hash("stale"))])
        XCTAssertEqual(stale.status, 1)
        XCTAssertTrue(stale.stderr.contains("nonce: the collaterals are for nonce \(nonce)"), stale.stderr)

        // Signed golden: without --pubkey a usage error naming --pubkey; with the key it passes.
        let keys = try Self.makeKeys(dir)
        let sign = try cli.runCapturing(["golden", "sign", golden, keys[0].0, "-o", dir + "/signed.json"])
        XCTAssertEqual(sign.status, 0, sign.stderr)
        let noKey = try cli.runCapturing(["verify", collaterals, dir + "/signed.json"])
        XCTAssertEqual(noKey.status, 64)
        XCTAssertTrue(noKey.stderr.hasPrefix("cvm-cli: error: \(dir)/signed.json is a signed golden measurement: pass --pubkey"), noKey.stderr)
        XCTAssertEqual(noKey.stdout, "")
        let signedOK = try cli.runCapturing(["verify", collaterals, dir + "/signed.json", "--pubkey", keys[0].1])
        XCTAssertEqual(signedOK.status, 0, signedOK.stderr)
        XCTAssertTrue(signedOK.stdout.contains("PASS    golden_signature"), signedOK.stdout)
        let wrongKey = try cli.runCapturing(["verify", collaterals, dir + "/signed.json", "--pubkey", keys[1].1])
        XCTAssertEqual(wrongKey.status, 1)
        XCTAssertTrue(wrongKey.stderr.contains("golden_signature: "), wrongKey.stderr)

        // Bad input: one error line naming the file and what is expected, nothing on stdout.
        try "{\"pcrs\": 1".write(toFile: dir + "/broken.json", atomically: true, encoding: .utf8)
        try "{\"hello\": 1}".write(toFile: dir + "/other.json", atomically: true, encoding: .utf8)
        let inputs: [([String], Int32, String)] = [
            (["verify", dir + "/missing.json", golden], 1, "\(dir)/missing.json"),
            (["verify", dir + "/broken.json", golden], 1, "\(dir)/broken.json: not valid JSON"),
            (["verify", dir + "/other.json", golden], 1, "\(dir)/other.json: not attestation collaterals"),
            (["verify", collaterals, dir + "/other.json"], 1, "\(dir)/other.json: not a golden measurement"),
            (["verify", golden, collaterals], 1, "\(golden): not attestation collaterals"),
            (["verify", collaterals, golden, "--nonce", "xyz"], 64, "--nonce xyz"),
            (["verify", collaterals, golden, "--tls-fingerprint", "abc"], 64, "--tls-fingerprint abc"),
            (["verify", collaterals, golden, "--pubkey", collaterals], 1, "\(collaterals): cannot read a public key"),
        ]
        for (args, status, message) in inputs {
            let r = try cli.runCapturing(args)
            XCTAssertEqual(r.status, status, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.hasPrefix("cvm-cli: error: ") && r.stderr.contains(message), "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "\(args): \(r.stderr)")
            XCTAssertEqual(r.stdout, "", "\(args)")
        }
    } }
}
