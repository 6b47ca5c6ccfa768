import CVMCrypto
import CVMSupport
import Golden

/// One workload event as the agent reports it (docs/measurement.md).
public struct WorkloadEventRecord: Sendable, Equatable {
    public let name: String
    public let contentSHA256: [UInt8]?
    public let digest: [UInt8]
}

/// The agent's `GET /collaterals/{nonce}` document (docs/agent-api.md), decoded. Only its shape is
/// checked here; whether it is true is `AttestationVerifier`'s business.
public struct Collaterals: Sendable {
    /// The document as parsed (the agent's /offchain-verify returns it for re-verification).
    public let document: JSONValue
    public let nonce: [UInt8]?
    /// The `qualifying_data` member (informational: the quote's extraData is what counts).
    public let qualifyingData: [UInt8]?
    /// TPMS_ATTEST and TPMT_SIGNATURE as the TPM produced them.
    public let quote: [UInt8]
    public let signature: [UInt8]
    public let akPublicPEM: String
    /// The reported SHA-256 bank.
    public let pcrs: [UInt32: [UInt8]]
    /// The TCG2 firmware event log (empty when the agent had none).
    public let eventLog: [UInt8]
    public let workloadEvents: [WorkloadEventRecord]
    /// False when the document has no workload_events member (nothing to replay).
    public let reportsWorkloadEvents: Bool
    /// PCR 23 before `workloadEvents` (zeros at boot; the previous value after an update-workload).
    public let workloadPCR23Base: [UInt8]
    /// The 32 bytes after `sha256:`, nil when the agent serves no TLS.
    public let tlsFingerprint: [UInt8]?

    public static func parse(_ bytes: [UInt8], source: String) throws -> Collaterals {
        try Collaterals(try CanonicalJSON.parse(bytes, source: source), source: source)
    }

    public init(_ document: JSONValue, source: String) throws {
        guard case .object = document else {
            throw CVMError.invalid("\(source): expected the collaterals JSON object of the agent's GET /collaterals/{nonce}")
        }
        let fields = Fields(document, source: source)
        guard document["quote"] != nil, document["signature"] != nil, document["ak_public"] != nil else {
            throw CVMError.invalid("\(source): not attestation collaterals: expected quote, signature and ak_public (from GET /collaterals/{nonce} or `cvm-cli collaterals`)")
        }
        self.document = document
        nonce = try fields.optionalHex("nonce")
        qualifyingData = try fields.optionalHex("qualifying_data")
        quote = try fields.base64("quote")
        signature = try fields.base64("signature")
        akPublicPEM = try fields.string("ak_public")
        pcrs = try fields.pcrBank()
        eventLog = document["event_log"] == nil ? [] : try fields.base64("event_log", allowEmpty: true)
        workloadEvents = try fields.workloadEvents()
        reportsWorkloadEvents = document["workload_events"] != nil
        workloadPCR23Base = try fields.optionalHex("workload_pcr23_base", bytes: 32) ?? [UInt8](repeating: 0, count: 32)
        tlsFingerprint = try fields.optionalFingerprint("tls_fingerprint")
    }
}

/// What the collaterals are compared with: a `/golden-measurement` document, a `golden predict`
/// output (with its `unpredictable` map), or either one signed (`{golden_measurement, signature}`).
public struct GoldenReference: Sendable {
    public enum Form: String, Sendable {
        case measurement = "golden measurement"
        case prediction = "golden prediction"
    }

    public let form: Form
    /// Expected SHA-256 PCR values.
    public let pcrs: [UInt32: [UInt8]]
    /// PCRs a prediction could not compute, with the reason.
    public let unpredictable: [UInt32: String]
    /// The TLS key the measured VM had (a fetched golden measurement carries it).
    public let tlsFingerprint: [UInt8]?
    public let workloadEvents: [WorkloadEventRecord]
    /// The signed document, when it came signed; its signature is checked by the verifier.
    public let signed: SignedGoldenMeasurement?

    public static func parse(_ bytes: [UInt8], source: String) throws -> GoldenReference {
        let value = try CanonicalJSON.parse(bytes, source: source)
        if value["golden_measurement"] != nil {
            let signed = try SignedGoldenMeasurement.parse(bytes, source: source)
            return try GoldenReference(signed.measurement, signed: signed, source: source)
        }
        return try GoldenReference(value, signed: nil, source: source)
    }

    /// From a parsed document (the agent's POST /offchain-verify body carries it inline).
    public static func parse(_ value: JSONValue, source: String) throws -> GoldenReference {
        if value["golden_measurement"] != nil {
            let signed = try SignedGoldenMeasurement.parse(CanonicalJSON.canonicalBytes(value), source: source)
            return try GoldenReference(signed.measurement, signed: signed, source: source)
        }
        return try GoldenReference(value, signed: nil, source: source)
    }

