import Attestation
import CVMCrypto
import CVMSupport

/// `POST /offchain-verify` (docs/agent-api.md): fresh collaterals for the caller's nonce,
/// verified in the guest against the caller's golden measurement by the same library as
/// `cvm-cli verify`. The answer carries the collaterals so the caller can check them itself.
extension Agent {
    func offchainVerify(_ request: HTTPRequest) -> HTTPResponse {
        func bad(_ message: String) -> HTTPResponse { .json(400, jsonObject(["error": message])) }
        let body: JSONValue
        do {
            body = try CanonicalJSON.parse(request.body, source: "request body")
        } catch let error as CVMError {
            return bad(error.message + "; expected {\"nonce\": \"<hex>\", \"golden_measurement\": {…}, \"public_key\": \"<PEM>\"}")
        } catch {
            return bad("request body: \(error)")
        }
        guard case .object(let members) = body else {
            return bad("request body: expected a JSON object {\"nonce\": \"<hex>\", \"golden_measurement\": {…}, \"public_key\": \"<PEM>\"}")
        }
        if let extra = members.keys.sorted().first(where: { !["nonce", "golden_measurement", "public_key", "tls_fingerprint"].contains($0) }) {
            return bad("request body: unknown member \"\(extra)\"; expected nonce, golden_measurement, public_key, tls_fingerprint")
        }
        var nonce: [UInt8]
        if let member = members["nonce"] {
            guard let text = member.stringValue, (16...128).contains(text.count), let bytes = decodeHex(text) else {
                return bad("nonce: expected 8 to 64 bytes in hex (16 to 128 hex digits)")
            }
            nonce = bytes
        } else {
            var rng = SystemRandomNumberGenerator()
            nonce = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        }
        guard let goldenValue = members["golden_measurement"] else {
            return bad("golden_measurement is missing: the golden measurement (GET /golden-measurement, golden predict) or a signed document {golden_measurement, signature}")
        }
        var options = AttestationVerifier.Options()
        options.nonce = nonce
        options.goldenSource = "golden_measurement"
        options.publicKeySource = "public_key"
        options.publicKeyHint = "send \"public_key\" (PEM)"
        options.collateralsSource = "collaterals"
        let golden: GoldenReference
        do {
            golden = try GoldenReference.parse(goldenValue, source: "golden_measurement")
            if let member = members["public_key"] {
                guard let pem = member.stringValue else { return bad("public_key: expected the publisher's PEM public key as a string") }
                options.publicKey = try DocumentVerifyingKey(pem: Array(pem.utf8), source: "public_key")
            }
            if let member = members["tls_fingerprint"] {
                guard let text = member.stringValue, let bytes = parseFingerprint(text) else {
                    return bad("tls_fingerprint: expected sha256:<64 hex digits>")
                }
                options.tlsFingerprint = bytes
            }
            if golden.signed != nil && options.publicKey == nil {
                return bad("golden_measurement is signed: send \"public_key\" (the publisher's PEM public key) to check its signature")
            }
        } catch let error as CVMError {
            return bad(error.message)
        } catch {
            return bad("\(error)")
        }
        do {
            let collateralsBytes = try makeCollaterals(nonce: nonce)
            let collaterals = try Collaterals.parse(collateralsBytes, source: "collaterals")
            let report = try AttestationVerifier.verify(collaterals, against: golden, options: options)
            guard case .object(var answer) = report.json else { return .json(500, jsonObject(["error": "report is not an object"])) }
            answer["collaterals"] = collaterals.document
            log("offchain-verify for nonce \(hexString(nonce)): \(report.passed ? "pass" : "fail")")
            return HTTPResponse(status: 200, body: CanonicalJSON.prettyBytes(.object(answer)))
        } catch let error as CVMError {
            return .json(500, jsonObject(["error": error.message]))
        } catch {
            return .json(500, jsonObject(["error": "\(error)"]))
        }
    }
}
