import CVMSupport

/// Reading what TPM2_Quote returns (TPM 2.0 Library, Part 2: TPMS_ATTEST §10.12.12,
/// TPMS_QUOTE_INFO §10.12.4, TPMT_SIGNATURE §11.3.4), for verifiers. Strict: every length is
/// bounds-checked and trailing bytes are refused, so what is checked is exactly what was signed.
extension TPM2 {
    /// TPM_GENERATED_VALUE: the TPM made this structure (it refuses to sign outside data starting so).
    public static let generatedValue: UInt32 = 0xFF54_4347
    /// TPM_ST_ATTEST_QUOTE.
    public static let stAttestQuote: UInt16 = 0x8018
    static let algRSASSA: UInt16 = 0x0014

    /// A parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
    public struct QuoteInfo: Sendable {
        public let qualifiedSigner: [UInt8]
        /// The caller's qualifying data (the agent's SHA-256(nonce || tls fingerprint)).
        public let extraData: [UInt8]
        public let clock: UInt64
        public let resetCount: UInt32
        public let restartCount: UInt32
        public let firmwareVersion: UInt64
        /// The quoted PCRs per bank (algorithm id → indexes), in selection order: the order
        /// their values are concatenated for `pcrDigest`.
        public let selection: [(algorithm: UInt16, pcrs: [UInt32])]
        public let pcrDigest: [UInt8]

        /// Parses `attest`; throws a one-line reason when it is not a well-formed quote.
        public init(_ attest: [UInt8]) throws {
            var r = Reader(bytes: attest, command: "Quote")
            func parse<T>(_ what: String, _ body: () throws -> T) throws -> T {
                do { return try body() } catch {
                    throw CVMError.invalid("TPMS_ATTEST: truncated in \(what) (\(attest.count) bytes)")
                }
            }
            let magic = try parse("magic") { try r.u32() }
            guard magic == TPM2.generatedValue else {
                throw CVMError.invalid("TPMS_ATTEST: magic 0x\(String(magic, radix: 16)) is not TPM_GENERATED_VALUE 0xff544347")
            }
            let type = try parse("type") { try r.u16() }
            guard type == TPM2.stAttestQuote else {
                throw CVMError.invalid("TPMS_ATTEST: type 0x\(String(type, radix: 16)) is not TPM_ST_ATTEST_QUOTE 0x8018")
            }
            qualifiedSigner = try parse("qualifiedSigner") { try r.sized() }
            extraData = try parse("extraData") { try r.sized() }
            (clock, resetCount, restartCount) = try parse("clockInfo") {
                let high = UInt64(try r.u32()), low = UInt64(try r.u32())
                let reset = try r.u32(), restart = try r.u32()
                _ = try r.take(1)                        // safe
                return (high << 32 | low, reset, restart)
            }
            firmwareVersion = try parse("firmwareVersion") { UInt64(try r.u32()) << 32 | UInt64(try r.u32()) }
            let count = try parse("pcrSelect") { try r.u32() }
            guard count <= 16 else { throw CVMError.invalid("TPMS_ATTEST: \(count) PCR selections; at most 16 banks exist") }
            var selection: [(UInt16, [UInt32])] = []
            for _ in 0..<count {
                let (algorithm, bitmap) = try parse("pcrSelect") { () -> (UInt16, [UInt8]) in
                    let algorithm = try r.u16()
                    let size = Int(try r.take(1).first!)
                    return (algorithm, Array(try r.take(size)))
                }
                var pcrs: [UInt32] = []
                for (i, byte) in bitmap.enumerated() {
                    for bit in 0..<8 where byte & (1 << bit) != 0 { pcrs.append(UInt32(i * 8 + bit)) }
                }
                selection.append((algorithm, pcrs))
            }
            self.selection = selection
            pcrDigest = try parse("pcrDigest") { try r.sized() }
            guard r.offset == attest.count else {
                throw CVMError.invalid("TPMS_ATTEST: \(attest.count - r.offset) bytes after the quote information")
            }
        }
    }

    /// A parsed TPMT_SIGNATURE: ECDSA (r, s) or RSASSA-PKCS1-v1_5, with SHA-256.
    public enum Signature: Sendable, Equatable {
        case ecdsaSHA256(r: [UInt8], s: [UInt8])
        case rsassaSHA256([UInt8])

        public init(_ bytes: [UInt8]) throws {
            var r = Reader(bytes: bytes, command: "Quote")
            do {
                let algorithm = try r.u16(), hash = try r.u16()
                guard hash == TPM2.algSHA256 else {
                    throw CVMError.invalid("TPMT_SIGNATURE: hash 0x\(String(hash, radix: 16)) is not SHA-256 (0x000b)")
                }
                switch algorithm {
                case TPM2.algECDSA: self = .ecdsaSHA256(r: try r.sized(), s: try r.sized())
                case TPM2.algRSASSA: self = .rsassaSHA256(try r.sized())
                default:
                    throw CVMError.invalid("TPMT_SIGNATURE: scheme 0x\(String(algorithm, radix: 16)) is neither ECDSA (0x0018) nor RSASSA (0x0014)")
                }
            } catch let error as CVMError where error.kind == .invalidInput {
                throw error
            } catch {
                throw CVMError.invalid("TPMT_SIGNATURE: truncated (\(bytes.count) bytes)")
            }
            guard r.offset == bytes.count else {
                throw CVMError.invalid("TPMT_SIGNATURE: \(bytes.count - r.offset) bytes after the signature")
            }
        }

        /// The signature as X.509/OpenSSL verifiers take it: for ECDSA the DER
        /// `SEQUENCE { INTEGER r, INTEGER s }`, for RSASSA the raw signature.
        public var x509Encoding: [UInt8] {
            switch self {
            case .rsassaSHA256(let value): return value
            case .ecdsaSHA256(let r, let s):
                let body = Self.derInteger(r) + Self.derInteger(s)
                return [0x30] + Self.derLength(body.count) + body
            }
        }

        static func derInteger(_ value: [UInt8]) -> [UInt8] {
            var v = Array(value.drop { $0 == 0 })
            if v.isEmpty { v = [0] }
            if v[0] & 0x80 != 0 { v.insert(0, at: 0) }        // keep it positive
            return [0x02] + derLength(v.count) + v
        }

        static func derLength(_ n: Int) -> [UInt8] {
            if n < 0x80 { return [UInt8(n)] }
            if n < 0x100 { return [0x81, UInt8(n)] }
            return [0x82, UInt8(n >> 8), UInt8(n & 0xFF)]
        }
    }
}
