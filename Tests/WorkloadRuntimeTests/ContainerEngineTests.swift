import CVMSupport
import Foundation
@testable import WorkloadRuntime
import XCTest

/// Which engine and compose the agent picks, and how it reads the engines' listings.
final class ContainerEngineTests: XCTestCase {
    func detect(_ policy: ContainerEngine.Kind?, files: [String: String], answering: Set<String> = []) -> ContainerEngine.Detection {
        ContainerEngine.detect(policy: policy, locate: { files[$0] }, answers: { answering.contains($0.joined(separator: " ")) })
    }

    func testPolicyEngineIsTheOnlyOneUsed() {
        let both = ["podman": "/usr/bin/podman", "podman-compose": "/usr/bin/podman-compose", "docker": "/usr/bin/docker",
                    "docker-compose": "/usr/bin/docker-compose"]
        XCTAssertEqual(detect(.podman, files: both), .found(ContainerEngine(kind: .podman, executable: "/usr/bin/podman", compose: ["/usr/bin/podman-compose"])))
        XCTAssertEqual(detect(.docker, files: both), .found(ContainerEngine(kind: .docker, executable: "/usr/bin/docker", compose: ["/usr/bin/docker-compose"])))
        // The policy asks for docker; only podman is there: nothing runs, and the reason says so.
        guard case .none(let reason) = detect(.docker, files: ["podman": "/usr/bin/podman", "podman-compose": "/usr/bin/podman-compose"]) else {
            return XCTFail("docker policy must not fall back to podman")
        }
        XCTAssertTrue(reason.contains("the policy's container engine (docker)") && reason.contains("docker not found"), reason)
    }

    func testWithoutPolicyPodmanFirstThenDocker() {
        XCTAssertEqual(detect(nil, files: ["docker": "/d", "podman": "/p", "podman-compose": "/pc"]),
                       .found(ContainerEngine(kind: .podman, executable: "/p", compose: ["/pc"])))
        // podman without any compose: docker with its compose plugin is used.
        XCTAssertEqual(detect(nil, files: ["docker": "/d", "podman": "/p"], answering: ["/d compose version"]),
                       .found(ContainerEngine(kind: .docker, executable: "/d", compose: ["/d", "compose"])))
        // podman ≥ 4.7 answers `podman compose version` itself.
        XCTAssertEqual(detect(nil, files: ["podman": "/p"], answering: ["/p compose version"]),
                       .found(ContainerEngine(kind: .podman, executable: "/p", compose: ["/p", "compose"])))
        guard case .none(let reason) = detect(nil, files: ["podman": "/p"]) else { return XCTFail() }
        XCTAssertTrue(reason.contains("/p found but no compose") && reason.contains("podman-compose") && reason.contains("docker not found"), reason)
        guard case .none(let empty) = detect(nil, files: [:]) else { return XCTFail() }
        XCTAssertEqual(empty, "no container engine (podman or docker) is usable in this image: podman not found; docker not found")
    }

    func testListingsOfBothEngines() throws {
        // podman 4: one JSON array, Names a list, Labels a mapping.
        let podman = """
        [{"Names":["cvm-workload_web_1"],"State":"running","Image":"localhost/web:1","Status":"Up 3 seconds ago",
          "Labels":{"com.docker.compose.project":"cvm-workload","com.docker.compose.service":"web"}},
         {"Names":["cvm-workload_job_1"],"State":"exited","Image":"localhost/web:1","Status":"Exited (1) 2 seconds ago",
          "Labels":{"com.docker.compose.service":"job"}}]
        """
        XCTAssertEqual(try ComposeWorkload.parseContainers(podman), [
            WorkloadContainer(name: "cvm-workload_web_1", service: "web", state: "running", image: "localhost/web:1", status: "Up 3 seconds ago"),
            WorkloadContainer(name: "cvm-workload_job_1", service: "job", state: "exited", image: "localhost/web:1", status: "Exited (1) 2 seconds ago"),
        ])
        // docker: `--format '{{json .}}'`, one object a line, Names and Labels strings.
        let docker = """
        {"Names":"cvm-workload-web-1","State":"running","Image":"nginx:1.27","Status":"Up 2 minutes","Labels":"com.docker.compose.oneoff=False,com.docker.compose.service=web"}
        {"Names":"cvm-workload-db-1","State":"restarting","Image":"postgres:16","Status":"Restarting (1) 5 seconds ago","Labels":"com.docker.compose.service=db"}
        """
        XCTAssertEqual(try ComposeWorkload.parseContainers(docker).map(\.service), ["web", "db"])
        XCTAssertEqual(try ComposeWorkload.parseContainers(docker).map(\.state), ["running", "restarting"])
        XCTAssertEqual(try ComposeWorkload.parseContainers("  \n"), [])
        XCTAssertThrowsError(try ComposeWorkload.parseContainers("[1, 2]"))
    }

    func testLoadedImageLinesAndArchiveOrder() throws {
        XCTAssertEqual(ComposeWorkload.loadedImages("Getting image source signatures\nLoaded image(s): localhost/a:1,localhost/b:2\n"),
                       ["localhost/a:1", "localhost/b:2"])
        XCTAssertEqual(ComposeWorkload.loadedImages("Loaded image: nginx:1.27\n"), ["nginx:1.27"])
        let dir = NSTemporaryDirectory() + "cvm-archives-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir + "/sub.tar", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["b.tar", "B.tar", "a.tar", "c.tar.gz", "docker-compose.yml"] {
            _ = FileManager.default.createFile(atPath: dir + "/" + name, contents: Data())
        }
        // Byte order, as the measurement sorts (docs/measurement.md); folders and non-.tar skipped.
        XCTAssertEqual(try ComposeWorkload.imageArchives(in: dir).map { ($0 as NSString).lastPathComponent }, ["B.tar", "a.tar", "b.tar"])
    }
}
