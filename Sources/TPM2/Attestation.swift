import CVMCrypto
import CVMSupport

/// What `GET /collaterals/{nonce}` proves: a quote of the SHA-256 PCRs bound to a verifier's
/// nonce and to the agent's TLS key (docs/agent-api.md).
public struct PCRAttestation: Sendable {
    public let quote: TPM2.Quote
    public let akPublicPEM: String
    /// The quoted PCR values (read right after the quote, with nothing extended in between).
    public let pcrs: [UInt32: [UInt8]]
    public let qualifyingData: [UInt8]

    /// qualifying data = SHA-256(nonce || tls fingerprint bytes); the fingerprint is the 32-byte
    /// SHA-256 of the certificate DER, or nothing when the agent serves no TLS.
    public static func qualifyingData(nonce: [UInt8], tlsFingerprint: [UInt8]) -> [UInt8] {
        SHA256.hash(nonce + tlsFingerprint)
    }

    /// Creates the AK, quotes `pcrs`, reads their values, flushes the AK. The caller keeps
    /// other users of `tpm` (PCR extends) out for the duration.
    public static func make(_ tpm: TPMTransport, nonce: [UInt8], tlsFingerprint: [UInt8],
                            pcrs: [UInt32] = Array(0..<24)) throws -> PCRAttestation {
        let data = qualifyingData(nonce: nonce, tlsFingerprint: tlsFingerprint)
        let key = try TPM2.createAttestationKey(tpm)
        let result: Result<(TPM2.Quote, [UInt32: [UInt8]]), Error> = Result {
            let quote = try TPM2.quote(tpm, key: key, qualifyingData: data, pcrs: pcrs)
            return (quote, try TPM2.readSHA256(tpm, pcrs: pcrs))
        }
        try TPM2.flush(tpm, handle: key.handle)
        let (quote, values) = try result.get()
        return PCRAttestation(quote: quote, akPublicPEM: pem(key.subjectPublicKeyInfo), pcrs: values, qualifyingData: data)
    }

    static func pem(_ der: [UInt8]) -> String {
        let b64 = Base64.encode(der)
        var lines: [String] = []
        var i = b64.startIndex
        while i < b64.endIndex {
            let j = b64.index(i, offsetBy: 64, limitedBy: b64.endIndex) ?? b64.endIndex
            lines.append(String(b64[i..<j]))
            i = j
        }
        return "-----BEGIN PUBLIC KEY-----\n" + lines.joined(separator: "\n") + "\n-----END PUBLIC KEY-----\n"
    }
}
