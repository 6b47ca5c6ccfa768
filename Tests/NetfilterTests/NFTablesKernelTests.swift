import CVMSupport
import Foundation
import XCTest

/// The real kernel as the referee: `cvm-agent firewall` programs nf_tables in a fresh network
/// namespace (`unshare -rn`, so the host's firewall is never touched), then nft (Debian package
/// nftables) lists what the kernel holds. The same rules written in nft syntax and loaded by nft
/// in another namespace must list identically, and the agent's read-back must be what
/// `nft --debug=netlink` shows for them.
final class NFTablesKernelTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    func agent() throws -> String {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [dir, dir.deletingLastPathComponent()] {
            let path = candidate.appendingPathComponent("cvm-agent").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw CVMError.io("cvm-agent is not built next to the tests; run `swift build --build-tests` first")
    }

    func tools() throws -> (unshare: ExternalTool, nft: ExternalTool, sh: ExternalTool) {
        let purpose = "the netfilter tests (scripts/install-deps.sh --with-test-tools)"
        let unshare = try ExternalTool.find("unshare", package: "util-linux", purpose: purpose)
        let nft = try ExternalTool.find("nft", package: "nftables", purpose: purpose)
        let sh = try ExternalTool.find("sh", package: "dash", purpose: purpose)
        // A namespace of our own is what makes this safe; without it the test cannot run here.
        let probe = try unshare.runCapturing(["-rn", "true"])
        if probe.status != 0 { throw XCTSkip("unshare -rn is not permitted here: \(probe.stderr)") }
        return (unshare, nft, sh)
    }

    /// Rules and tables as nft lists them, without handles (which differ between namespaces).
    func ruleset(_ json: String) throws -> [[String: Any]] {
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let items = try XCTUnwrap(root["nftables"] as? [[String: Any]])
        return items.filter { $0["metainfo"] == nil }.map { item in
            item.mapValues { value -> Any in
                guard var object = value as? [String: Any] else { return value }
                object["handle"] = nil
                return object
            }
        }
    }

