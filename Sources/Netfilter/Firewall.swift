#if canImport(Glibc)
import Glibc
#endif
import CVMSupport
import Foundation

/// A NETLINK_NETFILTER socket: sends a datagram to the kernel and reads its answers.
final class NetfilterSocket {
    static let afNetlink: Int32 = 16, netlinkNetfilter: Int32 = 12
    let fd: Int32

    init() throws {
        fd = socket(Self.afNetlink, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Self.netlinkNetfilter)
        guard fd >= 0 else {
            let code = errno
            throw FirewallError(errno: code, message: code == EPROTONOSUPPORT || code == EAFNOSUPPORT
                ? "the kernel has no nfnetlink (socket(AF_NETLINK, NETLINK_NETFILTER): \(errnoDescription(code)))"
                : "socket(AF_NETLINK, NETLINK_NETFILTER): \(errnoDescription(code))")
        }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
        guard n == bytes.count else { throw FirewallError(errno: errno, message: "netlink send: \(errnoDescription())") }
    }

    func receive() throws -> [Netlink.Message] {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else {
            throw FirewallError(errno: errno, message: "netlink receive: \(n == 0 ? "end of stream" : errnoDescription())")
        }
        guard let messages = Netlink.split(Array(buffer.prefix(n))) else {
            throw FirewallError(errno: 0, message: "netlink receive: a malformed answer from the kernel")
        }
        return messages
    }
}

public struct FirewallError: Error, Sendable, CustomStringConvertible {
    public let errno: Int32
    public let message: String
    public var description: String { message }
}

/// Applies a `FirewallRuleset` through nf_tables and reads it back.
public enum Firewall {
    /// What the agent reports (docs/agent-api.md, `firewall` in `GET /golden-measurement`).
    public struct Report: Sendable {
        public var applied = false
        public var rules: [String] = []
        /// The table's rules as the kernel holds them after the transaction, in nft's debug notation.
        public var kernelRules: [[String]] = []
        public var error: String?
        public var json: [String: Any] {
            var o: [String: Any] = ["applied": applied, "backend": "nf_tables", "table": "inet cvm_agent",
                                    "chain": "input", "hook": "input", "policy": "drop", "rules": rules]
            if applied { o["kernel_rules"] = kernelRules }
            if let error { o["error"] = error }
            return o
        }
    }

    public static func apply(_ ruleset: FirewallRuleset) -> Report {
        var report = Report()
        report.rules = ruleset.rules.map(\.text)
        do {
            let socket = try NetfilterSocket()
            let firstSeq = UInt32(truncatingIfNeeded: Int(Date().timeIntervalSince1970))
            let (bytes, acked) = ruleset.batch(firstSeq: firstSeq)
            try socket.send(bytes)
            try awaitAcks(socket, acked: Set(acked), ruleset: ruleset, firstSeq: firstSeq)
            report.applied = true
            report.kernelRules = try readBack(socket, ruleset: ruleset, seq: firstSeq &+ UInt32(acked.count) &+ 2)
                .map(\.expressions)
            if report.kernelRules.count != report.rules.count {
                report.error = "the kernel holds \(report.kernelRules.count) rules in table inet \(ruleset.table), expected \(report.rules.count)"
            }
        } catch let error as FirewallError {
            report.error = describe(error) + "; no firewall is applied: every port the guest listens on is reachable"
        } catch {
            report.error = "\(error); no firewall is applied: every port the guest listens on is reachable"
        }
        return report
    }

    static func describe(_ error: FirewallError) -> String {
        switch error.errno {
        case EOPNOTSUPP: return "the kernel has no nf_tables (\(error.message))"
        case ENOENT: return error.message + " (is a kernel module the rule needs, such as nft_ct, not loaded?)"
        default: return error.message
        }
    }

    /// Waits for one acknowledgement per message that asked for one; the first error (which
    /// aborts the whole transaction in the kernel) is thrown, naming the message it refers to.
    static func awaitAcks(_ socket: NetfilterSocket, acked: Set<UInt32>, ruleset: FirewallRuleset, firstSeq: UInt32) throws {
        var pending = acked
        let names = ["batch begin", "new table", "delete table", "new table", "new chain"]
            + ruleset.rules.map { "rule '\($0.text)'" } + ["batch end"]
        while !pending.isEmpty {
            for m in try socket.receive() where m.type == Netlink.error {
                guard m.payload.count >= 4 else { continue }
                let code = -Int32(bitPattern: m.payload.native32(0))
                let index = Int(m.seq &- firstSeq)
                let what = names.indices.contains(index) ? names[index] : "message \(m.seq)"
                if code != 0 {
                    throw FirewallError(errno: code, message: "nf_tables refused the \(what): \(errnoDescription(code))")
                }
                pending.remove(m.seq)
            }
        }
    }

    static func readBack(_ socket: NetfilterSocket, ruleset: FirewallRuleset, seq: UInt32) throws -> [DecodedRule] {
        try socket.send(ruleset.dumpRequest(seq: seq))
        var rules: [DecodedRule] = []
        while true {
            for m in try socket.receive() where m.seq == seq {
                switch m.type {
                case Netlink.done: return rules
                case Netlink.error:
                    let code = m.payload.count >= 4 ? -Int32(bitPattern: m.payload.native32(0)) : 0
                    if code != 0 { throw FirewallError(errno: code, message: "reading the rules back: \(errnoDescription(code))") }
                    return rules
                default:
                    if let r = DecodedRule.decode(m), r.table == ruleset.table, r.chain == ruleset.chain { rules.append(r) }
                }
            }
        }
    }
}