    init(_ value: JSONValue, signed: SignedGoldenMeasurement?, source: String) throws {
        guard case .object = value, value["pcrs"] != nil else {
            throw CVMError.invalid("\(source): not a golden measurement: expected pcrs.sha256 (from `cvm-cli golden fetch` or `golden predict`) or a signed document {golden_measurement, signature}")
        }
        let fields = Fields(value, source: source)
        pcrs = try fields.pcrBank()
        guard !pcrs.isEmpty else { throw CVMError.invalid("\(source): pcrs.sha256 is empty: nothing to compare") }
        var unpredictable: [UInt32: String] = [:]
        if let map = value["unpredictable"] {
            guard case .object(let members) = map else { throw CVMError.invalid("\(source): unpredictable must be an object {\"<pcr>\": \"<reason>\"}") }
            for (key, reason) in members {
                guard let index = UInt32(key), index < 24, let text = reason.stringValue else {
                    throw CVMError.invalid("\(source): unpredictable.\(key): expected a PCR index 0–23 mapped to a reason string")
                }
                unpredictable[index] = text
            }
        }
        self.unpredictable = unpredictable
        form = value["unpredictable"] != nil ? .prediction : .measurement
        tlsFingerprint = try fields.optionalFingerprint("tls_fingerprint")
        workloadEvents = try fields.workloadEvents()
        self.signed = signed
    }
}

/// Typed access to a document's members, with errors naming the document and the member.
struct Fields {
    let value: JSONValue
    let source: String
    init(_ value: JSONValue, source: String) { self.value = value; self.source = source }

    func string(_ key: String) throws -> String {
        guard let member = value[key] else { throw CVMError.invalid("\(source): \(key) is missing") }
        guard let text = member.stringValue else { throw CVMError.invalid("\(source): \(key) must be a string, not \(member.typeName)") }
        return text
    }

    func base64(_ key: String, allowEmpty: Bool = false) throws -> [UInt8] {
        let text = try string(key)
        guard let bytes = Base64.decode(text), allowEmpty || !bytes.isEmpty else {
            throw CVMError.invalid("\(source): \(key) is not \(allowEmpty ? "" : "non-empty ")standard base64")
        }
        return bytes
    }

    func optionalHex(_ key: String, bytes: Int? = nil) throws -> [UInt8]? {
        guard value[key] != nil, value[key] != .null else { return nil }
        let text = try string(key)
        guard let decoded = decodeHex(text), bytes == nil || decoded.count == bytes else {
            throw CVMError.invalid("\(source): \(key) must be \(bytes.map { "\($0) bytes in " } ?? "")hex")
        }
        return decoded
    }

    func optionalFingerprint(_ key: String) throws -> [UInt8]? {
        guard value[key] != nil, value[key] != .null else { return nil }
        let text = try string(key)
        guard let bytes = parseFingerprint(text) else {
            throw CVMError.invalid("\(source): \(key) must be sha256:<64 hex digits>")
        }
        return bytes
    }

    /// `pcrs.sha256`: {"<index>": "<64 hex>"}.
    func pcrBank() throws -> [UInt32: [UInt8]] {
        guard let bank = value["pcrs"]?["sha256"], case .object(let members) = bank else {
            throw CVMError.invalid("\(source): pcrs.sha256 is missing or not an object {\"<pcr>\": \"<hex>\"}")
        }
        var out: [UInt32: [UInt8]] = [:]
        for (key, item) in members {
            guard let index = UInt32(key), index < 24 else { throw CVMError.invalid("\(source): pcrs.sha256.\(key): PCR indexes are 0–23") }
            guard let hex = item.stringValue, let bytes = decodeHex(hex), bytes.count == 32 else {
                throw CVMError.invalid("\(source): pcrs.sha256.\(key) must be 64 hex digits (a SHA-256 value)")
            }
            out[index] = bytes
        }
        return out
    }

    func workloadEvents() throws -> [WorkloadEventRecord] {
        guard let list = value["workload_events"], list != .null else { return [] }
        guard case .array(let items) = list else { throw CVMError.invalid("\(source): workload_events must be an array") }
        return try items.enumerated().map { i, item in
            guard let name = item["name"]?.stringValue, let digestHex = item["digest"]?.stringValue,
                  let digest = decodeHex(digestHex), digest.count == 32 else {
                throw CVMError.invalid("\(source): workload_events[\(i)] needs name and digest (64 hex digits)")
            }
            var content: [UInt8]?
            if let text = item["content_sha256"]?.stringValue {
                guard let bytes = decodeHex(text), bytes.count == 32 else {
                    throw CVMError.invalid("\(source): workload_events[\(i)].content_sha256 must be 64 hex digits")
                }
                content = bytes
            }
            return WorkloadEventRecord(name: name, contentSHA256: content, digest: digest)
        }
    }
}

/// `sha256:<64 hex>` (the agent's tls_fingerprint) → 32 bytes; nil when malformed.
public func parseFingerprint(_ text: String) -> [UInt8]? {
    guard text.lowercased().hasPrefix("sha256:"), let bytes = decodeHex(String(text.dropFirst(7))), bytes.count == 32 else { return nil }
    return bytes
}
