import CVMTestData
import Foundation
import XCTest

/// `update-workload` against the fake agent, which reads the archive with Python's tarfile and
/// measures it with its own code (Tests/GoldenTests/Scripts/fake_agent.py), and the pinning of
/// every agent command when the certificate at a recorded address changes.
extension AgentPinningTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// A copy of the sample workload with one config file changed by `tag`.
    func workloadCopy(_ name: String, tag: String) throws -> String {
        let copy = dir + "/" + name
        try FileManager.default.copyItem(atPath: Self.repo + "/workload", toPath: copy)
        let conf = copy + "/config/web/default.conf"
        try (try String(contentsOfFile: conf, encoding: .utf8) + "\n# \(tag)\n").write(toFile: conf, atomically: true, encoding: .utf8)
        return copy
    }

    /// "PCR 23 <label>: <hex>" from the text output.
    func printedPCR(_ label: String, _ output: String) -> String? {
        for line in output.split(separator: "\n") where line.hasPrefix("PCR 23 \(label):") {
            return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).first.map(String.init)
        }
        return nil
    }

    func assertNoSecret(_ secret: String, _ results: [TestProcess.Result], file: StaticString = #filePath, line: UInt = #line) {
        for r in results {
            XCTAssertFalse(r.stdout.contains(secret) || r.stderr.contains(secret), "the token was printed: \(r.stderr)", file: file, line: line)
        }
    }

    /// The token from each of its three places; PCR 23 printed next to the host's prediction
    /// (zeros extended for the first update, the previous value after); -o writes the new golden
    /// measurement; the archive is reproducible; the token is never printed.
    func testUpdateWorkloadMatchesThePrediction() throws {
        let agent = try start("agent", name: "agent")
        _ = try writeArtifact(vm: "vm5")
        let port = String(agent.port)
        XCTAssertEqual(try run(["api-token", "vm5", "--port", port]).status, 0)
        let token = try String(contentsOfFile: agent.certDir + "/token", encoding: .utf8)
        let v1 = try workloadCopy("v1", tag: "v1")

        let out = dir + "/new.json"
        let first = try run(["update-workload", "vm5", "--port", port, "--workload", v1, "-o", out])
        XCTAssertEqual(first.status, 0, first.stderr)
        let predicted = try XCTUnwrap(printedPCR("predicted", first.stdout), first.stdout)
        XCTAssertEqual(printedPCR("new", first.stdout), predicted)
        XCTAssertTrue(first.stdout.contains("MATCH") && !first.stdout.contains("MISMATCH"), first.stdout)
        XCTAssertEqual(printedPCR("before", first.stdout), String(repeating: "0", count: 64))
        // From zeros, the prediction is the folder's own measurement (`workload measure`).
        let measured = try TestProcess.run(cli, ["workload", "measure", v1])
        XCTAssertTrue(measured.stdout.contains("PCR 23: \(predicted)"), measured.stdout)
        let golden = try readJSON(out)
        XCTAssertEqual(((golden["pcrs"] as? [String: Any])?["sha256"] as? [String: String])?["23"], predicted)
        XCTAssertEqual(golden["workload_updates"] as? Int, 1)
        XCTAssertEqual(agent.requests.filter { $0.hasPrefix("POST") }, ["POST /update-workload 200"])

        // The same folder again, the token from CVM_API_TOKEN (the stored copy moved away):
        // the same archive bytes, PCR 23 extended on top of the first update.
        let stored = dir + "/_artifacts/vm5/api-token"
        try FileManager.default.moveItem(atPath: stored, toPath: dir + "/token.saved")
        let second = try run(["update-workload", "vm5", "--port", port, "--workload", v1, "--json"], apiToken: token)
        XCTAssertEqual(second.status, 0, second.stderr)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(second.stdout.utf8)) as? [String: Any], second.stdout)
        XCTAssertEqual(json["match"] as? Bool, true)
        XCTAssertEqual(json["pcr23_before"] as? String, predicted)
        XCTAssertEqual(json["workload_pcr23_base"] as? String, predicted)
        XCTAssertEqual(json["pcr23"] as? String, json["pcr23_predicted"] as? String)
        XCTAssertNotEqual(json["pcr23"] as? String, predicted)
        let archive = try XCTUnwrap(json["archive_sha256"] as? String)
        XCTAssertTrue(first.stderr.contains("sha256:" + archive), "the archive is not reproducible: \(first.stderr)")
        XCTAssertTrue(second.stderr.contains("CVM_API_TOKEN"), second.stderr)

        // The token as an argument, a changed folder; -o refuses to overwrite without --force
        // before sending anything.
        let v2 = try workloadCopy("v2", tag: "v2")
        let exists = try run(["update-workload", "vm5", token, "--port", port, "--workload", v2, "-o", out])
        XCTAssertEqual(exists.status, 64, exists.stderr)
        XCTAssertEqual(agent.requests.filter { $0.hasPrefix("POST") }.count, 2)
        let third = try run(["update-workload", "vm5", token, "--port", port, "--workload", v2, "-o", out, "--force"])
        XCTAssertEqual(third.status, 0, third.stderr)
        XCTAssertEqual(printedPCR("before", third.stdout), json["pcr23"] as? String)
        XCTAssertEqual(printedPCR("new", third.stdout), printedPCR("predicted", third.stdout))
        XCTAssertEqual(try readJSON(out)["workload_updates"] as? Int, 3)
        assertNoSecret(token, [first, second, exists, third])
    }

    /// Nothing is sent without a token or with a folder that fails the check; the agent's
    /// 401/403/413/415 are one clear line each; a PCR 23 other than predicted exits ≠ 0 and
    /// writes nothing; a late report is waited for.
    func testUpdateWorkloadRefusals() throws {
        let agent = try start("agent", name: "agent")
        let address = "127.0.0.1:\(agent.port)"
        let v1 = try workloadCopy("v1", tag: "v1")

        let none = try run(["update-workload", address, "--workload", v1])
        XCTAssertEqual(none.status, 64, none.stderr)
        XCTAssertTrue(none.stderr.contains("CVM_API_TOKEN") && none.stderr.contains("api-token")
                      && none.stderr.contains(dir + "/_artifacts/agent_127.0.0.1_\(agent.port)/api-token"), none.stderr)

        let wrong = String(repeating: "5a", count: 32)
        let broken = dir + "/broken"
        try FileManager.default.copyItem(atPath: v1, toPath: broken)
        try FileManager.default.removeItem(atPath: broken + "/docker-compose.yml")
        let refused = try run(["update-workload", address, wrong, "--workload", broken])
        XCTAssertEqual(refused.status, 1, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("error: \(broken)/docker-compose.yml: missing"), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("nothing was sent"), refused.stderr)
        XCTAssertEqual(agent.requests, [], "nothing may be sent for a folder that fails the check")

        let unauthorized = try run(["update-workload", address, wrong, "--workload", v1])
        XCTAssertEqual(unauthorized.status, 1, unauthorized.stderr)
        XCTAssertTrue(unauthorized.stderr.contains("HTTP 401") && unauthorized.stderr.contains("the command line"), unauthorized.stderr)
        XCTAssertEqual(unauthorized.stderr.components(separatedBy: "cvm-cli: error:").count, 2, "one error line: \(unauthorized.stderr)")
        assertNoSecret(wrong, [refused, unauthorized])

        for (status, words) in [(403, "enable_workload_update_endpoint"), (415, "application/gzip"), (413, "too large")] {
            let other = try start("agent", name: "agent\(status)", extra: ["--update-status", String(status)])
            let at = "127.0.0.1:\(other.port)"
            XCTAssertEqual(try run(["api-token", at]).status, 0)
            let r = try run(["update-workload", at, "--workload", v1])
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("HTTP \(status)") && r.stderr.contains(words), r.stderr)
            XCTAssertEqual(other.requests.filter { $0.hasPrefix("POST") }, ["POST /update-workload \(status)"])
            assertNoSecret(try String(contentsOfFile: other.certDir + "/token", encoding: .utf8), [r])
        }

        let skewed = try start("agent", name: "skewed", extra: ["--extra-extend"])
        let at = "127.0.0.1:\(skewed.port)"
        XCTAssertEqual(try run(["api-token", at]).status, 0)
        let out = dir + "/skewed.json"
        let mismatch = try run(["update-workload", at, "--workload", v1, "-o", out])
        XCTAssertEqual(mismatch.status, 1, mismatch.stderr)
        XCTAssertTrue(mismatch.stdout.contains("MISMATCH"), mismatch.stdout)
        XCTAssertNotEqual(printedPCR("new", mismatch.stdout), printedPCR("predicted", mismatch.stdout))
        XCTAssertTrue(mismatch.stderr.contains("besides the workload measurement"), mismatch.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "a mismatched golden measurement must not be written")

        let moved = try start("agent", name: "moved", extra: ["--extend-before"])
        let movedAt = "127.0.0.1:\(moved.port)"
        XCTAssertEqual(try run(["api-token", movedAt]).status, 0)
        let base = try run(["update-workload", movedAt, "--workload", v1])
        XCTAssertEqual(base.status, 1, base.stderr)
        XCTAssertTrue(base.stdout.contains("MISMATCH"), base.stdout)
        XCTAssertTrue(base.stderr.contains("something else extended PCR 23 in between"), base.stderr)

        let late = try start("agent", name: "late", extra: ["--report-delay", "2.5"])
        let lateAt = "127.0.0.1:\(late.port)"
        XCTAssertEqual(try run(["api-token", lateAt]).status, 0)
        let waited = try run(["update-workload", lateAt, "--workload", v1])
        XCTAssertEqual(waited.status, 0, waited.stderr)
        XCTAssertEqual(printedPCR("new", waited.stdout), printedPCR("predicted", waited.stdout))
        let afterPost = late.requests.drop { !$0.hasPrefix("POST") }
        XCTAssertGreaterThan(afterPost.filter { $0 == "GET /golden-measurement" }.count, 1, "\(late.requests)")
    }

    /// The agent at a recorded ip:port is replaced by one with another certificate (same
    /// address): golden fetch, api-token and update-workload refuse, naming both fingerprints
    /// and known_agents.json; the new server receives nothing and nothing is written. A wrong
    /// --pin refuses on first use too.
    func testSameAddressNewCertificateIsRefusedByEveryCommand() throws {
        let original = try start("agent", name: "original")
        let address = "127.0.0.1:\(original.port)"
        let known = dir + "/_artifacts/known_agents.json"
        let first = try run(["golden", "fetch", "127.0.0.1", "--port", String(original.port)])
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertEqual((try readJSON(known)[address] as? [String: Any])?["tls_fingerprint"] as? String, "sha256:" + original.fingerprint)
        let knownBefore = try Data(contentsOf: URL(fileURLWithPath: known))
        for child in children where child.isRunning { child.terminate(); child.waitUntilExit() }

        let impostor = try start("agent", name: "impostor", extra: ["--port", String(original.port)])
        XCTAssertEqual(impostor.port, original.port)
        XCTAssertNotEqual(impostor.fingerprint, original.fingerprint)
        let v1 = try workloadCopy("v1", tag: "v1")
        let token = String(repeating: "c3", count: 32)
        let out = dir + "/golden.json"
        let commands: [[String]] = [
            ["golden", "fetch", "127.0.0.1", "--port", String(original.port), "-o", out],
            ["api-token", address],
            ["update-workload", address, token, "--workload", v1, "-o", out],
        ]
        for args in commands {
            let r = try run(args)
            XCTAssertEqual(r.status, 1, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(original.fingerprint) && r.stderr.contains(impostor.fingerprint), r.stderr)
            XCTAssertTrue(r.stderr.contains(known) && r.stderr.contains("refused before sending"), r.stderr)
            assertNoSecret(token, [r])
        }
        XCTAssertEqual(impostor.requests, [], "the impostor must receive nothing")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/_artifacts/agent_127.0.0.1_\(original.port)/api-token"))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: known)), knownBefore, "the record must not change")

        // First use with a wrong --pin: refused, nothing recorded, nothing sent.
        let fresh = try start("agent", name: "fresh")
        let freshAt = "127.0.0.1:\(fresh.port)"
        let pin = "sha256:" + original.fingerprint
        for args in [["api-token", freshAt, "--pin", pin], ["update-workload", freshAt, token, "--workload", v1, "--pin", pin]] {
            let r = try run(args)
            XCTAssertEqual(r.status, 1, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(fresh.fingerprint) && r.stderr.contains("--pin"), r.stderr)
        }
        XCTAssertEqual(fresh.requests, [])
        XCTAssertNil(try readJSON(known)[freshAt])
    }
}
