import Attestation
import CVMCrypto
import CVMSupport
import Foundation
import LocalVM
import XCTest

/// `cvm-cli verify` and the agent's `POST /offchain-verify` on the booted base image: real OVMF
/// event log, real workload events, swtpm's quote. One boot for every check (TCG is slow).
final class VerifyBootTests: XCTestCase {
    func testVerifyAndOffchainVerifyOnTheBootedImage() throws {
        let dir = try ImageTestSupport.temporaryDirectory("verify-boot")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (image, _) = try LocalBootSupport.buildImage(dir)
        let options = LocalBootSupport.deployOptions(disk: image, dir: dir, name: "verify-test")
        let artifact = try LocalDeploy.start(options)
        defer { try? LocalDeploy.stop(artifactFile: LocalDeploy.artifactPath(options)) }
        let http = artifact.ports[1].host                    // forwarded to the guest's 7999
        let cli = ExternalTool(name: "cvm-cli", package: "cvm-cli", path: try ImageTestSupport.product("cvm-cli"))
        let python = try ImageTestSupport.tool("python3", package: "python3")
        let curl = try ImageTestSupport.tool("curl", package: "curl")

        let (status, goldenBody) = try XCTUnwrap(LocalDeploy.httpGet(port: http, path: "/golden-measurement", timeout: 60))
        XCTAssertEqual(status, 200)
        let golden = dir + "/golden.json"
        try Data(goldenBody).write(to: URL(fileURLWithPath: golden))
        let goldenJSON = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(goldenBody)) as? [String: Any])
        let bank = try XCTUnwrap((goldenJSON["pcrs"] as? [String: Any])?["sha256"] as? [String: String])

        let nonce = hexString(SHA256.hash(UUID().uuidString))
        let (cStatus, collateralsBody) = try XCTUnwrap(LocalDeploy.httpGet(port: http, path: "/collaterals/\(nonce)", timeout: 60))
        XCTAssertEqual(cStatus, 200, String(decoding: collateralsBody, as: UTF8.self))
        let collaterals = dir + "/collaterals.json"
        try Data(collateralsBody).write(to: URL(fileURLWithPath: collaterals))

        // The golden measurement the agent served: a full match (24 PCRs, the OVMF log replays).
        let pass = try cli.runCapturing(["verify", collaterals, golden, "--nonce", nonce])
        XCTAssertEqual(pass.status, 0, pass.stdout + pass.stderr)
        XCTAssertTrue(pass.stdout.contains("Verdict: PASS — 24 PCRs match"), pass.stdout)
        XCTAssertTrue(pass.stdout.contains("PASS    event_log"), pass.stdout)
        XCTAssertTrue(pass.stdout.contains("PASS    tls_fingerprint"), pass.stdout)
        let script = ImageTestSupport.repo + "/scripts/verify-collaterals.py"
        XCTAssertEqual(try python.runCapturing([script, collaterals, nonce, "--golden", golden]).status, 0)

        // golden predict (from the disk and the firmware files, docs/boot-measurements.md) passes too.
        let predict = try cli.runCapturing(["golden", "predict", image, "-o", dir + "/predicted.json"])
        XCTAssertEqual(predict.status, 0, predict.stderr)
        let predicted = try cli.runCapturing(["verify", collaterals, dir + "/predicted.json", "--json"])
        XCTAssertEqual(predicted.status, 0, predicted.stdout + predicted.stderr)
        let predictedReport = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(predicted.stdout.utf8)) as? [String: Any])
        let rows = try XCTUnwrap(predictedReport["pcrs"] as? [[String: Any]])
        // Every PCR but 0 and IMA's 10 is predicted (docs/boot-measurements.md) and matches the quote.
        XCTAssertEqual(Set(rows.filter { $0["status"] as? String == "match" }.compactMap { $0["pcr"] as? Int }), Set((1...23).filter { $0 != 10 }))
        XCTAssertEqual(rows.filter { $0["status"] as? String == "unpredictable" }.compactMap { $0["pcr"] as? Int }.sorted(), [0, 10])

        // A golden measurement with a changed PCR 4 (another UKI): exit 1 naming PCR 4.
        var changedJSON = goldenJSON
        var changedBank = bank
        changedBank["4"] = hexString(SHA256.hash("another UKI"))
        changedJSON["pcrs"] = ["sha256": changedBank]
        let changed = dir + "/changed.json"
        try JSONSerialization.data(withJSONObject: changedJSON, options: [.sortedKeys]).write(to: URL(fileURLWithPath: changed))
        let fail = try cli.runCapturing(["verify", collaterals, changed, "--nonce", nonce])
        XCTAssertEqual(fail.status, 1, fail.stdout)
        XCTAssertTrue(fail.stderr.contains("verification failed: PCR 4: quoted \(bank["4"]!), golden \(changedBank["4"]!)"), fail.stderr)
        XCTAssertNotEqual(try python.runCapturing([script, collaterals, nonce, "--golden", changed]).status, 0)

        // POST /offchain-verify: the agent quotes with our nonce and runs the same verifier.
        func offchain(_ body: [String: Any]) throws -> (Int, [String: Any]) {
            let request = dir + "/request-\(UUID().uuidString).json"
            try JSONSerialization.data(withJSONObject: body).write(to: URL(fileURLWithPath: request))
            let answer = dir + "/answer.json"
            let code = try curl.run(["-sS", "--max-time", "120", "-o", answer, "-w", "%{http_code}", "-X", "POST",
                                     "-H", "Content-Type: application/json", "--data-binary", "@" + request,
                                     "http://127.0.0.1:\(http)/offchain-verify"])
            let json = (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: answer)))) as? [String: Any] ?? [:]
            return (Int(code) ?? 0, json)
        }
        let nonce2 = hexString(SHA256.hash("offchain " + nonce))
        let (okStatus, ok) = try offchain(["nonce": nonce2, "golden_measurement": goldenJSON])
        XCTAssertEqual(okStatus, 200, "\(ok)")
        XCTAssertEqual(ok["verified"] as? Bool, true, "\(ok)")
        XCTAssertEqual(ok["nonce"] as? String, nonce2)
        XCTAssertEqual((ok["pcrs"] as? [[String: Any]])?.filter { $0["status"] as? String == "match" }.count, 24)
        // The collaterals it answers re-verify on the host with our nonce.
        let returned = try XCTUnwrap(ok["collaterals"] as? [String: Any])
        try JSONSerialization.data(withJSONObject: returned).write(to: URL(fileURLWithPath: dir + "/returned.json"))
        let recheck = try cli.runCapturing(["verify", dir + "/returned.json", golden, "--nonce", nonce2])
        XCTAssertEqual(recheck.status, 0, recheck.stdout + recheck.stderr)

        let (badStatus, bad) = try offchain(["nonce": nonce2, "golden_measurement": changedJSON])
        XCTAssertEqual(badStatus, 200)
        XCTAssertEqual(bad["verified"] as? Bool, false)
        XCTAssertEqual(bad["verdict"] as? String, "fail")
        XCTAssertEqual((bad["reasons"] as? [String])?.count, 1, "\(bad["reasons"] ?? "")")
        XCTAssertTrue((bad["reasons"] as? [String])?.first?.hasPrefix("PCR 4: ") == true, "\(bad["reasons"] ?? "")")

        // Signed: without public_key → 400 saying so; with the publisher's key → pass.
        let sh = try ImageTestSupport.tool("sh", package: "dash")
        try sh.run(["-c", "openssl ecparam -name prime256v1 -genkey -noout -out \"$1/key.pem\" && openssl ec -in \"$1/key.pem\" -pubout -out \"$1/pub.pem\" 2>/dev/null", "sh", dir])
        let sign = try cli.runCapturing(["golden", "sign", golden, dir + "/key.pem", "-o", dir + "/signed.json"])
        XCTAssertEqual(sign.status, 0, sign.stderr)
        let signed = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/signed.json"))))
        let (noKeyStatus, noKey) = try offchain(["nonce": nonce2, "golden_measurement": signed])
        XCTAssertEqual(noKeyStatus, 400)
        XCTAssertTrue((noKey["error"] as? String ?? "").contains("public_key"), "\(noKey)")
        let pem = try String(contentsOfFile: dir + "/pub.pem", encoding: .utf8)
        let (signedStatus, signedAnswer) = try offchain(["nonce": nonce2, "golden_measurement": signed, "public_key": pem])
        XCTAssertEqual(signedStatus, 200)
        XCTAssertEqual(signedAnswer["verified"] as? Bool, true, "\(signedAnswer["reasons"] ?? "")")
        XCTAssertTrue((signedAnswer["checks"] as? [[String: Any]] ?? []).contains { $0["name"] as? String == "golden_signature" && $0["status"] as? String == "pass" })

        // Bad bodies: 400 with a message naming what is expected.
        for (body, expected) in [("not json", "not valid JSON"), ("[1]", "expected a JSON object"),
                                 ("{\"nonce\":\"zz\",\"golden_measurement\":{}}", "nonce"),
                                 ("{\"nonce\":\"\(nonce2)\"}", "golden_measurement is missing"),
                                 ("{\"nonce\":\"\(nonce2)\",\"golden_measurement\":{\"x\":1}}", "not a golden measurement")] {
            let code = try curl.run(["-sS", "--max-time", "60", "-o", dir + "/bad.json", "-w", "%{http_code}", "-X", "POST",
                                     "--data-binary", body, "http://127.0.0.1:\(http)/offchain-verify"])
            XCTAssertEqual(code, "400", body)
            let message = try String(contentsOfFile: dir + "/bad.json", encoding: .utf8)
            XCTAssertTrue(message.contains(expected), "\(body): \(message)")
        }
        XCTAssertEqual(LocalDeploy.httpGet(port: http, path: "/offchain-verify")?.status, 405)

        // After update-workload: the old golden measurement fails on PCR 23 alone (the events
        // replay from workload_pcr23_base), the one fetched after the update passes, and a PCR 23
        // computed from zeros for the new workload fails with the reason.
        // The user's flow: api-token (pinned TLS, trust on first use recorded in the VM's
        // artifact; the token stored 0600), update-workload with the stored token (its -o is the
        // new golden measurement, written only when PCR 23 matches the host's prediction), a
        // pinned golden fetch that must agree, then collaterals over the agent's HTTP port.
        let artifacts = ["--artifacts", options.artifactsDir]
        let token = try cli.runCapturing(["api-token", "verify-test"] + artifacts)
        XCTAssertEqual(token.status, 0, token.stderr)
        let newWorkload = dir + "/workload-v2"
        try FileManager.default.copyItem(atPath: ImageTestSupport.repo + "/workload", toPath: newWorkload)
        try "# v2\n".write(toFile: newWorkload + "/config/web/v2.conf", atomically: true, encoding: .utf8)
        let golden2 = dir + "/golden2.json"
        let update = try cli.runCapturing(["update-workload", "verify-test", "--workload", newWorkload, "-o", golden2] + artifacts)
        XCTAssertEqual(update.status, 0, update.stdout + update.stderr)
        XCTAssertTrue(update.stdout.contains("MATCH") && !update.stdout.contains("MISMATCH"), update.stdout)
        let fetch = try cli.runCapturing(["golden", "fetch", "verify-test", "-o", dir + "/golden2-fetched.json"] + artifacts)
        XCTAssertEqual(fetch.status, 0, fetch.stderr)
        let fetchedJSON = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/golden2-fetched.json"))) as? [String: Any])
        let updatedJSON = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: golden2))) as? [String: Any])
        XCTAssertEqual(fetchedJSON["pcrs"] as? NSDictionary, updatedJSON["pcrs"] as? NSDictionary)
        let golden2Body = Array(try Data(contentsOf: URL(fileURLWithPath: golden2)))
        let nonce3 = hexString(SHA256.hash("after update " + nonce))
        let collaterals2 = dir + "/collaterals2.json"
        let fetched = try cli.runCapturing(["collaterals", "verify-test", "--nonce", nonce3, "-o", collaterals2] + artifacts)
        XCTAssertEqual(fetched.status, 0, fetched.stderr)

        let old = try cli.runCapturing(["verify", collaterals2, golden, "--nonce", nonce3, "--json"])
        XCTAssertEqual(old.status, 1, old.stdout)
        let oldReport = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(old.stdout.utf8)) as? [String: Any])
        XCTAssertEqual((oldReport["reasons"] as? [String])?.count, 1, "\(oldReport["reasons"] ?? "")")
        XCTAssertTrue((oldReport["reasons"] as? [String])?.first?.hasPrefix("PCR 23: ") == true, "\(oldReport["reasons"] ?? "")")
        let new = try cli.runCapturing(["verify", collaterals2, golden2, "--nonce", nonce3])
        XCTAssertEqual(new.status, 0, new.stdout + new.stderr)
        XCTAssertTrue(new.stdout.contains("replayed from workload_pcr23_base \(bank["23"]!)"), new.stdout)
        XCTAssertEqual(try python.runCapturing([script, collaterals2, nonce3, "--golden", golden2]).status, 0)
        XCTAssertNotEqual(try python.runCapturing([script, collaterals2, nonce3, "--golden", golden]).status, 0)

        var fromZeros = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(golden2Body)) as? [String: Any])
        var pcr23 = [UInt8](repeating: 0, count: 32)
        for event in try XCTUnwrap(fromZeros["workload_events"] as? [[String: String]]) {
            let digest = try XCTUnwrap(decodeHex(event["digest"] ?? ""))
            pcr23 = SHA256.hash(pcr23 + digest)
        }
        var zerosBank = try XCTUnwrap((fromZeros["pcrs"] as? [String: Any])?["sha256"] as? [String: String])
        zerosBank["23"] = hexString(pcr23)
        fromZeros["pcrs"] = ["sha256": zerosBank]
        try JSONSerialization.data(withJSONObject: fromZeros).write(to: URL(fileURLWithPath: dir + "/zeros.json"))
        let zeros = try cli.runCapturing(["verify", collaterals2, dir + "/zeros.json", "--nonce", nonce3])
        XCTAssertEqual(zeros.status, 1, zeros.stdout)
        XCTAssertTrue(zeros.stderr.contains("PCR 23: ") && zeros.stderr.contains("installed by update-workload"), zeros.stderr)
    }
}

