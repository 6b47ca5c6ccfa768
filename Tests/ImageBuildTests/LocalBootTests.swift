import CVMCrypto
import CVMSupport
import DiskUpdate
import Foundation
import ImageBuild
import LocalVM
import TPM2
import Workload
import XCTest

/// Boots the base image under QEMU (TCG here) with deploy-local's code and checks what the agent
/// reports against what the host computes. Slow (a boot is 15–60 s of one core).
final class LocalBootTests: XCTestCase {
    /// The agent answers; PCR 23 is the host's workload measurement; the firmware event log
    /// replays to the PCRs the agent read from the TPM.
    func testBootMeasuresWorkloadAndEventLogReplays() throws {
        let dir = try ImageTestSupport.temporaryDirectory("boot")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (image, manifest) = try LocalBootSupport.buildImage(dir)
        let options = LocalBootSupport.deployOptions(disk: image, dir: dir, name: "boot-test")
        let artifact = try LocalDeploy.start(options)
        defer { try? LocalDeploy.stop(artifactFile: LocalDeploy.artifactPath(options)) }

        // The artifact records the exact qemu command line and the forwards.
        XCTAssertTrue(artifact.qemuCommand.contains("-nodefaults"))
        XCTAssertTrue(artifact.qemuCommandLine.contains("snapshot=on"), "the user's disk must not be written")
        XCTAssertEqual(artifact.ports.first, LocalDeploy.PortForward(host: options.port, guest: 8000))

        guard let (status, body) = LocalDeploy.httpGet(port: artifact.ports[1].host, path: "/golden-measurement") else {
            return XCTFail("the agent stopped answering")
        }
        XCTAssertEqual(status, 200)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        XCTAssertEqual(json["version"] as? Int, 1)
        XCTAssertEqual(json["tee"] as? String, "none")
        let bank = try XCTUnwrap((json["pcrs"] as? [String: Any])?["sha256"] as? [String: String])
        XCTAssertEqual(bank.count, 24)
        // The sample policy's firewall (tcp 7999 and 8000) is applied and read back from the kernel.
        let firewall = try XCTUnwrap(json["firewall"] as? [String: Any])
        XCTAssertEqual(firewall["applied"] as? Bool, true, "\(firewall)")
        XCTAssertEqual((firewall["rules"] as? [String])?.suffix(2), ["tcp dport 7999 accept", "tcp dport 8000 accept"])
        XCTAssertEqual((firewall["kernel_rules"] as? [[String]])?.count, 4, "\(firewall)")

        // PCR 23: the same code as update-disk, on the host.
        let host = try WorkloadMeasurement.measure(try WorkloadFolder(path: ImageTestSupport.repo + "/workload"))
        XCTAssertEqual(bank["23"], host.pcr23)
        XCTAssertEqual(manifest.workloadPCR23, host.pcr23)
        let events = try XCTUnwrap(json["workload_events"] as? [[String: String]])
        XCTAssertEqual(events.map { $0["name"] ?? "" }, host.events.map(\.name))
        XCTAssertEqual(events.map { $0["digest"] ?? "" }, host.events.map(\.digest))

        // HTTPS on the main port serves the same document; the certificate is the one whose
        // fingerprint the agent reports.
        let fingerprint = try XCTUnwrap(json["tls_fingerprint"] as? String)
        XCTAssertTrue(fingerprint.hasPrefix("sha256:") && fingerprint.count == 71, fingerprint)
        let curl = try ImageTestSupport.tool("curl", package: "curl")
        let overTLS = try curl.run(["-sSk", "--max-time", "30", "https://127.0.0.1:\(options.port)/golden-measurement"])
        let tlsJSON = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(overTLS.utf8)) as? [String: Any])
        XCTAssertEqual(tlsJSON["tls_fingerprint"] as? String, fingerprint)
        let sh = try ImageTestSupport.tool("sh", package: "dash")
        _ = try ImageTestSupport.tool("openssl", package: "openssl")
        let served = try sh.run(["-c", "openssl s_client -connect 127.0.0.1:\(options.port) </dev/null 2>/dev/null | openssl x509 -outform DER | sha256sum"])
        XCTAssertEqual("sha256:" + (served.split(separator: " ").first.map(String.init) ?? ""), fingerprint)

        // Firmware event log: replays to the reported PCRs, and holds the UKI boot (PCR 4).
        let logBytes = try XCTUnwrap(Base64.decode(try XCTUnwrap(json["event_log"] as? String)))
        let log = try TCGEventLog(logBytes)
        let replayed = log.replay { SHA256.hash($0) }
        XCTAssertNotNil(replayed[4], "no boot application measured into PCR 4")
        for (pcr, value) in replayed {
            XCTAssertEqual(hexString(value), bank[String(pcr)], "PCR \(pcr) does not replay")
        }

        // cvm-cli against the booted VM by name: golden fetch trusts the agent's certificate on
        // first use (recorded in the VM's artifact), sign → verify; api-token stores the token
        // 0600 without printing it, and a second call says where it is.
        let cli = ExternalTool(name: "cvm-cli", package: "cvm-cli", path: try ImageTestSupport.product("cvm-cli"))
        let artifacts = ["--artifacts", options.artifactsDir]
        let golden = dir + "/golden.json"
        let fetch = try cli.runCapturing(["golden", "fetch", "boot-test", "-o", golden] + artifacts)
        XCTAssertEqual(fetch.status, 0, fetch.stderr)
        XCTAssertTrue(fetch.stderr.contains("workload: not running — measured, not running: the policy's container engine (podman) is not usable"), fetch.stderr)
        let recorded = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: LocalDeploy.artifactPath(options)))) as? [String: Any])
        XCTAssertEqual(recorded["agent_tls_fingerprint"] as? String, fingerprint)
        let fetched = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: golden))) as? [String: Any])
        XCTAssertEqual(((fetched["pcrs"] as? [String: Any])?["sha256"] as? [String: String])?["23"], host.pcr23)
        // golden predict reads PCR 23 off the disk: the booted VM's value.
        let predict = try cli.runCapturing(["golden", "predict", image, "-o", dir + "/predicted.json"])
        XCTAssertEqual(predict.status, 0, predict.stderr)
        let predicted = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/predicted.json"))) as? [String: Any])
        XCTAssertEqual(((predicted["pcrs"] as? [String: Any])?["sha256"] as? [String: String])?["23"], bank["23"])
        let listed = Set(((predicted["pcrs"] as? [String: Any])?["sha256"] as? [String: String] ?? [:]).keys)
            .union(((predicted["unpredictable"] as? [String: String]) ?? [:]).keys)
        XCTAssertEqual(listed.count, 24, "every PCR is predicted or listed with its reason (BootPredictionBootTests compares them)")
        let again = try cli.runCapturing(["golden", "fetch", "boot-test", "-o", dir + "/golden2.json"] + artifacts)
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertFalse(again.stderr.contains("first use"), again.stderr)
        try sh.run(["-c", "openssl ecparam -name prime256v1 -genkey -noout -out \"$1/key.pem\" && openssl ec -in \"$1/key.pem\" -pubout -out \"$1/pub.pem\" 2>/dev/null", "sh", dir])
        let sign = try cli.runCapturing(["golden", "sign", golden, dir + "/key.pem", "-o", dir + "/signed.json"])
        XCTAssertEqual(sign.status, 0, sign.stderr)
        let verify = try cli.runCapturing(["golden", "verify", dir + "/signed.json", dir + "/pub.pem"])
        XCTAssertEqual(verify.status, 0, verify.stderr)

        let token = try cli.runCapturing(["api-token", "boot-test"] + artifacts)
        XCTAssertEqual(token.status, 0, token.stderr)
        let tokenFile = options.artifactsDir + "/boot-test/api-token"
        let stored = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(stored.count, 64)
        XCTAssertEqual((try FileManager.default.attributesOfItem(atPath: tokenFile)[.posixPermissions] as? Int).map { $0 & 0o777 }, 0o600)
        XCTAssertFalse(token.stdout.contains(stored) || token.stderr.contains(stored), "the token must not be printed")
        let second = try cli.runCapturing(["api-token", "boot-test"] + artifacts)
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertTrue(second.stderr.contains(tokenFile), second.stderr)
    }

    /// One flipped byte in the root partition: the initramfs refuses to boot and says why.
    func testTamperedRootRefusesToBoot() throws {
        let dir = try ImageTestSupport.temporaryDirectory("tamper")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (image, manifest) = try LocalBootSupport.buildImage(dir)
        let root = try XCTUnwrap(manifest.partitions.first { $0.name == "root" })
        let file = FileDescriptor(fd: open(image, O_RDWR), path: image)
        let target = root.offset + root.size / 3
        var byte = try file.read(count: 1, at: target)
        byte[0] ^= 0x01
        try file.write(byte, at: target)
        file.close()

        let options = LocalBootSupport.deployOptions(disk: image, dir: dir, name: "tamper-test")
        XCTAssertThrowsError(try LocalDeploy.start(options)) { error in
            XCTAssertTrue("\(error)".contains("refusing to boot"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: LocalDeploy.artifactPath(options)), "state left behind")
    }

    /// update-disk with one changed config file, then a boot: PCR 23 is the new prediction, not the old.
    func testUpdateDiskChangesPCR23AsPredicted() throws {
        let dir = try ImageTestSupport.temporaryDirectory("update-boot")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (image, manifest) = try LocalBootSupport.buildImage(dir)
        let changed = dir + "/workload"
        try FileManager.default.copyItem(atPath: ImageTestSupport.repo + "/workload", toPath: changed)
        let conf = changed + "/config/web/default.conf"
        try (try String(contentsOfFile: conf, encoding: .utf8) + "\n# changed by the test\n").write(toFile: conf, atomically: true, encoding: .utf8)
        var update = UpdateDisk.Options()
        update.workloadPath = changed
        update.timestamp = 0
        let result = try UpdateDisk.run(disk: image, options: update)
        XCTAssertNotEqual(result.measurement.pcr23, manifest.workloadPCR23)

        let options = LocalBootSupport.deployOptions(disk: image, dir: dir, name: "update-test")
        let artifact = try LocalDeploy.start(options)
        defer { try? LocalDeploy.stop(artifactFile: LocalDeploy.artifactPath(options)) }
        let (status, body) = try XCTUnwrap(LocalDeploy.httpGet(port: artifact.ports[1].host, path: "/golden-measurement"))
        XCTAssertEqual(status, 200)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        let bank = try XCTUnwrap((json["pcrs"] as? [String: Any])?["sha256"] as? [String: String])
        XCTAssertEqual(bank["23"], result.measurement.pcr23)
        XCTAssertEqual(LocalDeploy.httpGet(port: artifact.ports[1].host, path: "/nope")?.status, 404)

        // The API token: `cvm-cli api-token` stores it (pinning the agent's certificate on first
        // use); the agent issues it once, then 410 Gone.
        let cli = ExternalTool(name: "cvm-cli", package: "cvm-cli", path: try ImageTestSupport.product("cvm-cli"))
        let artifacts = ["--artifacts", options.artifactsDir]
        let retrieved = try cli.runCapturing(["api-token", "update-test"] + artifacts)
        XCTAssertEqual(retrieved.status, 0, retrieved.stderr)
        let token = try String(contentsOfFile: options.artifactsDir + "/update-test/api-token", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(token.count, 64)
        XCTAssertEqual(LocalDeploy.httpGet(port: artifact.ports[1].host, path: "/api-token")?.status, 410)

        // Collaterals: a quote bound to a fresh nonce and the TLS key, checked by an independent
        // verifier (Python cryptography); a bad nonce is refused.
        let http = artifact.ports[1].host
        let nonce = hexString(SHA256.hash(UUID().uuidString))
        let collaterals = try XCTUnwrap(LocalDeploy.httpGet(port: http, path: "/collaterals/\(nonce)"))
        XCTAssertEqual(collaterals.status, 200, String(decoding: collaterals.body, as: UTF8.self))
        try Data(collaterals.body).write(to: URL(fileURLWithPath: dir + "/collaterals.json"))
        let python = try ImageTestSupport.tool("python3", package: "python3")
        let verified = try python.run([ImageTestSupport.repo + "/scripts/verify-collaterals.py", dir + "/collaterals.json", nonce])
        XCTAssertTrue(verified.contains("\"verified\": true"), verified)
        XCTAssertThrowsError(try python.run([ImageTestSupport.repo + "/scripts/verify-collaterals.py", dir + "/collaterals.json", String(nonce.reversed())]))
        XCTAssertEqual(LocalDeploy.httpGet(port: http, path: "/collaterals/abc")?.status, 400)
        XCTAssertEqual(json["workload_status"] as? String, "not running", "\(json)")
        XCTAssertTrue((json["workload_detail"] as? String ?? "").contains("container engine (podman) is not usable in this image"), "\(json)")
        XCTAssertTrue(json["container_engine"] is NSNull, "\(json)")

        // update-workload: no token → 401, wrong token → 401, the token → measured and extended.
        let newWorkload = dir + "/workload-v2"
        try FileManager.default.copyItem(atPath: changed, toPath: newWorkload)
        try "# v2 of the config\n".write(toFile: newWorkload + "/config/web/v2.conf", atomically: true, encoding: .utf8)
        let tar = try ImageTestSupport.tool("tar", package: "tar")
        try tar.run(["-czf", dir + "/v2.tar.gz", "-C", newWorkload, "."])
        let curl = try ImageTestSupport.tool("curl", package: "curl")
        func post(_ headers: [String]) throws -> (Int, String) {
            let out = try curl.run(["-sS", "--max-time", "120", "-o", dir + "/post.json", "-w", "%{http_code}", "-X", "POST",
                                    "-H", "Content-Type: application/gzip", "--data-binary", "@" + dir + "/v2.tar.gz"]
                                   + headers.flatMap { ["-H", $0] } + ["http://127.0.0.1:\(http)/update-workload"])
            return (Int(out) ?? 0, (try? String(contentsOfFile: dir + "/post.json", encoding: .utf8)) ?? "")
        }
        XCTAssertEqual(try post([]).0, 401)
        XCTAssertEqual(try post(["Authorization: Bearer " + String(repeating: "0", count: 64)]).0, 401)
        let (updated, updateBody) = try post(["Authorization: Bearer " + token])
        XCTAssertEqual(updated, 200, updateBody)
        let host2 = try WorkloadMeasurement.measure(try WorkloadFolder(path: newWorkload))
        var expected = hexToBytesForTest(result.measurement.pcr23)
        for event in host2.events { expected = SHA256.hash(expected + hexToBytesForTest(event.digest)) }
        let after = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(updateBody.utf8)) as? [String: Any])
        XCTAssertEqual(after["previous_pcr23"] as? String, result.measurement.pcr23)
        XCTAssertEqual(after["pcr23"] as? String, hexString(expected))
        let (_, body2) = try XCTUnwrap(LocalDeploy.httpGet(port: http, path: "/golden-measurement"))
        let json2 = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body2)) as? [String: Any])
        let bank2 = try XCTUnwrap((json2["pcrs"] as? [String: Any])?["sha256"] as? [String: String])
        XCTAssertEqual(bank2["23"], hexString(expected), "PCR 23 = old value extended by the new events")
        XCTAssertEqual(json2["workload_pcr23_base"] as? String, result.measurement.pcr23)
        XCTAssertEqual((json2["workload_events"] as? [[String: String]])?.map { $0["digest"] ?? "" }, host2.events.map(\.digest))

        // cvm-cli update-workload end to end (pinned TLS, the stored token): a wrong token is a
        // 401 line; then the v3 folder, whose PCR 23 the CLI predicts from the value after v2.
        let v3 = dir + "/workload-v3"
        try FileManager.default.copyItem(atPath: newWorkload, toPath: v3)
        try "# v3 of the config\n".write(toFile: v3 + "/config/web/v3.conf", atomically: true, encoding: .utf8)
        let wrongToken = String(repeating: "7e", count: 32)
        let refused = try cli.runCapturing(["update-workload", "update-test", wrongToken, "--workload", v3] + artifacts)
        XCTAssertEqual(refused.status, 1, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("HTTP 401"), refused.stderr)
        XCTAssertFalse(refused.stderr.contains(wrongToken) || refused.stdout.contains(wrongToken))
        let newGolden = dir + "/new-golden.json"
        let cliUpdate = try cli.runCapturing(["update-workload", "update-test", "--workload", v3, "-o", newGolden] + artifacts)
        XCTAssertEqual(cliUpdate.status, 0, cliUpdate.stderr)
        XCTAssertFalse(cliUpdate.stdout.contains(token) || cliUpdate.stderr.contains(token), "the token must not be printed")
        var expected3 = expected
        for event in try WorkloadMeasurement.measure(try WorkloadFolder(path: v3)).events {
            expected3 = SHA256.hash(expected3 + hexToBytesForTest(event.digest))
        }
        let lines = cliUpdate.stdout.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines.contains("PCR 23 before:    \(hexString(expected))"), cliUpdate.stdout)
        XCTAssertTrue(lines.contains("PCR 23 predicted: \(hexString(expected3))"), cliUpdate.stdout)
        XCTAssertTrue(lines.contains("PCR 23 new:       \(hexString(expected3))  MATCH"), cliUpdate.stdout)
        let (_, body3) = try XCTUnwrap(LocalDeploy.httpGet(port: http, path: "/golden-measurement"))
        let json3 = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body3)) as? [String: Any])
        XCTAssertEqual(((json3["pcrs"] as? [String: Any])?["sha256"] as? [String: String])?["23"], hexString(expected3), "the agent's PCR 23")
        let saved = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: newGolden))) as? [String: Any])
        XCTAssertEqual(((saved["pcrs"] as? [String: Any])?["sha256"] as? [String: String])?["23"], hexString(expected3))
        XCTAssertEqual(saved["workload_pcr23_base"] as? String, hexString(expected))
        XCTAssertEqual(saved["workload_updates"] as? Int, 2)

        // The token is never written to the console.
        let console = try String(contentsOfFile: artifact.consoleLog, encoding: .utf8)
        XCTAssertFalse(console.contains(token))
    }

    func hexToBytesForTest(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = hex.startIndex
        while let j = hex.index(i, offsetBy: 2, limitedBy: hex.endIndex), i < hex.endIndex {
            out.append(UInt8(hex[i..<j], radix: 16) ?? 0)
            i = j
        }
        return out
    }

    /// Ctrl-C while the VM boots: cvm-cli deploy-local stops qemu and swtpm, removes the state
    /// and exits 130.
    func testInterruptDuringBootLeavesNothingRunning() throws {
        let dir = try ImageTestSupport.temporaryDirectory("interrupt")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (image, _) = try LocalBootSupport.buildImage(dir)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try ImageTestSupport.product("cvm-cli"))
        process.arguments = ["deploy-local", "--disk", image, "--vm_name", "interrupt-test", "--port", String(LocalBootSupport.freePort())]
        process.currentDirectoryURL = URL(fileURLWithPath: dir)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let artifact = dir + "/_artifacts/local_interrupt-test.json"
        // Wait until qemu runs (the artifact appears), then interrupt.
        for _ in 0..<300 where !FileManager.default.fileExists(atPath: artifact) && process.isRunning { usleep(100_000) }
        let data = try XCTUnwrap(FileManager.default.contents(atPath: artifact), "deploy-local never started qemu")
        let recorded = try JSONDecoder().decode(LocalDeploy.Artifact.self, from: data)
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 130)
        XCTAssertFalse(FileManager.default.fileExists(atPath: artifact))
        XCTAssertFalse(FileManager.default.fileExists(atPath: recorded.stateDir))
        usleep(500_000)
        XCTAssertNotEqual(kill(recorded.qemuPID, 0), 0, "qemu still running")
        XCTAssertNotEqual(kill(recorded.swtpmPID, 0), 0, "swtpm still running")
    }
}
