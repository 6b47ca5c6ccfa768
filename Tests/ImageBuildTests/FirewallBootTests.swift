#if canImport(Glibc)
import Glibc
#endif
import CVMSupport
import Foundation
import ImageBuild
import LocalVM
import XCTest

/// The policy's firewall in a booted guest. The policy allows tcp 7999 (the agent's HTTP, which
/// deploy-local waits for) and tcp 7000 (nothing listens there), not tcp 8000 — where the agent
/// does listen (HTTPS) — nor 7001. Through QEMU's forwards: 7999 answers; 7000 is refused at
/// once by the guest's TCP (allowed, no listener); 8000 and 7001 stay silent (dropped).
final class FirewallBootTests: XCTestCase {
    enum Probe: Equatable { case answered, closed, silent }

    /// Connects through a forward, sends a request line, and waits up to `seconds`: bytes back
    /// (answered), the connection closed without bytes (the guest refused it), or nothing.
    /// QEMU's user network accepts the host side at once either way, so only this tells.
    func probe(_ port: UInt16, seconds: Int = 8) -> Probe {
        guard let fd = LocalDeploy.connectLoopback(port: port, timeout: seconds) else { return .closed }
        defer { close(fd) }
        let request = Array("GET /golden-measurement HTTP/1.0\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var byte = [UInt8](repeating: 0, count: 1)
        let n = byte.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 1, 0) }
        if n > 0 { return .answered }
        if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return .silent }
        return .closed
    }

    func testPolicyFirewallDropsWhatItDoesNotAllow() throws {
        let dir = try ImageTestSupport.temporaryDirectory("firewall-boot")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let workload = dir + "/workload"
        try FileManager.default.copyItem(atPath: ImageTestSupport.repo + "/workload", toPath: workload)
        let policyPath = workload + "/config/cvm_agent/cvm_agent_policy.json"
        var policy = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: policyPath))) as? [String: Any])
        var config = try XCTUnwrap(policy["cvm_config"] as? [String: Any])
        var firewall = try XCTUnwrap(config["firewall"] as? [String: Any])
        firewall["allowed_ports"] = [["name": "agent_http", "protocol": "tcp", "port": "7999"],
                                     ["name": "nothing_listens", "protocol": "tcp", "port": "7000"]]
        config["firewall"] = firewall
        policy["cvm_config"] = config
        try JSONSerialization.data(withJSONObject: policy, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: policyPath))

        let (image, _) = try LocalBootSupport.buildImage(dir + "/image", workload: workload)
        var options = LocalBootSupport.deployOptions(disk: image, dir: dir, name: "firewall-test")
        let extra = LocalBootSupport.freePort()
        options.additionalPorts = [LocalDeploy.PortForward(host: extra, guest: 7000), LocalDeploy.PortForward(host: extra + 1, guest: 7001)]
        let artifact = try LocalDeploy.start(options)
        defer { try? LocalDeploy.stop(artifactFile: LocalDeploy.artifactPath(options)) }
        let http = artifact.ports[1].host

        // The agent reports the firewall it applied, as the kernel holds it.
        let (status, body) = try XCTUnwrap(LocalDeploy.httpGet(port: http, path: "/golden-measurement"))
        XCTAssertEqual(status, 200)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        let report = try XCTUnwrap(json["firewall"] as? [String: Any], "\(json)")
        XCTAssertEqual(report["applied"] as? Bool, true, "\(report)")
        XCTAssertEqual(report["policy"] as? String, "drop")
        XCTAssertEqual(report["rules"] as? [String], ["iifname \"lo\" accept", "ct state established,related accept",
                                                      "tcp dport 7999 accept", "tcp dport 7000 accept"])
        let kernelRules = try XCTUnwrap(report["kernel_rules"] as? [[String]], "\(report)")
        XCTAssertEqual(kernelRules.count, 4)
        XCTAssertEqual(kernelRules.last?.contains("[ cmp eq reg 1 0x0000581b ]"), true, "port 7000 big-endian: \(kernelRules)")
        XCTAssertTrue((report["warnings"] as? [String] ?? []).contains { $0.contains("tcp 8000") }, "\(report)")

        // The agent does listen on 8000 (HTTPS), and the firewall is what keeps it unreachable.
        let console = try String(contentsOfFile: artifact.consoleLog, encoding: .utf8)
        XCTAssertTrue(console.contains("serving HTTPS on port 8000"), console)
        XCTAssertTrue(console.contains("firewall applied"), console)
        XCTAssertEqual(probe(http), .answered)
        XCTAssertEqual(probe(extra), .closed, "allowed port without a listener: the guest's TCP refuses it")
        XCTAssertEqual(probe(options.port), .silent, "tcp 8000 has a listener but the policy does not allow it")
        XCTAssertEqual(probe(extra + 1), .silent, "tcp 7001 is not allowed")
        let curl = try ImageTestSupport.tool("curl", package: "curl")
        let https = try curl.runCapturing(["-sSk", "--max-time", "8", "https://127.0.0.1:\(options.port)/golden-measurement"])
        XCTAssertEqual(https.status, 28, "curl should time out on the dropped port: \(https.stderr)")
        // Still answering after the probes (replies pass through ct state established).
        XCTAssertEqual(LocalDeploy.httpGet(port: http, path: "/golden-measurement")?.status, 200)
    }
}
