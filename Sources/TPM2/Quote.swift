import CVMSupport

/// The attestation key and quote (TPM 2.0 Library, Part 3: CreatePrimary, Quote, FlushContext).
///
/// The AK is a primary key of the endorsement hierarchy made from a fixed template: ECC NIST P-256,
/// restricted signing, ECDSA with SHA-256, fixedTPM/fixedParent. A primary key is derived from the
/// hierarchy's seed and the template, so the same TPM gives the same AK public key every time
/// (no key blob to store); it is created per quote and flushed afterwards.
extension TPM2 {
    static let ccCreatePrimary: UInt32 = 0x0000_0131
    static let ccQuote: UInt32 = 0x0000_0158
    static let ccFlushContext: UInt32 = 0x0000_0165
    /// TPM_RH_ENDORSEMENT.
    public static let endorsementHierarchy: UInt32 = 0x4000_000B
    static let algECC: UInt16 = 0x0023
    static let algECDSA: UInt16 = 0x0018
    static let algNull: UInt16 = 0x0010
    static let eccNistP256: UInt16 = 0x0003
    /// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign.
    static let akAttributes: UInt32 = 1 << 1 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 16 | 1 << 18

    /// The empty-password authorization area (TPM_RS_PW), with its size prefix.
    static func passwordAuthArea() -> [UInt8] {
        var auth = Marshal()
        auth.u32(rsPW); auth.u16(0); auth.u8(0); auth.u16(0)
        var m = Marshal()
        m.u32(UInt32(auth.bytes.count))
        return m.bytes + auth.bytes
    }

    /// The AK template as a TPMT_PUBLIC.
    static func akTemplate() -> [UInt8] {
        var t = Marshal()
        t.u16(algECC); t.u16(algSHA256); t.u32(akAttributes)
        t.u16(0)                                   // authPolicy: none
        t.u16(algNull)                             // symmetric: none (a signing key)
        t.u16(algECDSA); t.u16(algSHA256)          // scheme
        t.u16(eccNistP256)
        t.u16(algNull)                             // kdf
        t.u16(0); t.u16(0)                         // unique: empty x, y
        return t.bytes
    }

    public static func createPrimaryAKCommand(hierarchy: UInt32 = endorsementHierarchy) -> [UInt8] {
        var body = Marshal()
        body.u32(hierarchy)
        body.bytes += passwordAuthArea()
        body.u16(4); body.u16(0); body.u16(0)      // TPM2B_SENSITIVE_CREATE: empty userAuth, data
        let template = akTemplate()
        body.u16(UInt16(template.count)); body.bytes += template
        body.u16(0)                                // outsideInfo
        body.u32(0)                                // creationPCR: none
        return command(tag: stSessions, code: ccCreatePrimary, body: body.bytes)
    }

    public static func quoteCommand(key: UInt32, qualifyingData: [UInt8], pcrs: [UInt32]) -> [UInt8] {
        var body = Marshal()
        body.u32(key)
        body.bytes += passwordAuthArea()
        body.u16(UInt16(qualifyingData.count)); body.bytes += qualifyingData
        body.u16(algNull)                          // inScheme: the key's own (ECDSA-SHA256)
        body.bytes += pcrSelection(pcrs)
        return command(tag: stSessions, code: ccQuote, body: body.bytes)
    }

    /// TPML_PCR_SELECTION of the SHA-256 bank.
    static func pcrSelection(_ pcrs: [UInt32]) -> [UInt8] {
        var select = [UInt8](repeating: 0, count: 3)
        for p in pcrs where p < 24 { select[Int(p / 8)] |= 1 << (p % 8) }
        var m = Marshal()
        m.u32(1); m.u16(algSHA256); m.u8(3); m.bytes += select
        return m.bytes
    }

    /// An attestation key loaded in the TPM: its handle and public point.
    public struct AttestationKey: Sendable {
        public let handle: UInt32
        /// The TPMT_PUBLIC the TPM returned.
        public let publicArea: [UInt8]
        public let x: [UInt8]
        public let y: [UInt8]

        /// SubjectPublicKeyInfo (DER) of the P-256 public key: what PEM "PUBLIC KEY" carries.
        public var subjectPublicKeyInfo: [UInt8] {
            // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING 04 || X || Y }
            let prefix: [UInt8] = [0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01,
                                   0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04]
            return prefix + pad32(x) + pad32(y)
        }

