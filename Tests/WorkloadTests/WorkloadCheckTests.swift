import Foundation
import XCTest
@testable import Workload
import CVMSupport

final class WorkloadCheckTests: XCTestCase {
    /// A copy of the repository's sample workload in a temp folder.
    func sampleCopy() throws -> URL {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-wl-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let dst = dir.appendingPathComponent("workload")
        try FileManager.default.copyItem(at: repo.appendingPathComponent("workload"), to: dst)
        return dst
    }

    func check(_ dir: URL) throws -> [WorkloadDiagnostic] { try WorkloadCheck.run(path: dir.path) }

    func write(_ text: String, _ dir: URL, _ rel: String) throws {
        let url = dir.appendingPathComponent(rel)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: url)
    }

    func editPolicy(_ dir: URL, _ edit: (inout [String: Any]) -> Void) throws {
        let url = dir.appendingPathComponent("config/cvm_agent/cvm_agent_policy.json")
        var obj = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        edit(&obj)
        try JSONSerialization.data(withJSONObject: obj).write(to: url)
    }

    func assertFinding(_ d: [WorkloadDiagnostic], _ severity: WorkloadDiagnostic.Severity, file: String,
                       path: String? = nil, contains text: String, line: UInt = #line) {
        XCTAssertTrue(d.contains { $0.severity == severity && $0.file.hasSuffix(file) && (path == nil || $0.path == path) && $0.message.contains(text) },
                      "expected \(severity) in \(file) \(path ?? "") containing '\(text)'; got:\n\(d.map(\.description).joined(separator: "\n"))", line: line)
    }

    func testSampleWorkloadIsClean() throws {
        XCTAssertEqual(try check(try sampleCopy()), [])
    }

    func testMissingComposeFile() throws {
        let dir = try sampleCopy()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("docker-compose.yml"))
        assertFinding(try check(dir), .error, file: "workload/docker-compose.yml", contains: "missing")
    }

    func testComposeYAMLErrors() throws {
        let dir = try sampleCopy()
        try write("services:\n  web:\n    image: [unclosed\n", dir, "docker-compose.yml")
        assertFinding(try check(dir), .error, file: "docker-compose.yml", contains: "not valid YAML")
        try write("version: '3'\n", dir, "docker-compose.yml")
        assertFinding(try check(dir), .error, file: "docker-compose.yml", path: "services", contains: "missing")
        try write("services:\n  web:\n    ports: ['80:80']\n", dir, "docker-compose.yml")
        assertFinding(try check(dir), .error, file: "docker-compose.yml", path: "services.web", contains: "neither `image` nor `build`")
    }

    func testComposeWarnings() throws {
        let dir = try sampleCopy()
        try write("""
        services:
          web:
            image: nginx:1.27
            depends_on:
              db:
                condition: service_healthy
            volumes:
              - ./secrets/tls.key:/run/tls.key:ro
          db:
            build: .
        secrets:
          token:
            file: ./secrets/token.txt
        """, dir, "docker-compose.yml")
        let d = try check(dir)
        XCTAssertFalse(d.contains { $0.severity == .error }, "\(d)")
        assertFinding(d, .warning, file: "docker-compose.yml", path: "services.web.image", contains: "docker.io/library/nginx:1.27")
        assertFinding(d, .warning, file: "docker-compose.yml", path: "services.web.depends_on.db.condition", contains: "ignores depends_on conditions")
        assertFinding(d, .warning, file: "docker-compose.yml", path: "services.web.volumes[0]", contains: "does not exist")
        assertFinding(d, .warning, file: "docker-compose.yml", path: "secrets.token.file", contains: "does not exist")
    }

    func testPolicyErrors() throws {
        let dir = try sampleCopy()
        try write("{ not json", dir, "config/cvm_agent/cvm_agent_policy.json")
        assertFinding(try check(dir), .error, file: "cvm_agent_policy.json", contains: "not valid JSON at line 1, column 3")
        // A repeated key: which value would the agent take? Refused, with its position.
        try write("{\"cvm_config\": {},\n \"cvm_config\": {}}", dir, "config/cvm_agent/cvm_agent_policy.json")
        assertFinding(try check(dir), .error, file: "cvm_agent_policy.json", contains: "line 2, column 18: duplicate member name \"cvm_config\"")

        let fresh = try sampleCopy()
        try editPolicy(fresh) { p in
            var cvm = p["cvm_config"] as! [String: Any]
            var fw = cvm["firewall"] as! [String: Any]
            fw["allowed_ports"] = [["name": "a", "protocol": "sctp", "port": "70000"], ["name": "b", "protocol": "tcp", "port": 8000]]
            cvm["firewall"] = fw
            var api = cvm["container_api"] as! [String: Any]
            api["container_engine"] = "lxc"
            cvm["container_api"] = api
            var emu = cvm["emulation_mode"] as! [String: Any]
            emu["cloud_provider"] = "oracle"; emu["tee_type"] = "sgx"; emu["enable"] = "yes"
            cvm["emulation_mode"] = emu
            cvm["surprise"] = 1
            p["cvm_config"] = cvm
        }
        let d = try check(fresh)
        let f = "cvm_agent_policy.json"
        assertFinding(d, .error, file: f, path: "cvm_config.firewall.allowed_ports[0].protocol", contains: "\"tcp\", \"udp\"")
        assertFinding(d, .error, file: f, path: "cvm_config.firewall.allowed_ports[0].port", contains: "\"70000\"")
        assertFinding(d, .error, file: f, path: "cvm_config.firewall.allowed_ports[1].port", contains: "(a number)")
        assertFinding(d, .error, file: f, path: "cvm_config.container_api.container_engine", contains: "\"podman\", \"docker\"")
        assertFinding(d, .error, file: f, path: "cvm_config.emulation_mode.cloud_provider", contains: "\"azure\", \"gcp\", \"aws\"")
        assertFinding(d, .error, file: f, path: "cvm_config.emulation_mode.tee_type", contains: "\"snp\", \"tdx\"")
        assertFinding(d, .error, file: f, path: "cvm_config.emulation_mode.enable", contains: "true or false")
        assertFinding(d, .error, file: f, path: "cvm_config.surprise", contains: "unknown key")
    }

    func testMissingPolicyKeyIsReported() throws {
        let dir = try sampleCopy()
        try editPolicy(dir) { p in
            var wc = p["workload_config"] as! [String: Any]
            wc.removeValue(forKey: "image_signature_verification")
            p["workload_config"] = wc
        }
        assertFinding(try check(dir), .error, file: "cvm_agent_policy.json", path: "workload_config.image_signature_verification", contains: "missing")
    }

    func testImageArchives() throws {
        let dir = try sampleCopy()
        let staging = dir.deletingLastPathComponent().appendingPathComponent("img")
        try write("{}", staging, "manifest.json")
        try write("x", staging, "layer/layer.tar")
        let ok = try TestTools.run("tar", ["-C", staging.path, "-cf", dir.appendingPathComponent("app.tar").path, "."])
        XCTAssertEqual(ok, 0)
        try write("{\"imageLayoutVersion\":\"1.0.0\"}", staging, "oci-layout")
        try write("{}", staging, "index.json")
        XCTAssertEqual(try TestTools.run("tar", ["-C", staging.path, "--format=posix", "-cf", dir.appendingPathComponent("oci.tar").path, "oci-layout", "index.json"]), 0)
        XCTAssertEqual(try check(dir), [])
        XCTAssertEqual(try TestTools.run("tar", ["-C", staging.path, "-cf", dir.appendingPathComponent("junk.tar").path, "layer"]), 0)
        try write("this is not a tar archive at all", dir, "text.tar")
        let d = try check(dir)
        assertFinding(d, .error, file: "workload/junk.tar", contains: "not a container image")
        assertFinding(d, .error, file: "workload/text.tar", contains: "not a container image archive")
    }

    func testEscapingSymlinkAndPrivateKey() throws {
        let dir = try sampleCopy()
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("config/passwd").path, withDestinationPath: "/etc/passwd")
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("config/up").path, withDestinationPath: "../../outside")
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("config/fine").path, withDestinationPath: "web/default.conf")
        try write("-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n", dir, "config/signing.pem")
        let d = try check(dir)
        assertFinding(d, .error, file: "config/passwd", contains: "outside the workload folder")
        assertFinding(d, .error, file: "config/up", contains: "outside the workload folder")
        XCTAssertFalse(d.contains { $0.file.hasSuffix("config/fine") })
        assertFinding(d, .warning, file: "config/signing.pem", contains: "private key")
    }

    func testMissingFolderIsAUsageError() {
        XCTAssertThrowsError(try WorkloadCheck.run(path: "/nonexistent/workload")) { e in
            XCTAssertEqual((e as? CVMError)?.kind, .usage)
            XCTAssertTrue("\(e)".contains("/nonexistent/workload"))
        }
    }
}

enum TestTools {
    /// Runs a tool (no shell) and returns its exit status.
    static func run(_ tool: String, _ args: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [tool] + args
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }

    static func output(_ tool: String, _ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [tool] + args
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-out-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: out) }
        p.standardOutput = try FileHandle(forWritingTo: out)
        try p.run()
        p.waitUntilExit()
        return String(decoding: try Data(contentsOf: out), as: UTF8.self)
    }
}
