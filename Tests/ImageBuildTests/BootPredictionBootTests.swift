import BootPrediction
import CVMCrypto
import CVMSupport
import Foundation
import LocalVM
import TPM2
import XCTest

/// `golden predict` against the real boot: every PCR it predicts (from the disk and the OVMF
/// files, before the VM exists) equals the booted VM's, and its predicted events are exactly
/// the firmware event log's for those PCRs. One boot (TCG: 20–60 s).
final class BootPredictionBootTests: XCTestCase {
    func testPredictedPCRsEqualTheBootedVM() throws {
        let dir = try ImageTestSupport.temporaryDirectory("predict-boot")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (image, _) = try LocalBootSupport.buildImage(dir)

        // Predict first, through the CLI, with deploy-local's own firmware (the default).
        let cli = ExternalTool(name: "cvm-cli", package: "cvm-cli", path: try ImageTestSupport.product("cvm-cli"))
        let run = try cli.runCapturing(["golden", "predict", image, "-o", dir + "/predicted.json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let document = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/predicted.json"))) as? [String: Any])
        let predicted = try XCTUnwrap((document["pcrs"] as? [String: Any])?["sha256"] as? [String: String])
        let unpredictable = try XCTUnwrap(document["unpredictable"] as? [String: String])
        let bootEvents = try XCTUnwrap(document["boot_events"] as? [[String: Any]])
        XCTAssertNotNil(document["workload_events"])

        // Each PCR is either predicted or listed with a reason, never both.
        XCTAssertEqual(Set(predicted.keys).union(unpredictable.keys), Set((0..<24).map(String.init)))
        XCTAssertTrue(Set(predicted.keys).isDisjoint(with: unpredictable.keys), "\(predicted.keys) vs \(unpredictable.keys)")
        for (pcr, reason) in unpredictable { XCTAssertGreaterThan(reason.count, 30, "PCR \(pcr): '\(reason)' is not a reason") }
        XCTAssertEqual(Set(unpredictable.keys), ["0", "10"], "\(unpredictable)")
        // Everything but PCR 0 (and IMA's PCR 10, which hashes it) on this machine.
        for pcr in ["1", "2", "3", "4", "5", "6", "7", "9", "11", "23"] { XCTAssertNotNil(predicted[pcr], "PCR \(pcr) not predicted: \(unpredictable[pcr] ?? "")") }

        let options = LocalBootSupport.deployOptions(disk: image, dir: dir, name: "predict-test")
        let artifact = try LocalDeploy.start(options)
        defer { try? LocalDeploy.stop(artifactFile: LocalDeploy.artifactPath(options)) }
        let (status, body) = try XCTUnwrap(LocalDeploy.httpGet(port: artifact.ports[1].host, path: "/golden-measurement"))
        XCTAssertEqual(status, 200)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        let bank = try XCTUnwrap((json["pcrs"] as? [String: Any])?["sha256"] as? [String: String])

        for (pcr, value) in predicted {
            XCTAssertEqual(value, bank[pcr], "PCR \(pcr): predicted \(value), the VM has \(bank[pcr] ?? "nothing")")
        }

        // The predicted events are the log's, PCR by PCR and in order (type and digest).
        let log = try TCGEventLog(try XCTUnwrap(Base64.decode(try XCTUnwrap(json["event_log"] as? String))))
        var logged: [Int: [String]] = [:]
        for e in log.events where e.type != TCGEventLog.evNoAction {
            logged[Int(e.pcr), default: []].append(TCGEventType.name(e.type) + " " + hexString(e.digests[TPM2.algSHA256] ?? []))
        }
        var expected: [Int: [String]] = [:]
        for e in bootEvents {
            let pcr = try XCTUnwrap(e["pcr"] as? Int)
            expected[pcr, default: []].append("\(try XCTUnwrap(e["type"] as? String)) \(try XCTUnwrap(e["digest"] as? String))")
        }
        XCTAssertEqual(Set(expected.keys), [1, 2, 3, 4, 5, 6, 7, 9, 11])
        for (pcr, events) in expected {
            XCTAssertEqual(events, logged[pcr] ?? [], "PCR \(pcr): predicted events differ from the firmware's event log")
        }
        // PCRs predicted without events are ones nothing in the log extends.
        for pcr in predicted.keys.compactMap(Int.init) where expected[pcr] == nil && pcr != 23 {
            XCTAssertNil(logged[pcr], "PCR \(pcr) is extended in the log but predicted as its reset value")
        }
    }
}
