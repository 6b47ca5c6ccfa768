/// nf_tables messages (linux/netfilter/nf_tables.h): the expressions our rules use, encoded
/// as the kernel reads them and decoded back into the text `nft --debug=netlink` prints, so a
/// rule read back from the kernel can be compared with nft's own translation.
public enum NFT {
    static let subsystem: UInt16 = 10                  // NFNL_SUBSYS_NFTABLES
    static let batchBegin: UInt16 = 0x10               // NFNL_MSG_BATCH_BEGIN (NLMSG_MIN_TYPE)
    static let batchEnd: UInt16 = 0x11                 // NFNL_MSG_BATCH_END
    // enum nf_tables_msg_types
    static let newTable: UInt16 = 0, delTable: UInt16 = 2, newChain: UInt16 = 3, newRule: UInt16 = 6, getRule: UInt16 = 7
    static func type(_ msg: UInt16) -> UInt16 { subsystem << 8 | msg }

    public static let familyINet: UInt8 = 1            // NFPROTO_INET
    static let familyUnspec: UInt8 = 0
    static let hookInput: UInt32 = 1                   // NF_INET_LOCAL_IN
    static let verdictDrop: UInt32 = 0, verdictAccept: UInt32 = 1   // NF_DROP, NF_ACCEPT

    // attribute numbers
    static let tableName: UInt16 = 1
    static let chainTable: UInt16 = 1, chainName: UInt16 = 3, chainHook: UInt16 = 4, chainPolicy: UInt16 = 5, chainType: UInt16 = 7
    static let hookNum: UInt16 = 1, hookPriority: UInt16 = 2
    static let ruleTable: UInt16 = 1, ruleChain: UInt16 = 2, ruleHandle: UInt16 = 3, ruleExpressions: UInt16 = 4
    static let listElem: UInt16 = 1
    static let exprName: UInt16 = 1, exprData: UInt16 = 2
    static let dataValue: UInt16 = 1, dataVerdict: UInt16 = 2
    static let verdictCode: UInt16 = 1

    /// The 128-bit register the expressions load into (NFT_REG_1), and the verdict register.
    static let reg1: UInt32 = 1, regVerdict: UInt32 = 0
}

/// The expressions the firewall uses, one case per kernel expression type.
public enum NFTExpression: Sendable, Equatable {
    public enum MetaKey: UInt32, Sendable { case iifname = 6, l4proto = 16 }
    public enum CmpOp: UInt32, Sendable { case eq = 0, neq = 1 }
    public enum PayloadBase: UInt32, Sendable { case link = 0, network = 1, transport = 2 }

    case meta(MetaKey)                                  // meta load KEY => reg 1
    case ctState                                        // ct load state => reg 1
    case payload(PayloadBase, offset: UInt32, length: UInt32)
    case bitwise(length: UInt32, mask: [UInt8], xor: [UInt8])
    case cmp(CmpOp, [UInt8])
    case accept                                         // immediate reg 0 accept

    var name: String {
        switch self {
        case .meta: return "meta"
        case .ctState: return "ct"
        case .payload: return "payload"
        case .bitwise: return "bitwise"
        case .cmp: return "cmp"
        case .accept: return "immediate"
        }
    }

    /// NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { … } }.
    var attribute: NetlinkAttribute {
        typealias A = NetlinkAttribute
        let data: [A]
        switch self {
        case .meta(let key):
            data = [.be32(2, key.rawValue), .be32(1, NFT.reg1)]                        // NFTA_META_KEY, _DREG
        case .ctState:
            data = [.be32(2, 0), .be32(1, NFT.reg1)]                                   // NFTA_CT_KEY = NFT_CT_STATE, _DREG
        case .payload(let base, let offset, let length):
            data = [.be32(1, NFT.reg1), .be32(2, base.rawValue), .be32(3, offset), .be32(4, length)]
        case .bitwise(let length, let mask, let xor):
            data = [.be32(1, NFT.reg1), .be32(2, NFT.reg1), .be32(3, length),           // SREG, DREG, LEN
                    .nested(4, [A(NFT.dataValue, mask)]), .nested(5, [A(NFT.dataValue, xor)])]
        case .cmp(let op, let value):
            data = [.be32(1, NFT.reg1), .be32(2, op.rawValue), .nested(3, [A(NFT.dataValue, value)])]
        case .accept:
            data = [.be32(1, NFT.regVerdict),
                    .nested(2, [.nested(NFT.dataVerdict, [.be32(NFT.verdictCode, NFT.verdictAccept)])])]
        }
        return .nested(NFT.listElem, [.string(NFT.exprName, name), .nested(NFT.exprData, data)])
    }
}

