import CVMCrypto
import CVMSupport

/// The outcome of `AttestationVerifier.verify`: each check, each PCR, and the verdict.
public struct AttestationReport: Sendable {
    public enum Status: String, Sendable {
        case pass, fail, skipped
    }

    public struct Check: Sendable {
        /// signature, quote, nonce, tls_fingerprint, extra_data, pcr_digest, event_log,
        /// workload_events, golden_signature.
        public let name: String
        public let status: Status
        public var detail: String
    }

    public enum PCRStatus: String, Sendable {
        case match, mismatch
        /// The golden measurement has no value and no reason for this PCR: informational.
        case notInGolden = "not_in_golden"
        /// A prediction could not compute it (reason given): informational.
        case unpredictable
        /// The golden measurement has it but the quote does not cover it: a failure.
        case notQuoted = "not_quoted"
    }

    public struct PCR: Sendable {
        public let index: UInt32
        public let status: PCRStatus
        public let quoted: [UInt8]?
        public let golden: [UInt8]?
        public let reason: String?
    }

    public let checks: [Check]
    public let pcrs: [PCR]
    public let nonce: [UInt8]
    public let goldenForm: GoldenReference.Form

    /// True only when no check failed and every PCR of the golden measurement matches.
    public var passed: Bool { reasons.isEmpty }

    /// One line per failed check or PCR, naming it.
    public var reasons: [String] {
        checks.filter { $0.status == .fail }.map { "\($0.name): \($0.detail)" }
            + pcrs.filter { $0.status == .mismatch || $0.status == .notQuoted }.map { pcr in
                pcr.status == .mismatch
                    ? "PCR \(pcr.index): quoted \(pcr.quoted.map(hexString) ?? "-"), golden \(pcr.golden.map(hexString) ?? "-")" + (pcr.reason.map { " (\($0))" } ?? "")
                    : "PCR \(pcr.index): \(pcr.reason ?? "not quoted")"
            }
    }

    public var json: JSONValue {
        .object([
            "verified": .bool(passed),
            "verdict": .string(passed ? "pass" : "fail"),
            "reasons": .array(reasons.map { .string($0) }),
            "nonce": .string(hexString(nonce)),
            "golden_form": .string(goldenForm.rawValue),
            "checks": .array(checks.map {
                .object(["name": .string($0.name), "status": .string($0.status.rawValue), "detail": .string($0.detail)])
            }),
            "pcrs": .array(pcrs.map { pcr in
                var o: [String: JSONValue] = ["pcr": .number(Double(pcr.index)), "status": .string(pcr.status.rawValue)]
                if let q = pcr.quoted { o["quoted"] = .string(hexString(q)) }
                if let g = pcr.golden { o["golden"] = .string(hexString(g)) }
                if let r = pcr.reason { o["reason"] = .string(r) }
                return .object(o)
            }),
        ])
    }

    /// The report for people: the checks, a per-PCR table, the verdict.
    public var text: String {
        var lines: [String] = ["Checks:"]
        let width = checks.map(\.name.count).max() ?? 0
        for c in checks {
            lines.append("  \(c.status.rawValue.uppercased().padding(toLength: 7, withPad: " ", startingAt: 0)) \(c.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(c.detail)")
        }
        lines.append("")
        lines.append("PCR  status         quoted                                                            golden / reason")
        for p in pcrs {
            let quoted = p.quoted.map(hexString) ?? "-".padding(toLength: 64, withPad: " ", startingAt: 0)
            let last: String
            switch p.status {
            case .match: last = "= golden"
            case .mismatch: last = (p.golden.map(hexString) ?? "-") + (p.reason.map { " (\($0))" } ?? "")
            case .notInGolden: last = "not in the golden measurement"
            case .unpredictable, .notQuoted: last = p.reason ?? ""
            }
            lines.append(String(p.index).padding(toLength: 4, withPad: " ", startingAt: 0) + " "
                         + p.status.rawValue.uppercased().padding(toLength: 14, withPad: " ", startingAt: 0) + " "
                         + quoted + "  " + last)
        }
        lines.append("")
        let matched = pcrs.filter { $0.status == .match }.count
        if passed {
            lines.append("Verdict: PASS — \(matched) PCRs match the \(goldenForm.rawValue); quote, nonce and event logs verified")
        } else {
            lines.append("Verdict: FAIL")
            lines += reasons.map { "  - " + $0 }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