        func pad32(_ v: [UInt8]) -> [UInt8] { [UInt8](repeating: 0, count: max(0, 32 - v.count)) + v }
    }

    /// Creates the AK (see the type comment). Flush it with `flush` when done.
    public static func createAttestationKey(_ tpm: TPMTransport, hierarchy: UInt32 = endorsementHierarchy) throws -> AttestationKey {
        let r = Array(try transact(tpm, createPrimaryAKCommand(hierarchy: hierarchy), command: "CreatePrimary"))
        var p = Reader(bytes: r, command: "CreatePrimary")
        let handle = try p.u32()
        _ = try p.u32()                            // parameterSize
        let publicArea = try p.sized()
        var t = Reader(bytes: publicArea, command: "CreatePrimary")
        guard try t.u16() == algECC else { throw CVMError.io("TPM2_CreatePrimary: the TPM returned a non-ECC key") }
        _ = try t.u16(); _ = try t.u32()           // nameAlg, attributes
        _ = try t.sized()                          // authPolicy
        if try t.u16() != algNull { _ = try t.u16(); _ = try t.u16() }   // symmetric keyBits, mode
        if try t.u16() != algNull { _ = try t.u16() }                    // scheme hash
        guard try t.u16() == eccNistP256 else { throw CVMError.io("TPM2_CreatePrimary: the TPM returned a key on another curve") }
        if try t.u16() != algNull { _ = try t.u16() }                    // kdf hash
        let x = try t.sized(), y = try t.sized()
        guard x.count <= 32, y.count <= 32 else { throw CVMError.io("TPM2_CreatePrimary: malformed P-256 point") }
        return AttestationKey(handle: handle, publicArea: publicArea, x: x, y: y)
    }

    public static func flush(_ tpm: TPMTransport, handle: UInt32) throws {
        var body = Marshal()
        body.u32(handle)
        _ = try transact(tpm, command(tag: stNoSessions, code: ccFlushContext, body: body.bytes), command: "FlushContext")
    }

    /// A TPM2_Quote result: the signed TPMS_ATTEST and its TPMT_SIGNATURE, both as marshalled.
    public struct Quote: Sendable {
        public let attest: [UInt8]
        public let signature: [UInt8]
    }

    /// TPM2_Quote of the SHA-256 bank's `pcrs` signed by `key`, with `qualifyingData` (≤ 64 bytes)
    /// as the attestation's extraData.
    public static func quote(_ tpm: TPMTransport, key: AttestationKey, qualifyingData: [UInt8], pcrs: [UInt32]) throws -> Quote {
        guard qualifyingData.count <= 64 else { throw CVMError.usage("TPM2_Quote: qualifying data of \(qualifyingData.count) bytes; at most 64") }
        let r = Array(try transact(tpm, quoteCommand(key: key.handle, qualifyingData: qualifyingData, pcrs: pcrs), command: "Quote"))
        var p = Reader(bytes: r, command: "Quote")
        let parameterSize = Int(try p.u32())
        let start = p.offset
        let attest = try p.sized()
        guard parameterSize <= r.count - start else { throw CVMError.io("TPM2_Quote: truncated response") }
        let signature = Array(r[p.offset..<start + parameterSize])
        return Quote(attest: attest, signature: signature)
    }

    /// Bounds-checked big-endian reader of a response.
    struct Reader {
        let bytes: [UInt8]
        let command: String
        var offset = 0
        init(bytes: [UInt8], command: String) { self.bytes = bytes; self.command = command }
        mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
            guard n >= 0, bytes.count - offset >= n else { throw CVMError.io("TPM2_\(command): truncated response") }
            defer { offset += n }
            return bytes[offset..<offset + n]
        }
        mutating func u16() throws -> UInt16 { let b = Array(try take(2)); return TPM2.be16(b, 0) }
        mutating func u32() throws -> UInt32 { let b = Array(try take(4)); return TPM2.be32(b, 0) }
        /// A TPM2B: 16-bit size, then that many bytes.
        mutating func sized() throws -> [UInt8] { Array(try take(Int(try u16()))) }
    }
}
