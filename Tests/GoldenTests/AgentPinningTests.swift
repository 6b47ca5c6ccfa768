import CVMTestData
import Foundation
import XCTest

/// `golden fetch` and `api-token` against a fake agent (Python, HTTPS with a self-signed
/// certificate made at test time, logging every request it receives) and a TLS-terminating
/// relay that presents another certificate: the pin is checked during the handshake, so a
/// refused connection leaves the agent's log empty.
final class AgentPinningTests: XCTestCase {
    var dir: String!
    var cli: String!
    var children: [Process] = []

    override func setUpWithError() throws {
        cli = try XCTUnwrap(TestProcess.cvmCLI(), "build cvm-cli first (swift build --build-tests)")
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-pin-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/_artifacts", withIntermediateDirectories: true)
        let probe = try TestProcess.run("python3", ["-c", "import cryptography"])
        XCTAssertEqual(probe.status, 0, "python3 with cryptography is required (scripts/install-deps.sh --with-test-tools)")
    }

    override func tearDownWithError() throws {
        for child in children where child.isRunning { child.terminate(); child.waitUntilExit() }
        if let dir { try? FileManager.default.removeItem(atPath: dir) }
    }

    // MARK: helpers

    struct Server {
        let port: Int
        /// The fake agent's plain-HTTP port (collaterals).
        var httpPort: Int { Int((try? String(contentsOfFile: log.replacingOccurrences(of: ".log", with: ".port.http"), encoding: .utf8)) ?? "") ?? 0 }
        let log: String
        let certDir: String
        var fingerprint: String { (try? String(contentsOfFile: certDir + "/\(name).sha256", encoding: .utf8)) ?? "" }
        let name: String
        var requests: [String] {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
    }

