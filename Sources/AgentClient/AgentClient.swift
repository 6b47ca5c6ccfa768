import CVMSupport
import Foundation
import Logging
import Transport

/// Talks to the in-guest agent over TLS that is always verified: by `--pin`, by the
/// fingerprint recorded on first use, or — only when the user says `--insecure` — not at all,
/// loudly. Knows the agent's endpoints (docs/agent-api.md), not any cloud.
public struct AgentClient {
    public enum TrustMode: Sendable, Equatable {
        /// The recorded pin, or trust on first use when none is recorded.
        case recordedOrFirstUse
        /// `--pin sha256:<hex>` (nothing recorded).
        case pin(String)
        /// `--insecure`: nothing checked, nothing recorded.
        case insecure
    }

    public let target: AgentTarget
    public let trust: TrustMode
    public let client: HTTPClient
    /// Human messages (TOFU recorded, insecure warnings) go here; stderr in the CLI.
    public let note: @Sendable (String) -> Void

    public init(target: AgentTarget, trust: TrustMode, logger: Logger = Logger(label: "cvm.agent"),
                note: @escaping @Sendable (String) -> Void) {
        self.target = target
        self.trust = trust
        var configuration = TransportConfiguration()
        configuration.connectTimeout = 10
        configuration.deadline = 60
        configuration.userAgent = "cvm-cli"
        self.client = HTTPClient(configuration: configuration, logger: logger)
        self.note = note
    }

    /// Parses `sha256:<hex>` (or bare hex) into 64 lowercase hex digits.
    public static func parsePin(_ text: String, source: String) throws -> String {
        var hex = text.lowercased()
        if hex.hasPrefix("sha256:") { hex.removeFirst(7) }
        hex = hex.replacingOccurrences(of: ":", with: "")
        guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit }) else {
            throw CVMError.usage("\(source): expected sha256:<64 hex digits> (the SHA-256 of the agent's leaf certificate DER, its tls_fingerprint)")
        }
        return hex
    }

    // MARK: the pin record

    /// The fingerprint recorded for this target, if any.
    public func recordedPin() throws -> String? {
        switch target.pinRecord {
        case .artifact(let path):
            guard let text = try ArtifactJSON.read(path)["agent_tls_fingerprint"]?.stringValue else { return nil }
            return try Self.parsePin(text, source: "\(path): agent_tls_fingerprint")
        case .knownAgents(let path, let key):
            guard FileManager.default.fileExists(atPath: path) else { return nil }
            guard let entry = try ArtifactJSON.read(path)[key] else { return nil }
            guard let text = entry["tls_fingerprint"]?.stringValue else {
                throw CVMError.invalid("\(path): \"\(key)\" has no tls_fingerprint string; fix or remove that entry")
            }
            return try Self.parsePin(text, source: "\(path): \(key).tls_fingerprint")
        }
    }

    /// Where the pin lives, for messages.
    public var pinRecordDescription: String {
        switch target.pinRecord {
        case .artifact(let path): return "\(path) (member \"agent_tls_fingerprint\")"
        case .knownAgents(let path, let key): return "\(path) (entry \"\(key)\")"
        }
    }

    func record(pin: String) throws {
        let value = JSONValue.string("sha256:" + pin)
        switch target.pinRecord {
        case .artifact(let path):
            guard case .object(var members) = try ArtifactJSON.read(path) else { return }
            members["agent_tls_fingerprint"] = value
            try ArtifactJSON.write(.object(members), to: path)
        case .knownAgents(let path, let key):
            var members: [String: JSONValue] = [:]
            if FileManager.default.fileExists(atPath: path), case .object(let m) = try ArtifactJSON.read(path) { members = m }
            members[key] = .object(["tls_fingerprint": value, "recorded": .string(Self.now())])
            try ArtifactJSON.write(.object(members), to: path)
        }
    }

    static func now() -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: Date())
    }

    // MARK: requests

    /// The answer to one GET and the certificate fingerprint the server presented.
    public struct Answer: Sendable {
        public let status: Int
        public let body: [UInt8]
        public let certificateSHA256: String
        /// True when this request recorded the pin (first use).
        public let recordedNow: Bool
    }

    /// GETs `path` over HTTPS with the certificate checked per `trust`; `accepted` statuses are
    /// returned, others thrown. `retry: false` for answers that exist once (the API token).
    /// `validate` runs before a first-use pin is recorded: a refused answer records nothing.
    /// `deadline`: seconds for all attempts (default: the client's).
    public func get(_ path: String, accepted: Set<Int> = [200], retry: Bool = true,
                    secret: Bool = false, deadline: Double? = nil,
                    validate: (Answer) throws -> Void = { _ in }) throws -> Answer {
        var request = HTTPRequest(method: "GET", url: target.url(path))
        request.deadline = deadline
        return try exchange(request, accepted: accepted, retry: retry, validate: validate)
    }

    /// Sends `request` (its URL on this target) over HTTPS with the certificate checked per
    /// `trust` during the handshake, so an impostor receives not one byte of it (a token, an
    /// archive). Pin mismatches become one line naming both fingerprints and the record.
    public func exchange(_ template: HTTPRequest, accepted: Set<Int> = [200], retry: Bool = true,
                         progress: TransferProgressHandler? = nil,
                         validate: (Answer) throws -> Void = { _ in }) throws -> Answer {
        let check: ServerCertificateCheck
        var recorded: String?
        switch trust {
        case .pin(let pin): check = .pinnedLeafSHA256(pin)
        case .insecure:
            check = .insecure
            note("WARNING: --insecure: the agent's TLS certificate at \(target.hostPort) is NOT verified; anyone on the path can impersonate it")
        case .recordedOrFirstUse:
            recorded = try recordedPin()
            check = recorded.map { .pinnedLeafSHA256($0) } ?? .trustOnFirstUse
        }
        var request = template
        request.serverCertificate = check
        request.acceptedStatuses = accepted
        if !retry {
            // An answer, whatever it is, is final: the token exists once, an update extends PCR 23.
            request.retryClassifier = RetryClassifier(custom: { _, _, _ in .fail })
            request.deadline = request.deadline ?? 20
        }
        let response: HTTPResponse
        do {
            response = try client.send(request, progress: progress)
        } catch let mismatch as TLSPinMismatch {
            switch trust {
            case .pin:
                throw CVMError.invalid("\(target.hostPort): the agent presents TLS certificate sha256:\(mismatch.presentedSHA256), not the --pin sha256:\(mismatch.pinnedSHA256); refused before sending the request")
            default:
                throw CVMError.invalid("\(target.hostPort): the agent's TLS certificate changed: it presents sha256:\(mismatch.presentedSHA256) but sha256:\(mismatch.pinnedSHA256) was recorded on first use in \(pinRecordDescription); refused before sending the request. If the VM was redeployed or its agent restarted, check the new fingerprint on its console and edit or remove that record (or pass --pin)")
            }
        }
        guard let seen = response.serverCertificateSHA256 else {
            throw CVMError.io("\(template.url): the TLS certificate was not seen (the connection was not TLS?)")
        }
        let answer = Answer(status: response.status, body: response.body, certificateSHA256: seen,
                            recordedNow: check == .trustOnFirstUse)
        try validate(answer)
        if check == .trustOnFirstUse {
            try record(pin: seen)
            note("\(target.hostPort): trusting the agent's TLS certificate sha256:\(seen) on first use; recorded in \(pinRecordDescription)")
        }
        return answer
    }
}

