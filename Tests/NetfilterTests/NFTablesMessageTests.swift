import Foundation
@testable import Netfilter
import XCTest

/// The message builder against the kernel's layout (linux/netlink.h, nfnetlink.h,
/// nf_tables.h), byte by byte; the decoder against nft's own debug notation.
final class NFTablesMessageTests: XCTestCase {
    func bytes(_ hex: String) -> [UInt8] {
        let digits = Array(hex.filter(\.isHexDigit))
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
    }

    /// NFT_MSG_NEWTABLE for `inet cvm_agent`: nlmsghdr (length, type NFNL_SUBSYS_NFTABLES << 8 |
    /// NFT_MSG_NEWTABLE, flags REQUEST|ACK|CREATE, seq, port 0), nfgenmsg (NFPROTO_INET, v0,
    /// res_id 0), NFTA_TABLE_NAME as a NUL-terminated string padded to 4 bytes.
    func testNewTableMessageLayout() throws {
        let message = Netlink.message(type: 0x0A00, flags: 0x405, seq: 7, family: 1,
                                      attributes: [.string(1, "cvm_agent")])
        XCTAssertEqual(message, bytes("""
            24000000 000a 0504 07000000 00000000
            01 00 0000
            0e00 0100 63766d5f6167656e7400 0000
            """))
    }

    /// The batch: begin and end carry AF_UNSPEC and res_id NFNL_SUBSYS_NFTABLES big-endian and
    /// ask for no ack; table, delete, table, chain and each rule ask for one, in sequence.
    func testBatchFraming() throws {
        let ruleset = FirewallRuleset(allowed: [AllowedPort(name: "a", proto: .tcp, port: 8000),
                                                AllowedPort(name: "b", proto: .udp, port: 53),
                                                AllowedPort(name: "dup", proto: .tcp, port: 8000)])
        let (batch, acked) = ruleset.batch(firstSeq: 100)
        let messages = try XCTUnwrap(Netlink.split(batch))
        XCTAssertEqual(messages.map(\.type), [0x10, 0x0A00, 0x0A02, 0x0A00, 0x0A03, 0x0A06, 0x0A06, 0x0A06, 0x0A06, 0x11])
        XCTAssertEqual(messages.map(\.seq), Array(100..<110))
        XCTAssertEqual(acked, Array(101..<109))
        XCTAssertEqual(messages.first?.payload, [0, 0, 0x00, 0x0A])
        XCTAssertEqual(messages.last?.payload, [0, 0, 0x00, 0x0A])
        XCTAssertEqual(messages.first?.flags, 0x1)
        XCTAssertEqual(messages[5].flags, 0x1 | 0x4 | 0x400 | 0x800, "rules are created and appended")
        XCTAssertEqual(ruleset.rules.map(\.text), ["iifname \"lo\" accept", "ct state established,related accept",
                                                   "tcp dport 8000 accept", "udp dport 53 accept"])

        // The chain: table, name, hook { NF_INET_LOCAL_IN, priority 0 } (nested flag set),
        // policy NF_DROP, type "filter"; integers big-endian.
        let chain = try XCTUnwrap(NetlinkAttribute.parse(messages[4].payload[4...]))
        XCTAssertEqual(chain.map(\.type), [1, 3, 0x8004, 5, 7])
        XCTAssertEqual(chain[2].encoded, bytes("1400 0480 0800 0100 00000001 0800 0200 00000000"))
        XCTAssertEqual(chain[3].value, [0, 0, 0, 0])
        XCTAssertEqual(chain[4].value, Array("filter".utf8) + [0])
    }

    /// `tcp dport 8000 accept` as nft encodes it: meta l4proto, cmp 1 byte, payload 2 bytes at
    /// transport header + 2, cmp big-endian port, immediate verdict accept.
    func testPortRuleExpressions() throws {
        let rule = FirewallRuleset(allowed: [AllowedPort(name: "a", proto: .tcp, port: 8000)]).rules[2]
        let encoded = NetlinkAttribute.nested(4, rule.expressions.map(\.attribute)).encoded
        let list = try XCTUnwrap(NetlinkAttribute.parse(encoded[...]))[0].children
        XCTAssertEqual(list.map { $0.children.first(1)?.stringValue }, ["meta", "cmp", "payload", "cmp", "immediate"])
        // cmp eq reg 1 with data 0x1f40: NFTA_CMP_DATA { NFTA_DATA_VALUE { 1f 40 } }
        XCTAssertEqual(list[3].encoded, bytes("""
            2c00 0180  0800 0100 636d7000
            2000 0280  0800 0100 00000001  0800 0200 00000000  0c00 0380 0600 0100 1f40 0000
            """))
        // immediate: DREG 0 (verdict), NFTA_IMMEDIATE_DATA { NFTA_DATA_VERDICT { NFTA_VERDICT_CODE NF_ACCEPT } }
        XCTAssertEqual(list[4].children.first(2)?.encoded, bytes("1c00 0280 0800 0100 00000000 1000 0280 0c00 0280 0800 0100 00000001"))
    }

    /// Each rule rendered back from its own messages reads as `nft --debug=netlink` prints the
    /// same rule written in nft syntax (nft 1.0.6's output for these three rules).
    func testDecoderSpeaksNftDebugNotation() throws {
        let ruleset = FirewallRuleset(allowed: [AllowedPort(name: "a", proto: .tcp, port: 8000)])
        let (batch, _) = ruleset.batch(firstSeq: 1)
        let decoded = try XCTUnwrap(Netlink.split(batch)).compactMap(DecodedRule.decode)
        XCTAssertEqual(decoded.map(\.expressions), [
            ["[ meta load iifname => reg 1 ]", "[ cmp eq reg 1 0x00006f6c 0x00000000 0x00000000 0x00000000 ]", "[ immediate reg 0 accept ]"],
            ["[ ct load state => reg 1 ]", "[ bitwise reg 1 = ( reg 1 & 0x00000006 ) ^ 0x00000000 ]", "[ cmp neq reg 1 0x00000000 ]",
             "[ immediate reg 0 accept ]"],
            ["[ meta load l4proto => reg 1 ]", "[ cmp eq reg 1 0x00000006 ]", "[ payload load 2b @ transport header + 2 => reg 1 ]",
             "[ cmp eq reg 1 0x0000401f ]", "[ immediate reg 0 accept ]"],
        ])
        XCTAssertEqual(decoded.map(\.table), ["cvm_agent", "cvm_agent", "cvm_agent"])
    }

    func testSplitRefusesTruncatedMessages() {
        var message = Netlink.message(type: 2, flags: 0, seq: 1, family: 0)
        XCTAssertEqual(Netlink.split(message)?.count, 1)
        message[0] = 200
        XCTAssertNil(Netlink.split(message))
    }
}
