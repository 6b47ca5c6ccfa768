import CVMSupport
import Foundation
import Netfilter

/// The policy's firewall (`cvm_config.firewall.allowed_ports`) applied through nf_tables at
/// start. When the kernel has no netfilter the report says that nothing is applied.
enum AgentFirewall {
    static func ruleset(policy: AgentPolicy, options: AgentOptions) -> (FirewallRuleset, portsSource: String) {
        if let ports = policy.allowedPorts {
            return (FirewallRuleset(allowed: ports), "policy (\(policy.source))")
        }
        // No allowed_ports in the policy: only the agent's own ports.
        return (FirewallRuleset(allowed: [AllowedPort(name: "agent_http", proto: .tcp, port: options.httpPort),
                                          AllowedPort(name: "agent_https", proto: .tcp, port: options.httpsPort)]),
                "default: the agent's own ports (\(policy.source) has no cvm_config.firewall.allowed_ports)")
    }

    /// Applies the firewall and returns the report for `GET /golden-measurement`.
    static func apply(policy: AgentPolicy, options: AgentOptions) -> [String: Any] {
        let (ruleset, portsSource) = ruleset(policy: policy, options: options)
        let report = Firewall.apply(ruleset)
        var json = report.json
        json["allowed_ports"] = ruleset.allowed.map { ["name": $0.name, "protocol": $0.proto.rawValue, "port": String($0.port)] }
        json["ports_source"] = portsSource
        var warnings = policy.ignoredPorts.map { "ignored \($0)" }
        for (port, what) in [(options.httpsPort, "HTTPS API"), (options.httpPort, "HTTP API")]
            where !ruleset.allowed.contains(where: { $0.proto == .tcp && $0.port == port }) {
            warnings.append("tcp \(port) (the agent's \(what)) is not allowed: it answers only on the guest's loopback")
        }
        if !warnings.isEmpty { json["warnings"] = warnings }
        if report.applied {
            log("firewall applied (nf_tables, table inet \(ruleset.table), input policy drop): " + report.rules.joined(separator: "; "))
        } else {
            log("NO FIREWALL APPLIED: \(report.error ?? "unknown reason")")
        }
        if let error = report.error, report.applied { log("firewall: \(error)") }
        for w in warnings { log("firewall: \(w)") }
        return json
    }
}