    func start(_ mode: String, name: String, extra: [String] = []) throws -> Server {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/fake_agent.py").path
        let base = dir + "/" + name
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script, mode, "--cert-dir", base + "-certs", "--log", base + ".log", "--port-file", base + ".port"] + extra
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        children.append(p)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: base + ".port", encoding: .utf8), let port = Int(text) {
                return Server(port: port, log: base + ".log", certDir: base + "-certs", name: mode == "mitm" ? "mitm" : "agent")
            }
            XCTAssertTrue(p.isRunning, "\(name) exited early")
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw XCTSkip("\(name) did not start")
    }

    /// Runs cvm-cli on the test's artifacts, with `CVM_API_TOKEN` unset unless given.
    func run(_ args: [String], apiToken: String? = nil) throws -> TestProcess.Result {
        var environment = ProcessInfo.processInfo.environment
        environment["CVM_API_TOKEN"] = apiToken
        return try TestProcess.run(cli, args + ["--artifacts", dir + "/_artifacts"], environment: environment)
    }

    /// A cloud artifact for `vm` at 127.0.0.1 (the deploy commands write this shape).
    func writeArtifact(vm: String) throws -> String {
        let path = dir + "/_artifacts/aws_\(vm).json"
        let json = #"{"cloud": "aws", "vm_name": "\#(vm)", "region": "eu-west-1", "vm_type": "m6a.large", "tee": "snp", "resources": {"instance_id": "i-1"}, "public_ip": "127.0.0.1", "created": "2026-01-01T00:00:00Z"}"#
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func readJSON(_ path: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    // MARK: tests

    /// First use records the fingerprint in the VM's artifact (other members kept); a VM
    /// presenting another certificate is refused naming both fingerprints and the file, and it
    /// receives no request.
    func testFirstUseRecordsInArtifactAndChangedCertificateIsRefused() throws {
        let agent = try start("agent", name: "agent1")
        let artifact = try writeArtifact(vm: "vm1")
        let out = dir + "/golden.json"
        let first = try run(["golden", "fetch", "vm1", "--port", String(agent.port), "-o", out])
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertTrue(first.stderr.contains("first use"), first.stderr)
        let recorded = try readJSON(artifact)
        XCTAssertEqual(recorded["agent_tls_fingerprint"] as? String, "sha256:" + agent.fingerprint)
        XCTAssertEqual(recorded["public_ip"] as? String, "127.0.0.1")
        XCTAssertEqual((recorded["resources"] as? [String: String])?["instance_id"], "i-1")
        let served = try readJSON(out)
        XCTAssertEqual(served["tls_fingerprint"] as? String, "sha256:" + agent.fingerprint)

        let again = try run(["golden", "fetch", "vm1", "--port", String(agent.port)])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertFalse(again.stderr.contains("first use"), again.stderr)
        XCTAssertTrue(again.stdout.contains("\"tls_fingerprint\""))
        XCTAssertEqual(agent.requests, ["GET /golden-measurement", "GET /golden-measurement"])

        let impostor = try start("agent", name: "agent2")
        let refused = try run(["golden", "fetch", "vm1", "--port", String(impostor.port), "-o", dir + "/other.json"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("changed"), refused.stderr)
        XCTAssertTrue(refused.stderr.contains(agent.fingerprint) && refused.stderr.contains(impostor.fingerprint), refused.stderr)
        XCTAssertTrue(refused.stderr.contains(artifact), refused.stderr)
        XCTAssertEqual(impostor.requests, [], "the impostor must not receive the request")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/other.json"))
        XCTAssertEqual(try readJSON(artifact)["agent_tls_fingerprint"] as? String, "sha256:" + agent.fingerprint)
    }

    /// A relay presenting its own certificate: `golden fetch`, `api-token` and `update-workload`
    /// refuse during the handshake (the relay logs a failed handshake, the agent sees nothing,
    /// no token is stored or sent). With --insecure the same relay does pass requests through (so the test can fail).
    func testMITMRelayIsRefusedBeforeAnyRequest() throws {
        let agent = try start("agent", name: "agent")
        let relay = try start("mitm", name: "relay", extra: ["--upstream", String(agent.port)])
        _ = try writeArtifact(vm: "vm2")
        let first = try run(["golden", "fetch", "vm2", "--port", String(agent.port)])
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertEqual(agent.requests.count, 1)

        let fetch = try run(["golden", "fetch", "vm2", "--port", String(relay.port)])
        XCTAssertNotEqual(fetch.status, 0)
        XCTAssertTrue(fetch.stderr.contains(relay.fingerprint) && fetch.stderr.contains("refused before sending"), fetch.stderr)
        let token = try run(["api-token", "vm2", "--port", String(relay.port)])
        XCTAssertNotEqual(token.status, 0)
        XCTAssertTrue(token.stderr.contains(relay.fingerprint), token.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/_artifacts/vm2/api-token"))
        let secret = String(repeating: "c3", count: 32)
        let update = try run(["update-workload", "vm2", secret, "--port", String(relay.port), "--workload", Self.repo + "/workload"])
        XCTAssertEqual(update.status, 1, update.stderr)
        XCTAssertTrue(update.stderr.contains(relay.fingerprint) && update.stderr.contains("refused before sending"), update.stderr)
        XCTAssertFalse(update.stderr.contains(secret) || update.stdout.contains(secret))
        let pinned = try run(["golden", "fetch", "127.0.0.1:\(relay.port)", "--pin", "sha256:" + agent.fingerprint])
        XCTAssertNotEqual(pinned.status, 0)
        XCTAssertEqual(agent.requests.count, 1, "nothing may reach the agent through the relay")
        XCTAssertFalse(relay.requests.contains { $0.hasPrefix("relayed") }, "\(relay.requests)")
        XCTAssertTrue(relay.requests.contains { $0.hasPrefix("handshake failed") }, "\(relay.requests)")

        let insecure = try run(["golden", "fetch", "127.0.0.1:\(relay.port)", "--insecure"])
        XCTAssertEqual(insecure.status, 0, insecure.stderr)
        XCTAssertTrue(insecure.stderr.contains("WARNING") && insecure.stderr.contains("NOT verified"), insecure.stderr)
        XCTAssertTrue(insecure.stderr.contains("terminates TLS"), "the relayed document names the agent's certificate: \(insecure.stderr)")
        XCTAssertTrue(relay.requests.contains("relayed GET /golden-measurement HTTP/1.1"), "\(relay.requests)")
        XCTAssertEqual(agent.requests.count, 2)
        // update-workload --insecure: loud on every request, and it does go through.
        XCTAssertEqual(try run(["api-token", "127.0.0.1:\(relay.port)", "--insecure"]).status, 0)
        let insecureUpdate = try run(["update-workload", "127.0.0.1:\(relay.port)", "--insecure", "--workload", Self.repo + "/workload"])
        XCTAssertEqual(insecureUpdate.status, 0, insecureUpdate.stderr)
        XCTAssertTrue(insecureUpdate.stderr.contains("NOT verified"), insecureUpdate.stderr)
        XCTAssertTrue(insecureUpdate.stdout.contains("MATCH"), insecureUpdate.stdout)
        XCTAssertTrue(agent.requests.contains("POST /update-workload 200"), "\(agent.requests)")
    }

    /// --pin: a wrong pin is refused (nothing sent), the right one works; neither records
    /// anything. --insecure works, warns, records nothing. Bad --pin text is a usage error.
    func testPinOptionAndInsecure() throws {
        let agent = try start("agent", name: "agent")
        let address = "127.0.0.1:\(agent.port)"
        let known = dir + "/_artifacts/known_agents.json"
        let wrong = String(repeating: "ab", count: 32)
        let refused = try run(["golden", "fetch", address, "--pin", "sha256:" + wrong])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains(wrong) && refused.stderr.contains(agent.fingerprint), refused.stderr)
        XCTAssertEqual(agent.requests, [])

        let ok = try run(["golden", "fetch", address, "--pin", "sha256:" + agent.fingerprint.uppercased()])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        let insecure = try run(["golden", "fetch", address, "--insecure"])
        XCTAssertEqual(insecure.status, 0, insecure.stderr)
        XCTAssertTrue(insecure.stderr.contains("WARNING"), insecure.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: known), "--pin and --insecure record nothing")

        let bad = try run(["golden", "fetch", address, "--pin", "sha256:xyz"])
        XCTAssertEqual(bad.status, 64, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("--pin"), bad.stderr)
        let both = try run(["golden", "fetch", address, "--pin", "sha256:" + wrong, "--insecure"])
        XCTAssertEqual(both.status, 64, both.stderr)

        // Bare addresses record per ip:port in known_agents.json on first use.
        let tofu = try run(["golden", "fetch", address])
        XCTAssertEqual(tofu.status, 0, tofu.stderr)
        let entry = try readJSON(known)[address] as? [String: Any]
        XCTAssertEqual(entry?["tls_fingerprint"] as? String, "sha256:" + agent.fingerprint)
    }

    /// A document whose tls_fingerprint is not the certificate seen is refused, not written,
    /// and the certificate is not recorded.
    func testServedFingerprintMustMatchTheCertificate() throws {
        let agent = try start("agent", name: "agent", extra: ["--wrong-fingerprint"])
        let out = dir + "/golden.json"
        let r = try run(["golden", "fetch", "127.0.0.1:\(agent.port)", "-o", out])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("tls_fingerprint") && r.stderr.contains(agent.fingerprint), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/_artifacts/known_agents.json"))
    }

    /// collaterals: the nonce reaches the agent, the document is written; its tls_fingerprint
    /// must be the recorded certificate (an agent answering for another certificate is refused);
    /// a bad nonce is a usage error.
    func testCollateralsCheckTheRecordedCertificate() throws {
        let agent = try start("agent", name: "agent")
        _ = try writeArtifact(vm: "vm4")
        XCTAssertEqual(try run(["golden", "fetch", "vm4", "--port", String(agent.port)]).status, 0)
        let nonce = String(repeating: "0123456789abcdef", count: 2)
        let out = dir + "/collaterals.json"
        let r = try run(["collaterals", "vm4", "--port", String(agent.httpPort), "--nonce", nonce, "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try readJSON(out)["nonce"] as? String, nonce)
        XCTAssertTrue(agent.requests.contains("HTTP GET /collaterals/\(nonce)"), "\(agent.requests)")

        let other = try start("agent", name: "other")
        let refused = try run(["collaterals", "vm4", "--port", String(other.httpPort), "--nonce", nonce])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains(other.fingerprint) && refused.stderr.contains(agent.fingerprint), refused.stderr)
        let random = try run(["collaterals", "127.0.0.1:\(agent.httpPort)", "--pin", "sha256:" + agent.fingerprint])
        XCTAssertEqual(random.status, 0, random.stderr)
        XCTAssertNotNil(random.stderr.range(of: "nonce [0-9a-f]{64}", options: .regularExpression), random.stderr)
        for bad in ["abc", "00", String(repeating: "zz", count: 16)] {
            let b = try run(["collaterals", "vm4", "--port", String(agent.httpPort), "--nonce", bad])
            XCTAssertEqual(b.status, 64, b.stderr)
        }
    }

    /// The token is stored with mode 0600 and never printed; a second call says where it is
    /// (exit 0); without a stored copy the agent's 410 is an error; --show prints it.
    func testAPITokenStoredPrivatelyNeverPrinted() throws {
        let agent = try start("agent", name: "agent")
        _ = try writeArtifact(vm: "vm3")
        let first = try run(["api-token", "vm3", "--port", String(agent.port)])
        XCTAssertEqual(first.status, 0, first.stderr)
        let token = try String(contentsOfFile: agent.certDir + "/token", encoding: .utf8)
        XCTAssertEqual(token.count, 64)
        let stored = dir + "/_artifacts/vm3/api-token"
        XCTAssertEqual(try String(contentsOfFile: stored, encoding: .utf8), token + "\n")
        let mode = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: stored)[.posixPermissions] as? Int)
        XCTAssertEqual(mode & 0o777, 0o600)
        XCTAssertFalse(first.stdout.contains(token) || first.stderr.contains(token), "the token must not be printed")
        XCTAssertTrue(first.stderr.contains(stored), first.stderr)

        let second = try run(["api-token", "vm3", "--port", String(agent.port)])
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertTrue(second.stderr.contains("already") && second.stderr.contains(stored), second.stderr)
        XCTAssertFalse(second.stdout.contains(token) || second.stderr.contains(token))
        let shown = try run(["api-token", "vm3", "--port", String(agent.port), "--show"])
        XCTAssertEqual(shown.status, 0, shown.stderr)
        XCTAssertEqual(shown.stdout.trimmingCharacters(in: .whitespacesAndNewlines), token)

        try FileManager.default.removeItem(atPath: stored)
        let gone = try run(["api-token", "vm3", "--port", String(agent.port)])
        XCTAssertNotEqual(gone.status, 0)
        XCTAssertTrue(gone.stderr.contains("410") && gone.stderr.contains("already issued"), gone.stderr)
        XCTAssertEqual(agent.requests.filter { $0 == "GET /api-token" }.count, 4)
    }
}
