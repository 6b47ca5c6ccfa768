import CVMSupport
import CVMTestData
import Foundation
import XCTest

/// `golden sign` / `golden verify` end to end, with Python `cryptography` + `rfc8785` and
/// `openssl dgst` as the independent checkers, both ways.
final class GoldenSignatureTests: XCTestCase {
    private var dir: URL!
    private var cli: String!

    override func setUpWithError() throws {
        cli = try XCTUnwrap(TestProcess.cvmCLI(), "build cvm-cli first (swift build --build-tests)")
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-golden-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Self.golden.write(to: dir.appendingPathComponent("golden.json"), atomically: true, encoding: .utf8)
        try Self.checker.write(to: dir.appendingPathComponent("checker.py"), atomically: true, encoding: .utf8)
    }

    override func tearDownWithError() throws {
        if let dir { try? FileManager.default.removeItem(at: dir) }
    }

    /// Every accepted key form and algorithm: our signature verifies with `cryptography` and
    /// with `openssl dgst` over the canonical bytes, and with our own `verify`.
    func testSignaturesVerifyWithCryptographyAndOpenSSL() throws {
        let keys: [(name: String, make: [String], algs: [String])] = [
            ("ec-sec1", ["ecparam", "-name", "prime256v1", "-genkey", "-noout"], ["ES256"]),
            ("ec-pkcs8", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], ["ES256"]),
            ("rsa-pkcs8", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], ["RS256", "PS256"]),
            ("rsa-pkcs1", ["genrsa", "-traditional", "3072"], ["RS256", "PS256"]),
        ]
        for key in keys {
            let priv = try makeKey(key.name, key.make)
            let pub = try publicKey(of: priv)
            for alg in key.algs {
                let signed = path("\(key.name)-\(alg).json")
                var args = ["golden", "sign", path("golden.json"), priv, "-o", signed]
                if alg == "PS256" { args += ["--alg", "PS256"] }
                let sign = try TestProcess.run(cli, args)
                XCTAssertEqual(sign.status, 0, sign.stderr)
                XCTAssertFalse(sign.stderr.contains("PRIVATE KEY"), "no key material in messages")
                let check = try TestProcess.run("python3", [path("checker.py"), "verify", signed, pub, path("canon-\(key.name)-\(alg).json"), path("sig-\(key.name)-\(alg).bin")])
                XCTAssertEqual(check.status, 0, "\(key.name) \(alg): \(check.stdout) \(check.stderr)")
                var dgst = ["dgst", "-sha256", "-verify", pub, "-signature", path("sig-\(key.name)-\(alg).bin")]
                if alg == "PS256" { dgst += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32", "-sigopt", "rsa_mgf1_md:sha256"] }
                let openssl = try TestProcess.run("openssl", dgst + [path("canon-\(key.name)-\(alg).json")])
                XCTAssertEqual(openssl.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "Verified OK", "\(key.name) \(alg): \(openssl.stderr)")
                let verify = try TestProcess.run(cli, ["golden", "verify", signed, pub])
                XCTAssertEqual(verify.status, 0, verify.stderr)
                XCTAssertTrue(verify.stdout.contains("signature OK (\(alg)"), verify.stdout)
            }
        }
    }

    /// Documents signed by `cryptography` verify with cvm-cli, also after being re-laid-out
    /// (indentation, member order, \u escapes) — the point of canonical JSON.
    func testDocumentsSignedByCryptographyVerifyAfterReformatting() throws {
        for (name, make, alg) in [("ec", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], "ES256"),
                                  ("rsa", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], "PS256")] {
            let priv = try makeKey(name, make)
            let pub = try publicKey(of: priv)
            let signed = path("py-\(name).json")
            let r = try TestProcess.run("python3", [path("checker.py"), "sign", path("golden.json"), priv, alg, signed])
            XCTAssertEqual(r.status, 0, r.stderr)
            let verify = try TestProcess.run(cli, ["golden", "verify", signed, pub, "--json"])
            XCTAssertEqual(verify.status, 0, verify.stderr)
            XCTAssertTrue(verify.stdout.contains("\"alg\":\"\(alg)\""), verify.stdout)
        }
    }

    func testTamperingWrongKeysAndDamageAreRefusedWithAReason() throws {
        let priv = try makeKey("ec", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
        let pub = try publicKey(of: priv)
        let otherPub = try publicKey(of: try makeKey("other", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]))
        let signed = path("signed.json")
        XCTAssertEqual(try TestProcess.run(cli, ["golden", "sign", path("golden.json"), priv, "-o", signed]).status, 0)
        let good = try String(contentsOfFile: signed, encoding: .utf8)

        func refused(_ document: String, key: String, because reason: String, file: StaticString = #filePath, line: UInt = #line) throws {
            let p = path("case.json")
            try document.write(toFile: p, atomically: true, encoding: .utf8)
            let r = try TestProcess.run(cli, ["golden", "verify", p, key])
            XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr, file: file, line: line)
            XCTAssertTrue(r.stderr.contains(reason), r.stderr, file: file, line: line)
            XCTAssertTrue(r.stderr.contains(p) || r.stderr.contains(key), "names the file: \(r.stderr)", file: file, line: line)
        }
        try refused(good.replacingOccurrences(of: "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969", with: "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7968"),
                    key: pub, because: "does not match")
        try refused(good, key: otherPub, because: "signed by key")
        let value = try XCTUnwrap(good.range(of: #""value": ""#))
        let damaged = good.replacingCharacters(in: value.upperBound..<good.index(value.upperBound, offsetBy: 12), with: "")
        try refused(damaged, key: pub, because: "signature")
        try refused(good.replacingOccurrences(of: "\"signature\":", with: "\"note\": 1, \"signature\":"), key: pub, because: "unexpected member \"note\"")
        try refused(good.replacingOccurrences(of: "\"ES256\"", with: "\"RS256\""), key: pub, because: "cannot verify")
        try refused(try String(contentsOfFile: path("golden.json"), encoding: .utf8), key: pub, because: "no \"golden_measurement\"")

        // Weak or unsupported keys are refused when signing.
        for (name, make, reason) in [("rsa1024", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], "1024 bits; expected at least 2048"),
                                     ("p384", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], "expected P-256"),
                                     ("ed25519", ["genpkey", "-algorithm", "ED25519"], "unsupported private key type")] {
            let key = try makeKey(name, make)
            let r = try TestProcess.run(cli, ["golden", "sign", path("golden.json"), key])
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(key) && r.stderr.contains(reason), r.stderr)
            XCTAssertFalse(r.stderr.contains("BEGIN"), "no key material: \(r.stderr)")
        }
        let usage = try TestProcess.run(cli, ["golden", "sign", path("golden.json"), priv, "--alg", "RS256"])
        XCTAssertEqual(usage.status, 64, usage.stderr)
        XCTAssertTrue(usage.stderr.contains("RS256 needs an RSA key"), usage.stderr)
    }

    // MARK: helpers

    private func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    private func makeKey(_ name: String, _ args: [String]) throws -> String {
        let r = try TestProcess.run("openssl", args)
        XCTAssertEqual(r.status, 0, r.stderr)
        let p = path("\(name).pem")
        try r.stdout.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    private func publicKey(of priv: String) throws -> String {
        let p = priv.replacingOccurrences(of: ".pem", with: ".pub.pem")
        let r = try TestProcess.run("openssl", ["pkey", "-in", priv, "-pubout", "-out", p])
        XCTAssertEqual(r.status, 0, r.stderr)
        return p
    }

    /// A golden measurement as the agent serves it (docs/agent-api.md shape).
    static let golden = """
    {
      "version": 1, "tee": "none", "agent_version": "0.1.0",
      "pcrs": {"sha256": {"0": "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
                          "23": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}},
      "workload_events": [{"name": "docker-compose.yml", "digest": "ab"}, {"name": "config/app/é.conf", "digest": "cd"}],
      "tls_fingerprint": "sha256:00ff", "event_log": "AAEC/w=="
    }
    """

    /// The independent checker: `cryptography` for signatures, `rfc8785` for canonical JSON.
    static let checker = #"""
    import base64, hashlib, json, sys, rfc8785
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    def scheme(alg):
        if alg == "ES256": return (ec.ECDSA(hashes.SHA256()),)
        if alg == "RS256": return (padding.PKCS1v15(), hashes.SHA256())
        if alg == "PS256": return (padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
        raise SystemExit("unknown alg " + alg)

    def key_id(public):
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(der).hexdigest()

    if sys.argv[1] == "verify":
        doc = json.load(open(sys.argv[2], encoding="utf-8"))
        public = serialization.load_pem_public_key(open(sys.argv[3], "rb").read())
        sig = doc["signature"]
        assert sorted(doc) == ["golden_measurement", "signature"], sorted(doc)
        assert sig["key_id"] == key_id(public), "key_id"
        canon = rfc8785.dumps(doc["golden_measurement"])
        value = base64.b64decode(sig["value"], validate=True)
        open(sys.argv[4], "wb").write(canon)
        open(sys.argv[5], "wb").write(value)
        if sig["alg"] == "ES256": public.verify(value, canon, *scheme("ES256"))
        else: public.verify(value, canon, *scheme(sig["alg"]))
        print("ok")
    else:
        golden = json.load(open(sys.argv[2], encoding="utf-8"))
        private = serialization.load_pem_private_key(open(sys.argv[3], "rb").read(), password=None)
        alg = sys.argv[4]
        value = private.sign(rfc8785.dumps(golden), *scheme(alg))
        doc = {"signature": {"value": base64.b64encode(value).decode(), "alg": alg, "key_id": key_id(private.public_key())},
               "golden_measurement": golden}
        # Another layout than ours: 4-space indent, ASCII-only escapes, reversed member order.
        json.dump(doc, open(sys.argv[5], "w"), indent=4, ensure_ascii=True)
    """#
}