/// One rule: its nft syntax (for people) and its expressions (for the kernel).
public struct NFTRule: Sendable, Equatable {
    public let text: String
    public let expressions: [NFTExpression]
}

/// A port the policy opens (`cvm_config.firewall.allowed_ports[]`).
public struct AllowedPort: Sendable, Equatable {
    public enum Proto: String, Sendable { case tcp, udp }
    public let name: String
    public let proto: Proto
    public let port: UInt16
    public init(name: String, proto: Proto, port: UInt16) { self.name = name; self.proto = proto; self.port = port }
}

/// The agent's firewall: table `inet cvm_agent`, base chain `input` on the input hook with
/// policy drop; loopback, replies (ct established/related) and the allowed ports accepted.
public struct FirewallRuleset: Sendable, Equatable {
    public var table = "cvm_agent"
    public var chain = "input"
    public var allowed: [AllowedPort]

    public init(allowed: [AllowedPort]) { self.allowed = allowed }

    public var rules: [NFTRule] {
        var out = [
            NFTRule(text: "iifname \"lo\" accept",
                    expressions: [.meta(.iifname), .cmp(.eq, Array("lo".utf8) + [UInt8](repeating: 0, count: 14)), .accept]),
            // ct state bits: 1 << (ctinfo + 1): established 0x2, related 0x4 (host byte order).
            NFTRule(text: "ct state established,related accept",
                    expressions: [.ctState, .bitwise(length: 4, mask: UInt32(6).nativeBytes, xor: UInt32(0).nativeBytes),
                                  .cmp(.neq, UInt32(0).nativeBytes), .accept]),
        ]
        var seen: Set<String> = []
        for p in allowed where seen.insert("\(p.proto) \(p.port)").inserted {
            let l4: UInt8 = p.proto == .tcp ? 6 : 17
            out.append(NFTRule(text: "\(p.proto) dport \(p.port) accept",
                               expressions: [.meta(.l4proto), .cmp(.eq, [l4]),
                                             .payload(.transport, offset: 2, length: 2), .cmp(.eq, p.port.bigEndianBytes), .accept]))
        }
        return out
    }

    /// The transaction, as one datagram: begin; table (created if missing, then deleted with
    /// everything in it and created again, so a second run replaces the first); the chain;
    /// the rules; end. Every message but begin/end asks for an acknowledgement.
    public func batch(firstSeq: UInt32) -> (bytes: [UInt8], ackedSeqs: [UInt32]) {
        typealias A = NetlinkAttribute
        var seq = firstSeq
        var bytes: [UInt8] = []
        var acked: [UInt32] = []
        func add(_ type: UInt16, _ flags: UInt16, family: UInt8, resourceID: UInt16 = 0, _ attributes: [A], ack: Bool = true) {
            bytes += Netlink.message(type: type, flags: Netlink.request | flags | (ack ? Netlink.ack : 0), seq: seq,
                                     family: family, resourceID: resourceID, attributes: attributes)
            if ack { acked.append(seq) }
            seq &+= 1
        }
        let inet = NFT.familyINet
        add(NFT.batchBegin, 0, family: NFT.familyUnspec, resourceID: NFT.subsystem, [], ack: false)
        add(NFT.type(NFT.newTable), Netlink.create, family: inet, [.string(NFT.tableName, table)])
        add(NFT.type(NFT.delTable), 0, family: inet, [.string(NFT.tableName, table)])
        add(NFT.type(NFT.newTable), Netlink.create, family: inet, [.string(NFT.tableName, table)])
        add(NFT.type(NFT.newChain), Netlink.create, family: inet, [
            .string(NFT.chainTable, table), .string(NFT.chainName, chain),
            .nested(NFT.chainHook, [.be32(NFT.hookNum, NFT.hookInput), .be32(NFT.hookPriority, 0)]),
            .be32(NFT.chainPolicy, NFT.verdictDrop), .string(NFT.chainType, "filter"),
        ])
        for rule in rules {
            add(NFT.type(NFT.newRule), Netlink.create | Netlink.append, family: inet, [
                .string(NFT.ruleTable, table), .string(NFT.ruleChain, chain),
                .nested(NFT.ruleExpressions, rule.expressions.map(\.attribute)),
            ])
        }
        add(NFT.batchEnd, 0, family: NFT.familyUnspec, resourceID: NFT.subsystem, [], ack: false)
        return (bytes, acked)
    }

