/// Netlink framing (linux/netlink.h, linux/netfilter/nfnetlink.h) as plain bytes: message
/// headers, the nfgenmsg that every nfnetlink message carries, and type-length-value
/// attributes. Pure values, no socket: what the kernel receives can be checked byte by byte.
public enum Netlink {
    // struct nlmsghdr flags
    public static let request: UInt16 = 0x1       // NLM_F_REQUEST
    public static let ack: UInt16 = 0x4           // NLM_F_ACK
    public static let dump: UInt16 = 0x300        // NLM_F_ROOT | NLM_F_MATCH
    public static let create: UInt16 = 0x400      // NLM_F_CREATE
    public static let append: UInt16 = 0x800      // NLM_F_APPEND
    // message types every netlink family shares
    public static let error: UInt16 = 2           // NLMSG_ERROR
    public static let done: UInt16 = 3            // NLMSG_DONE
    /// NLA_F_NESTED: set on container attributes, as libmnl does.
    public static let nested: UInt16 = 0x8000

    public static let headerSize = 16              // sizeof(struct nlmsghdr)
    public static let nfgenmsgSize = 4             // sizeof(struct nfgenmsg)

    static func align4(_ n: Int) -> Int { (n + 3) & ~3 }

    /// One netlink message: nlmsghdr (native byte order, as the kernel reads it), nfgenmsg
    /// (family, version 0, resource id big-endian), then the attributes.
    public static func message(type: UInt16, flags: UInt16, seq: UInt32, family: UInt8, resourceID: UInt16 = 0,
                               attributes: [NetlinkAttribute] = []) -> [UInt8] {
        var body: [UInt8] = [family, 0] + resourceID.bigEndianBytes
        for a in attributes { body += a.encoded }
        var out: [UInt8] = []
        out += UInt32(headerSize + body.count).nativeBytes
        out += type.nativeBytes
        out += flags.nativeBytes
        out += seq.nativeBytes
        out += UInt32(0).nativeBytes      // port id: the kernel fills in ours
        return out + body
    }

    /// A parsed netlink message (header fields and the payload after nlmsghdr).
    public struct Message: Sendable {
        public let type: UInt16, flags: UInt16, seq: UInt32
        public let payload: [UInt8]
    }

    /// Splits a datagram into messages; nil when a length field does not fit.
    public static func split(_ bytes: [UInt8]) -> [Message]? {
        var out: [Message] = []
        var i = 0
        while i + headerSize <= bytes.count {
            let length = Int(bytes.native32(i))
            guard length >= headerSize, i + length <= bytes.count else { return nil }
            out.append(Message(type: bytes.native16(i + 4), flags: bytes.native16(i + 6), seq: bytes.native32(i + 8),
                               payload: Array(bytes[(i + headerSize)..<(i + length)])))
            i += align4(length)
        }
        return out
    }
}

/// A netlink attribute: 16-bit length (header included, padding excluded), 16-bit type,
/// value padded to 4 bytes. nf_tables' integers are big-endian; strings end with a NUL.
public struct NetlinkAttribute: Sendable, Equatable {
    public let type: UInt16
    public let value: [UInt8]

    public init(_ type: UInt16, _ value: [UInt8]) { self.type = type; self.value = value }
    public static func string(_ type: UInt16, _ s: String) -> NetlinkAttribute { .init(type, Array(s.utf8) + [0]) }
    public static func be32(_ type: UInt16, _ v: UInt32) -> NetlinkAttribute { .init(type, v.bigEndianBytes) }
    public static func nested(_ type: UInt16, _ children: [NetlinkAttribute]) -> NetlinkAttribute {
        .init(type | Netlink.nested, children.flatMap(\.encoded))
    }

    public var encoded: [UInt8] {
        var out = UInt16(4 + value.count).nativeBytes + type.nativeBytes + value
        while out.count % 4 != 0 { out.append(0) }
        return out
    }

    /// Parses a run of attributes (a message body after its fixed header, or a nested value).
    /// The type keeps its flag bits; `kind` drops them.
    public static func parse(_ bytes: ArraySlice<UInt8>) -> [NetlinkAttribute]? {
        var out: [NetlinkAttribute] = []
        var i = bytes.startIndex
        while i + 4 <= bytes.endIndex {
            let length = Int(UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8)
            let type = UInt16(bytes[i + 2]) | UInt16(bytes[i + 3]) << 8
            guard length >= 4, i + length <= bytes.endIndex else { return nil }
            out.append(NetlinkAttribute(type, Array(bytes[(i + 4)..<(i + length)])))
            i += Netlink.align4(length)
        }
        return out
    }

    public var kind: UInt16 { type & 0x3FFF }
    public var children: [NetlinkAttribute] { Self.parse(value[...]) ?? [] }
    public var be32Value: UInt32? {
        value.count == 4 ? value.reduce(0) { $0 << 8 | UInt32($1) } : nil
    }
    public var stringValue: String {
        String(decoding: value.prefix { $0 != 0 }, as: UTF8.self)
    }
}

extension Array where Element == NetlinkAttribute {
    public func first(_ kind: UInt16) -> NetlinkAttribute? { first { $0.kind == kind } }
}

extension FixedWidthInteger {
    var nativeBytes: [UInt8] { withUnsafeBytes(of: self) { Array($0) } }
    var bigEndianBytes: [UInt8] { withUnsafeBytes(of: self.bigEndian) { Array($0) } }
}

extension Array where Element == UInt8 {
    func native16(_ i: Int) -> UInt16 { self[i..<(i + 2)].withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) } }
    func native32(_ i: Int) -> UInt32 { self[i..<(i + 4)].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
}
