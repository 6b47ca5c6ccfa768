import CVMSupport

/// A TCG2 crypto-agile event log (TCG PC Client Platform Firmware Profile, §10): the firmware's
/// record of what it extended into which PCR. Replaying it must give the TPM's PCR values.
public struct TCGEventLog: Sendable {
    public struct Event: Sendable {
        public let pcr: UInt32
        public let type: UInt32
        /// Digest per algorithm id (0x000B = SHA-256).
        public let digests: [UInt16: [UInt8]]
        public let data: [UInt8]
    }

    /// EV_NO_ACTION: informational, never extended.
    public static let evNoAction: UInt32 = 3
    public let events: [Event]

    public init(_ b: [UInt8]) throws {
        var o = 0
        func need(_ n: Int) throws {
            guard n >= 0, o + n <= b.count else { throw CVMError.invalid("event log: truncated at byte \(o)") }
        }
        func u32() throws -> UInt32 { try need(4); defer { o += 4 }; return b.le32(o) }
        func u16() throws -> UInt16 { try need(2); defer { o += 2 }; return b.le16(o) }
        func bytes(_ n: Int) throws -> [UInt8] { try need(n); defer { o += n }; return Array(b[o..<o + n]) }

        // First event: SHA-1 format, carrying the Spec ID Event03 with the digest sizes.
        _ = try u32(); let firstType = try u32(); _ = try bytes(20)
        let specSize = Int(try u32())
        let spec = try bytes(specSize)
        guard firstType == Self.evNoAction, spec.count >= 28, spec.starts(with: Array("Spec ID Event03".utf8)) else {
            throw CVMError.invalid("event log: does not start with a Spec ID Event03 (not a crypto-agile log)")
        }
        let algorithms = Int(spec.le32(24))
        var sizes: [UInt16: Int] = [:]
        for i in 0..<algorithms {
            let p = 28 + 4 * i
            guard p + 4 <= spec.count else { throw CVMError.invalid("event log: truncated Spec ID event") }
            sizes[spec.le16(p)] = Int(spec.le16(p + 2))
        }
        var events: [Event] = []
        while o + 8 <= b.count {
            let pcr = try u32(), type = try u32()
            let count = Int(try u32())
            var digests: [UInt16: [UInt8]] = [:]
            for _ in 0..<count {
                let alg = try u16()
                guard let size = sizes[alg] else { throw CVMError.invalid("event log: digest of unknown algorithm 0x\(String(alg, radix: 16))") }
                digests[alg] = try bytes(size)
            }
            let data = try bytes(Int(try u32()))
            events.append(Event(pcr: pcr, type: type, digests: digests, data: data))
        }
        self.events = events
    }

    /// PCR values obtained by extending every event's digest of `algorithm` from zeros,
    /// for the PCRs the log mentions. `hash` is the bank's hash function.
    public func replay(algorithm: UInt16 = TPM2.algSHA256, hash: ([UInt8]) -> [UInt8]) -> [UInt32: [UInt8]] {
        var pcrs: [UInt32: [UInt8]] = [:]
        for e in events where e.type != Self.evNoAction {
            guard let d = e.digests[algorithm] else { continue }
            pcrs[e.pcr] = hash((pcrs[e.pcr] ?? [UInt8](repeating: 0, count: d.count)) + d)
        }
        return pcrs
    }
}