    /// NFT_MSG_GETRULE dump of this table's rules.
    public func dumpRequest(seq: UInt32) -> [UInt8] {
        Netlink.message(type: NFT.type(NFT.getRule), flags: Netlink.request | Netlink.dump, seq: seq,
                        family: NFT.familyINet, attributes: [.string(NFT.ruleTable, table)])
    }
}

/// Rules read back from the kernel, rendered as `nft --debug=netlink` prints them
/// (`[ meta load iifname => reg 1 ]`, `[ cmp eq reg 1 0x00006f6c … ]`, …).
public struct DecodedRule: Sendable, Equatable {
    public let table: String, chain: String
    public let handle: UInt64
    public let expressions: [String]

    /// Decodes an NFT_MSG_NEWRULE message payload (after nlmsghdr); nil if it is not one.
    public static func decode(_ message: Netlink.Message) -> DecodedRule? {
        guard message.type == NFT.type(NFT.newRule), message.payload.count >= Netlink.nfgenmsgSize,
              let attrs = NetlinkAttribute.parse(message.payload[Netlink.nfgenmsgSize...]) else { return nil }
        let handle = attrs.first(NFT.ruleHandle).map { $0.value.reduce(UInt64(0)) { $0 << 8 | UInt64($1) } } ?? 0
        let exprs = attrs.first(NFT.ruleExpressions)?.children.map(render) ?? []
        return DecodedRule(table: attrs.first(NFT.ruleTable)?.stringValue ?? "", chain: attrs.first(NFT.ruleChain)?.stringValue ?? "",
                           handle: handle, expressions: exprs)
    }

    static func render(_ element: NetlinkAttribute) -> String {
        let e = element.children
        let name = e.first(NFT.exprName)?.stringValue ?? "?"
        let d = e.first(NFT.exprData)?.children ?? []
        func u(_ k: UInt16) -> UInt32 { d.first(k)?.be32Value ?? 0 }
        func data(_ k: UInt16) -> [UInt8] { d.first(k)?.children.first(NFT.dataValue)?.value ?? [] }
        func reg(_ r: UInt32) -> String { "reg \(r)" }
        let body: String
        switch name {
        case "meta":
            let keys: [UInt32: String] = [4: "iif", 6: "iifname", 15: "nfproto", 16: "l4proto"]
            body = "meta load \(keys[u(2)] ?? "key \(u(2))") => \(reg(u(1)))"
        case "ct":
            let keys: [UInt32: String] = [0: "state", 1: "direction", 2: "status", 3: "mark"]
            body = "ct load \(keys[u(2)] ?? "key \(u(2))") => \(reg(u(1)))"
        case "payload":
            let bases: [UInt32: String] = [0: "link", 1: "network", 2: "transport"]
            body = "payload load \(u(4))b @ \(bases[u(2)] ?? "base \(u(2))") header + \(u(3)) => \(reg(u(1)))"
        case "bitwise":
            body = "bitwise \(reg(u(2))) = ( \(reg(u(1))) & \(words(data(4))) ) ^ \(words(data(5)))"
        case "cmp":
            let ops: [UInt32: String] = [0: "eq", 1: "neq", 2: "lt", 3: "lte", 4: "gt", 5: "gte"]
            body = "cmp \(ops[u(2)] ?? "op \(u(2))") \(reg(u(1))) \(words(data(3)))"
        case "immediate":
            let verdict = d.first(2)?.children.first(NFT.dataVerdict)?.children.first(NFT.verdictCode)?.be32Value
            let verdicts: [UInt32: String] = [0: "drop", 1: "accept"]
            body = "immediate \(reg(u(1))) " + (verdict.map { verdicts[$0] ?? "verdict \($0)" } ?? words(data(2)))
        default:
            body = name
        }
        return "[ \(body) ]"
    }

    /// Data as 32-bit words in host order, as libnftnl prints registers.
    static func words(_ bytes: [UInt8]) -> String {
        stride(from: 0, to: max(bytes.count, 1), by: 4).map { i -> String in
            var w = [UInt8](repeating: 0, count: 4)
            for j in 0..<4 where i + j < bytes.count { w[j] = bytes[i + j] }
            let v = w.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            let hex = String(v, radix: 16)
            return "0x" + String(repeating: "0", count: 8 - hex.count) + hex
        }.joined(separator: " ")
    }
}