    func workload(ports: [(String, String)]) throws -> String {
        let dir = NSTemporaryDirectory() + "cvm-nft-\(UUID().uuidString)"
        let policyDir = dir + "/config/cvm_agent"
        try FileManager.default.createDirectory(atPath: policyDir, withIntermediateDirectories: true)
        var policy = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath:
            Self.repo + "/workload/config/cvm_agent/cvm_agent_policy.json"))) as? [String: Any])
        var config = try XCTUnwrap(policy["cvm_config"] as? [String: Any])
        var firewall = try XCTUnwrap(config["firewall"] as? [String: Any])
        firewall["allowed_ports"] = ports.enumerated().map { ["name": "p\($0.offset)", "protocol": $0.element.0, "port": $0.element.1] }
        config["firewall"] = firewall
        policy["cvm_config"] = config
        try JSONSerialization.data(withJSONObject: policy).write(to: URL(fileURLWithPath: policyDir + "/cvm_agent_policy.json"))
        return dir
    }

    func testAgentRulesetIsWhatNftMakesOfTheSameRules() throws {
        let (unshare, nft, sh) = try tools()
        let agent = try agent()
        let dir = try workload(ports: [("tcp", "7999"), ("tcp", "8000"), ("udp", "5353")])
        defer { try? FileManager.default.removeItem(atPath: dir) }

        // Applied twice in one namespace: the second run replaces the first (one table, same rules).
        let script = """
            "$1" firewall --workload "$2" > "$2/report1.json" 2> "$2/agent1.log" || exit 11
            "$1" firewall --workload "$2" > "$2/report.json" 2> "$2/agent.log" || exit 12
            "$3" -j list ruleset > "$2/ruleset.json" && "$3" --debug=netlink list ruleset > "$2/debug.txt"
            """
        let run = try unshare.runCapturing(["-rn", sh.path, "-c", script, "sh", agent, dir, nft.path])
        XCTAssertEqual(run.status, 0, run.stderr + ((try? String(contentsOfFile: dir + "/agent.log", encoding: .utf8)) ?? ""))
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/report.json"))) as? [String: Any])
        XCTAssertEqual(report["applied"] as? Bool, true, "\(report)")
        XCTAssertNil(report["error"], "\(report)")
        let rules = try XCTUnwrap(report["rules"] as? [String])
        XCTAssertEqual(rules, ["iifname \"lo\" accept", "ct state established,related accept",
                               "tcp dport 7999 accept", "tcp dport 8000 accept", "udp dport 5353 accept"])
        XCTAssertTrue((try String(contentsOfFile: dir + "/agent.log", encoding: .utf8)).contains("firewall applied"))

        // nft loads the rules' own text into a second namespace: both list the same.
        let nftFile = """
            table inet cvm_agent {
                chain input {
                    type filter hook input priority 0; policy drop;
            \(rules.map { "        " + $0 }.joined(separator: "\n"))
                }
            }
            """
        try nftFile.write(toFile: dir + "/reference.nft", atomically: true, encoding: .utf8)
        let reference = try unshare.runCapturing(["-rn", sh.path, "-c", "\"$1\" -f \"$2/reference.nft\" && \"$1\" -j list ruleset > \"$2/reference.json\"",
                                                  "sh", nft.path, dir])
        XCTAssertEqual(reference.status, 0, reference.stderr)
        let ours = try ruleset(try String(contentsOfFile: dir + "/ruleset.json", encoding: .utf8))
        let theirs = try ruleset(try String(contentsOfFile: dir + "/reference.json", encoding: .utf8))
        XCTAssertEqual(ours.count, 2 + rules.count, "one table, one chain, the rules: \(ours)")
        XCTAssertEqual(try JSONSerialization.data(withJSONObject: ours, options: .sortedKeys),
                       try JSONSerialization.data(withJSONObject: theirs, options: .sortedKeys),
                       "\(ours)\n≠\n\(theirs)")
        let chain = try XCTUnwrap(ours.compactMap { $0["chain"] as? [String: Any] }.first)
        XCTAssertEqual(chain["hook"] as? String, "input")
        XCTAssertEqual(chain["policy"] as? String, "drop")

        // The agent's read-back is nft's debug listing of the kernel's rules.
        let debug = try String(contentsOfFile: dir + "/debug.txt", encoding: .utf8)
        var listed: [[String]] = []
        for line in debug.split(separator: "\n") {
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.hasPrefix("inet cvm_agent input") { listed.append([]) }
            else if text.hasPrefix("["), !listed.isEmpty { listed[listed.count - 1].append(text) }
        }
        XCTAssertEqual(report["kernel_rules"] as? [[String]], listed, debug)
        XCTAssertEqual(listed.count, rules.count, debug)
    }

    /// A policy without allowed_ports opens only the agent's own ports and says so.
    func testNoAllowedPortsMeansTheAgentsOwnPorts() throws {
        let (unshare, _, sh) = try tools()
        let dir = try workload(ports: [])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/config/cvm_agent/cvm_agent_policy.json"
        var policy = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        var config = try XCTUnwrap(policy["cvm_config"] as? [String: Any])
        config["firewall"] = nil
        policy["cvm_config"] = config
        try JSONSerialization.data(withJSONObject: policy).write(to: URL(fileURLWithPath: path))
        let run = try unshare.runCapturing(["-rn", sh.path, "-c", "\"$1\" firewall --workload \"$2\"", "sh", try agent(), dir])
        XCTAssertEqual(run.status, 0, run.stderr)
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(report["rules"] as? [String], ["iifname \"lo\" accept", "ct state established,related accept",
                                                      "tcp dport 7999 accept", "tcp dport 8000 accept"])
        XCTAssertTrue((report["ports_source"] as? String ?? "").hasPrefix("default"), "\(report)")
    }

    /// When the kernel refuses (here: no CAP_NET_ADMIN, as user nobody in a fresh network
    /// namespace), the report says no firewall is applied and why, and the exit status is 1.
    func testRefusalIsReportedNotHidden() throws {
        let (unshare, _, _) = try tools()
        guard getuid() == 0 else { throw XCTSkip("needs root to start as nobody in a fresh network namespace") }
        let setpriv = try ExternalTool.find("setpriv", package: "util-linux", purpose: "the netfilter tests")
        let dir = try workload(ports: [("tcp", "8000")])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        chmod(dir, 0o755)
        let run = try unshare.runCapturing(["-n", setpriv.path, "--reuid=65534", "--regid=65534", "--clear-groups",
                                            try agent(), "firewall", "--workload", dir])
        XCTAssertEqual(run.status, 1, run.stdout + run.stderr)
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], run.stdout)
        XCTAssertEqual(report["applied"] as? Bool, false)
        XCTAssertNil(report["kernel_rules"])
        let error = try XCTUnwrap(report["error"] as? String)
        XCTAssertTrue(error.contains("Operation not permitted") && error.contains("no firewall is applied"), error)
        XCTAssertTrue(run.stderr.contains("NO FIREWALL APPLIED"), run.stderr)
    }
}
