import CVMCrypto
import CVMSupport

/// A golden measurement signed by its publisher:
/// `{"golden_measurement": {…}, "signature": {"alg", "key_id", "value"}}`.
///
/// The signature covers the RFC 8785 canonical bytes of `golden_measurement`, so the document
/// verifies whatever whitespace or member order it is stored with, and
/// `openssl dgst -sha256 -verify public.pem -signature sig.bin canonical.json` checks it too.
public struct SignedGoldenMeasurement: Sendable {
    public let measurement: JSONValue
    public let algorithm: SignatureAlgorithm
    /// Hex SHA-256 of the signer's SubjectPublicKeyInfo DER.
    public let keyID: String
    public let signature: [UInt8]

    /// Signs the golden measurement in `document` (the JSON of `/golden-measurement`, or any
    /// JSON object) with `key`; `algorithm` defaults to ES256 for EC keys, RS256 for RSA.
    public static func sign(document: [UInt8], source: String, key: DocumentSigningKey,
                            algorithm: SignatureAlgorithm? = nil) throws -> SignedGoldenMeasurement {
        let measurement = try CanonicalJSON.parse(document, source: source)
        guard case .object(let members) = measurement else {
            throw CVMError.invalid("\(source): a golden measurement is a JSON object; this is another JSON value")
        }
        if members["golden_measurement"] != nil, members["signature"] != nil {
            throw CVMError.invalid("\(source): is already a signed document; sign the unsigned golden measurement (e.g. from 'golden fetch')")
        }
        let alg = algorithm ?? key.defaultAlgorithm
        let canonical = CanonicalJSON.canonicalBytes(measurement)
        let value = try key.sign(canonical, algorithm: alg)
        let publicKey = try key.publicKey()
        // A signature that does not verify must never be written (wrong PSS setup, a bad key file).
        guard try publicKey.verify(value, of: canonical, algorithm: alg) else {
            throw CVMError.io("\(source): the new \(alg.rawValue) signature does not verify with the key's own public half")
        }
        return SignedGoldenMeasurement(measurement: measurement, algorithm: alg, keyID: publicKey.keyID, signature: value)
    }

    /// Reads a signed document without checking its signature (see `verify`).
    public static func parse(_ bytes: [UInt8], source: String) throws -> SignedGoldenMeasurement {
        let document = try CanonicalJSON.parse(bytes, source: source)
        guard case .object(let members) = document else {
            throw CVMError.invalid("\(source): a signed golden measurement is a JSON object with golden_measurement and signature")
        }
        guard let measurement = members["golden_measurement"], case .object = measurement else {
            throw CVMError.invalid("\(source): no \"golden_measurement\" object; is this an unsigned measurement? sign it with 'cvm-cli golden sign'")
        }
        guard let signature = members["signature"], case .object(let fields) = signature else {
            throw CVMError.invalid("\(source): no \"signature\" object")
        }
        // Anything else next to them would be unsigned content a reader might trust.
        if let extra = members.keys.first(where: { $0 != "golden_measurement" && $0 != "signature" }) {
            throw CVMError.invalid("\(source): unexpected member \"\(extra)\" outside golden_measurement; it would not be covered by the signature")
        }
        if let extra = fields.keys.first(where: { !["alg", "key_id", "value"].contains($0) }) {
            throw CVMError.invalid("\(source): unexpected member signature.\(extra); expected alg, key_id and value")
        }
        guard let algText = fields["alg"]?.stringValue else { throw CVMError.invalid("\(source): signature.alg is missing or not a string") }
        guard let alg = SignatureAlgorithm(rawValue: algText) else {
            throw CVMError.invalid("\(source): signature.alg \"\(algText)\" is not one of ES256, RS256, PS256")
        }
        guard let keyID = fields["key_id"]?.stringValue, keyID.count == 64,
              keyID.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw CVMError.invalid("\(source): signature.key_id must be 64 lowercase hex digits (SHA-256 of the public key)")
        }
        guard let text = fields["value"]?.stringValue, let value = Base64.decode(text), !value.isEmpty else {
            throw CVMError.invalid("\(source): signature.value is missing or not standard base64")
        }
        return SignedGoldenMeasurement(measurement: measurement, algorithm: alg, keyID: keyID, signature: value)
    }

    /// Checks the signature with `key`; throws a one-line reason when it does not hold.
    public func verify(with key: DocumentVerifyingKey, source: String, keySource: String) throws {
        guard keyID == key.keyID else {
            throw CVMError.invalid("\(source): signed by key \(keyID), but \(keySource) is key \(key.keyID); use the publisher's public key")
        }
        guard key.allows(algorithm) else {
            throw CVMError.invalid("\(source): signed with \(algorithm.rawValue), which \(keySource) cannot verify")
        }
        guard try key.verify(signature, of: CanonicalJSON.canonicalBytes(measurement), algorithm: algorithm) else {
            throw CVMError.invalid("\(source): the \(algorithm.rawValue) signature does not match: the golden measurement was changed after signing, or the signature is damaged")
        }
    }

    /// The signed document, pretty-printed (members in canonical order).
    public var documentBytes: [UInt8] {
        CanonicalJSON.prettyBytes(.object([
            "golden_measurement": measurement,
            "signature": .object([
                "alg": .string(algorithm.rawValue),
                "key_id": .string(keyID),
                "value": .string(Base64.encode(signature)),
            ]),
        ]))
    }
}
