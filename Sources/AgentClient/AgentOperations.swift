import CVMSupport
import Foundation
import Transport
#if canImport(Glibc)
import Glibc
#endif

extension AgentClient {
    /// `GET /golden-measurement`: the document as served, after checking that its
    /// `tls_fingerprint` is the certificate this connection saw (the agent binds that
    /// fingerprint into its quote, so a mismatch means a relay or a stale document).
    public func fetchGoldenMeasurement(deadline: Double? = nil) throws -> (document: [UInt8], certificateSHA256: String) {
        let source = target.url("/golden-measurement")
        let answer = try get("/golden-measurement", deadline: deadline, validate: { answer in
            let json = try CanonicalJSON.parse(answer.body, source: source)
            guard case .object = json else { throw CVMError.invalid("\(source): expected a JSON object") }
            guard let served = json["tls_fingerprint"]?.stringValue else {
                throw CVMError.invalid("\(source): the answer has no tls_fingerprint; is this a cvm-agent?")
            }
            let servedHex = try Self.parsePin(served, source: "\(source): tls_fingerprint")
            guard servedHex == answer.certificateSHA256 else {
                if trust == .insecure {
                    // The user chose to verify nothing; still say what this looks like.
                    note("WARNING: the document's tls_fingerprint sha256:\(servedHex) is not the certificate seen (sha256:\(answer.certificateSHA256)): something between you and the agent terminates TLS")
                    return
                }
                throw CVMError.invalid("\(source): the document's tls_fingerprint sha256:\(servedHex) is not the certificate this connection presented (sha256:\(answer.certificateSHA256)); refusing it (a relay or a stale document)")
            }
        })
        return (answer.body, answer.certificateSHA256)
    }

    /// One line on the workload from a golden measurement: its status, the containers' services
    /// when it runs, else the agent's reason. Nil for documents without a workload status.
    public static func workloadSummary(_ document: [UInt8]) -> String? {
        guard let json = try? CanonicalJSON.parse(document, source: "golden measurement"),
              let status = json["workload_status"]?.stringValue else { return nil }
        var line = "workload: \(status)"
        if case .array(let containers)? = json["containers"], !containers.isEmpty {
            line += " (" + containers.map { c in
                "\(c["service"]?.stringValue ?? "?") \(c["state"]?.stringValue ?? "?")"
            }.joined(separator: ", ") + ")"
        }
        if let detail = json["workload_detail"]?.stringValue { line += " — \(detail)" }
        return line
    }

    /// Where this target's API token is kept.
    public var apiTokenPath: String { target.stateDirectory + "/api-token" }

    public enum APITokenOutcome: Sendable {
        /// Retrieved now and stored at `path` (mode 0600).
        case stored(path: String, token: String)
        /// The agent already issued it; a copy is stored locally at `path`.
        case alreadyStored(path: String)
    }

    /// `GET /api-token` (answered once): stores the token with mode 0600. A 410 is success only
    /// when a token is already stored locally; otherwise it is an error quoting the agent.
    public func retrieveAPIToken() throws -> APITokenOutcome {
        let url = target.url("/api-token")
        let answer = try get("/api-token", accepted: [200, 410], retry: false)
        if answer.status == 410 {
            if FileManager.default.fileExists(atPath: apiTokenPath) { return .alreadyStored(path: apiTokenPath) }
            let said = (try? CanonicalJSON.parse(answer.body))?["error"]?.stringValue
                ?? String(decoding: answer.body.prefix(200), as: UTF8.self)
            throw CVMError.io("\(url): HTTP 410: \(said); no copy is stored in \(apiTokenPath) (whoever called api-token first has it)")
        }
        guard let json = try? CanonicalJSON.parse(answer.body), let token = json["token"]?.stringValue,
              !token.isEmpty, token.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw CVMError.invalid("\(url): the answer is not {\"token\": \"…\"}")
        }
        try Self.writeSecret(Array((token + "\n").utf8), to: apiTokenPath)
        return .stored(path: apiTokenPath, token: token)
    }

    /// Writes a secret atomically with mode 0600 (in a folder only the owner can enter).
    static func writeSecret(_ bytes: [UInt8], to path: String) throws {
        let dir = AtomicOutputFile.directory(of: path)
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw CVMError.io("\(dir): cannot create the folder: \(error.localizedDescription)")
        }
        let out = try AtomicOutputFile(path: path, overwrite: true)
        do {
            guard fchmod(out.descriptor.fd, 0o600) == 0 else {
                throw CVMError.io("\(path): cannot restrict the file to its owner: \(errnoDescription())")
            }
            try out.descriptor.write(bytes, at: 0)
            try out.commit()
        } catch {
            out.discard()
            throw error
        }
    }
}

extension AgentClient {
    /// A fresh random nonce for `collaterals` (32 bytes, hex).
    public static func randomNonce() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

    /// Checks a user's nonce: hex, 8–64 bytes (the agent's limits).
    public static func parseNonce(_ text: String) throws -> String {
        let hex = text.lowercased()
        guard hex.count % 2 == 0, (16...128).contains(hex.count), hex.allSatisfy({ $0.isHexDigit }) else {
            throw CVMError.usage("--nonce \(text): expected 8 to 64 bytes in hex (16–128 hex digits)")
        }
        return hex
    }

    /// `GET /collaterals/{nonce}` on the agent's plain-HTTP port (7999: reached through a
    /// forwarded port or the VM's firewall). No TLS to pin here, so the document's
    /// `tls_fingerprint` must be the certificate recorded for this VM, when one is: the quote
    /// binds it, and it ties these collaterals to the agent `golden fetch` talked to.
    public func fetchCollaterals(nonce: String) throws -> [UInt8] {
        let url = target.url("/collaterals/\(nonce)", https: false)
        var request = HTTPRequest(method: "GET", url: url)
        request.acceptedStatuses = [200]
        let response = try client.send(request)
        let json = try CanonicalJSON.parse(response.body, source: url)
        for member in ["quote", "signature", "ak_public", "pcrs"] where json[member] == nil {
            throw CVMError.invalid("\(url): the answer has no \(member); is this a cvm-agent with collaterals?")
        }
        let expected: String?
        switch trust {
        case .pin(let pin): expected = pin
        case .insecure: expected = nil
        case .recordedOrFirstUse: expected = try recordedPin()
        }
        if let expected {
            guard let served = json["tls_fingerprint"]?.stringValue,
                  try Self.parsePin(served, source: "\(url): tls_fingerprint") == expected else {
                throw CVMError.invalid("\(url): the collaterals' tls_fingerprint (\(json["tls_fingerprint"]?.stringValue ?? "none")) is not the agent certificate sha256:\(expected) pinned in \(pinRecordDescription)")
            }
        }
        return response.body
    }
}
