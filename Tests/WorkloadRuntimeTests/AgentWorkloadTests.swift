import CVMSupport
import AgentClient
import CVMTestData
import Foundation
import Workload
@testable import WorkloadRuntime
import XCTest

/// The real cvm-agent with a real podman and podman-compose: the measured workload runs, an
/// update replaces it, and every way it cannot run is reported, never hidden.
final class AgentWorkloadTests: XCTestCase {
    static let image = "localhost/cvm-test/web:1"
    nonisolated(unsafe) static var sandbox: PodmanSandbox?
    nonisolated(unsafe) static var archive = ""

    override class func setUp() {
        super.setUp()
        do {
            let s = try PodmanSandbox()
            archive = s.dir + "/web.tar"
            try s.makeImageArchive(name: image, at: archive)
            sandbox = s
        } catch {
            print("AgentWorkloadTests setup failed: \(error)")
        }
    }

    override class func tearDown() {
        sandbox?.tearDown()
        super.tearDown()
    }

    func sandbox() throws -> PodmanSandbox {
        try XCTUnwrap(Self.sandbox, "podman sandbox not set up (see the test log)")
    }

    /// A workload folder: the image archive, a compose file, a page, and the sample policy
    /// with the firewall also allowing `extraPort` and `policyEdit` applied.
    func makeWorkload(_ name: String, compose: String, page: String = "v1\n", archive: Bool = true,
                      policyEdit: (inout [String: Any]) -> Void = { _ in }) throws -> String {
        let s = try sandbox()
        let dir = s.dir + "/" + name
        try FileManager.default.createDirectory(atPath: dir + "/config/cvm_agent", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/config/web", withIntermediateDirectories: true)
        if archive { try FileManager.default.copyItem(atPath: Self.archive, toPath: dir + "/web.tar") }
        try compose.write(toFile: dir + "/docker-compose.yml", atomically: true, encoding: .utf8)
        try page.write(toFile: dir + "/config/web/index.html", atomically: true, encoding: .utf8)
        let sample = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("workload/config/cvm_agent/cvm_agent_policy.json")
        var policy = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: sample)) as? [String: Any])
        var cvm = policy["cvm_config"] as? [String: Any] ?? [:]
        var firewall = cvm["firewall"] as? [String: Any] ?? [:]
        firewall["allowed_ports"] = (firewall["allowed_ports"] as? [Any] ?? []) + [["name": "web", "protocol": "tcp", "port": "18080"]]
        cvm["firewall"] = firewall
        policy["cvm_config"] = cvm
        policyEdit(&policy)
        try JSONSerialization.data(withJSONObject: policy, options: [.prettyPrinted, .sortedKeys])
            .write(to: URL(fileURLWithPath: dir + "/config/cvm_agent/cvm_agent_policy.json"))
        return dir
    }

    static func webCompose(service: String = "web") -> String {
        """
        services:
          \(service):
            image: \(image)
            command: ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/srv"]
            ports:
              - "127.0.0.1:18080:80"
            volumes:
              - ./config/web:/srv:ro
        """
    }

    func containers(_ golden: [String: Any]) -> [[String: String]] {
        golden["containers"] as? [[String: String]] ?? []
    }

    func testMeasuredWorkloadRunsAndAnUpdateReplacesIt() throws {
        let s = try sandbox()
        let workload = try makeWorkload("run", compose: Self.webCompose())
        let expected = try WorkloadMeasurement.measure(WorkloadFolder(path: workload))
        let agent = try AgentInNamespace(workload: workload, sandbox: s, name: "run")
        defer { agent.stop() }

        var golden = try agent.settledGolden()
        XCTAssertEqual(golden["workload_status"] as? String, "running", "\(golden)\n\(agent.consoleText)")
        let engine = golden["container_engine"] as? [String: String]
        XCTAssertEqual(engine?["kind"], "podman")
        XCTAssertTrue(engine?["compose"]?.hasSuffix("podman-compose") == true, "\(String(describing: engine))")
        XCTAssertEqual(containers(golden).map { $0["service"] }, ["web"])
        XCTAssertEqual(containers(golden).first?["state"], "running")
        XCTAssertEqual(containers(golden).first?["image"], Self.image)
        // What runs is what was measured: PCR 23 is the host's measurement of the same folder.
        XCTAssertEqual(((golden["pcrs"] as? [String: Any])?["sha256"] as? [String: String])?["23"], expected.pcr23)
        // The service answers with the measured page, through the published port.
        XCTAssertEqual(try agent.request("http://127.0.0.1:18080/index.html").body, "v1\n")
        XCTAssertTrue(agent.consoleText.contains("images loaded: \(Self.image)"), agent.consoleText)
        // `golden fetch` prints this line from the document.
        XCTAssertEqual(AgentClient.workloadSummary(Array(try agent.get("/golden-measurement").body.utf8)), "workload: running (web running)")

        // An update without the token changes nothing.
        let v2 = try makeWorkload("run-v2", compose: Self.webCompose(service: "site"), page: "v2\n")
        let tgz = s.dir + "/v2.tar.gz"
        try TestProcess.checked(["tar", "-czf", tgz, "-C", v2, "."])
        let denied = try agent.request("http://127.0.0.1:7999/update-workload",
                                       ["-H", "Content-Type: application/gzip", "--data-binary", "@" + tgz])
        XCTAssertEqual(denied.status, 401)
        XCTAssertEqual(try agent.request("http://127.0.0.1:18080/index.html").body, "v1\n")

        // With the token: the old service is taken down, the new one (another service name) runs.
        let token = try XCTUnwrap((JSONSerialization.jsonObject(with: Data(agent.get("/api-token").body.utf8)) as? [String: String])?["token"])
        let update = try agent.request("http://127.0.0.1:7999/update-workload",
                                       ["-H", "Authorization: Bearer \(token)", "-H", "Content-Type: application/gzip", "--data-binary", "@" + tgz])
        XCTAssertEqual(update.status, 200, update.body)
        XCTAssertTrue(update.body.contains("\"workload_status\":\"starting\""), update.body)
        golden = try agent.settledGolden()
        XCTAssertEqual(golden["workload_status"] as? String, "running", "\(golden)\n\(agent.consoleText)")
        XCTAssertEqual(containers(golden).map { $0["service"] }, ["site"], "the old service must be gone")
        XCTAssertEqual(try agent.request("http://127.0.0.1:18080/index.html").body, "v2\n")
        let measuredV2 = try WorkloadMeasurement.measure(WorkloadFolder(path: v2))
        XCTAssertEqual((golden["workload_events"] as? [[String: String]])?.map { $0["digest"] }, measuredV2.events.map(\.digest))
        // The engine agrees: one container in the whole store, the new service's, running.
        let ps = try s.podman(["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
        XCTAssertEqual(ps.stdout.split(separator: "\n").count, 1, ps.stdout)
        XCTAssertTrue(ps.stdout.hasPrefix("cvm-workload_site_1 Up"), ps.stdout)
    }

    func testFailuresAreReportedWithTheEnginesReason() throws {
        let s = try sandbox()
        // A service that exits at once: compose "succeeds", the agent does not claim it runs.
        let crash = try makeWorkload("crash", compose: """
        services:
          job:
            image: \(Self.image)
            command: ["/bin/busybox", "false"]
        """)
        let agent = try AgentInNamespace(workload: crash, sandbox: s, name: "crash")
        defer { agent.stop() }
        var golden = try agent.settledGolden()
        XCTAssertEqual(golden["workload_status"] as? String, "failed", "\(golden)")
        XCTAssertTrue((golden["workload_detail"] as? String ?? "").contains("cvm-workload_job_1"), "\(golden)")
        XCTAssertTrue(agent.consoleText.contains("WORKLOAD NOT RUNNING"), agent.consoleText)
        let summary = AgentClient.workloadSummary(Array(try agent.get("/golden-measurement").body.utf8)) ?? ""
        XCTAssertTrue(summary.hasPrefix("workload: failed (job exited) — compose up: not running: cvm-workload_job_1"), summary)

        // An image that is neither shipped nor pullable (nothing listens on localhost:1).
        let missing = try makeWorkload("missing", compose: """
        services:
          web:
            image: localhost:1/cvm-test/absent:1
        """, archive: false)
        let tgz = s.dir + "/missing.tar.gz"
        try TestProcess.checked(["tar", "-czf", tgz, "-C", missing, "."])
        let token = try XCTUnwrap((JSONSerialization.jsonObject(with: Data(agent.get("/api-token").body.utf8)) as? [String: String])?["token"])
        let update = try agent.request("http://127.0.0.1:7999/update-workload",
                                       ["-H", "Authorization: Bearer \(token)", "-H", "Content-Type: application/gzip", "--data-binary", "@" + tgz])
        XCTAssertEqual(update.status, 200, update.body)
        golden = try agent.settledGolden()
        XCTAssertEqual(golden["workload_status"] as? String, "failed", "\(golden)")
        XCTAssertTrue((golden["workload_detail"] as? String ?? "").contains("compose up"), "\(golden)")
        XCTAssertTrue(containers(golden).allSatisfy { $0["state"] != "running" }, "\(golden)")
        // The broken archive case: a .tar that is not an image is refused by the workload check
        // before anything runs (WorkloadCheckTests); here the measured workload is still replaced.
        XCTAssertEqual((golden["workload_events"] as? [[String: String]])?.count,
                       try WorkloadMeasurement.measure(WorkloadFolder(path: missing)).events.count)
    }

    func testPolicyTheAgentCannotHonourStartsNothing() throws {
        let s = try sandbox()
        // Signed images required: this agent cannot check signatures, so nothing is started.
        let signed = try makeWorkload("signed", compose: Self.webCompose()) { policy in
            var config = policy["workload_config"] as? [String: Any] ?? [:]
            var verification = config["image_signature_verification"] as? [String: Any] ?? [:]
            verification["enable"] = true
            config["image_signature_verification"] = verification
            policy["workload_config"] = config
        }
        let agent = try AgentInNamespace(workload: signed, sandbox: s, name: "signed")
        let golden = try agent.settledGolden()
        agent.stop()
        XCTAssertEqual(golden["workload_status"] as? String, "not running", "\(golden)")
        XCTAssertTrue((golden["workload_detail"] as? String ?? "").contains("image_signature_verification"), "\(golden)")
        XCTAssertEqual((golden["container_engine"] as? [String: String])?["kind"], "podman")
        XCTAssertEqual(containers(golden).count, 0)
        XCTAssertTrue(try s.podman(["ps", "-aq"]).stdout.isEmpty)
        XCTAssertFalse(agent.consoleText.contains("images loaded"), agent.consoleText)

        // The policy names docker: podman is never used in its place.
        let docker = try makeWorkload("docker", compose: Self.webCompose()) { policy in
            var config = policy["cvm_config"] as? [String: Any] ?? [:]
            config["container_api"] = ["container_engine": "docker", "container_owner": "root"]
            policy["cvm_config"] = config
        }
        let second = try AgentInNamespace(workload: docker, sandbox: s, name: "docker")
        let report = try second.settledGolden()
        second.stop()
        if report["container_engine"] is NSNull {
            XCTAssertEqual(report["workload_status"] as? String, "not running", "\(report)")
            XCTAssertTrue((report["workload_detail"] as? String ?? "").contains("the policy's container engine (docker) is not usable"), "\(report)")
        } else {
            // A docker CLI with its compose plugin but no daemon: docker is tried, and fails.
            XCTAssertEqual((report["container_engine"] as? [String: String])?["kind"], "docker", "\(report)")
            XCTAssertEqual(report["workload_status"] as? String, "failed", "\(report)")
        }
        XCTAssertTrue(try s.podman(["ps", "-aq"]).stdout.isEmpty, "podman must not run a docker workload")
    }
}
