#if canImport(Glibc)
import Glibc
#endif
import CVMCrypto
import CVMSupport
import Foundation
import TPM2
import Workload
import WorkloadRuntime

/// The agent's state: the TPM, the workload events it extended, its servers.
final class Agent: @unchecked Sendable {
    let options: AgentOptions
    let tpm: TPMDevice
    let lock = NSLock()
    /// Serialises TPM use: the device takes one command at a time, and a quote's PCR values
    /// must not change between the quote and their read.
    let tpmLock = NSLock()
    var workloadEvents: [WorkloadMeasurement.Event] = []
    /// PCR 23 before `workloadEvents` were extended: zeros at boot, the previous value after an update.
    var workloadPCR23Base = String(repeating: "0", count: 64)
    var workloadUpdates = 0
    let updateLock = NSLock()
    let policy: AgentPolicy
    let runner: WorkloadRunner
    var workloadError: String?
    var tlsFingerprint: String?
    /// The firewall report (`firewall` in the golden measurement), set once at start.
    var firewall: [String: Any] = [:]
    /// SHA-256 of the API token once issued (the token itself is returned once and not kept).
    private var apiTokenDigest: [UInt8]?

    init(options: AgentOptions) throws {
        self.options = options
        tpm = try TPMDevice.open(candidates: options.tpmDevices)
        log("TPM at \(tpm.path)")
        policy = AgentPolicy.load(workload: options.workload)
        log("policy from \(policy.source): TLS \(policy.tls), workload update endpoint \(policy.workloadUpdateEndpoint), update auth \(policy.workloadUpdateAuth)")
        firewall = AgentFirewall.apply(policy: policy, options: options)
        runner = WorkloadRunner(policy: policy, detection: ContainerEngine.detect(policy: policy.containerEngine))
        if let engine = runner.engine { log("container engine: \(engine.description)") }
        if case .notRunning(let why) = runner.state, runner.compose == nil { log(why) }
        for warning in runner.warnings { log("workload: \(warning)") }
    }

    /// Runs the measured workload (in the background) unless measuring it failed.
    func startWorkload() {
        guard lock.withLock({ workloadError == nil }) else { return }
        runner.start(folder: options.workload)
    }

    /// Measures the workload folder and extends each event into PCR 23, in order.
    func measureWorkload() throws {
        let measurement: WorkloadMeasurement
        do {
            measurement = try WorkloadMeasurement.measure(try WorkloadFolder(path: options.workload))
        } catch let error as CVMError {
            // No workload is a state to report, not a reason to stop serving the PCRs.
            lock.withLock { workloadError = error.message }
            log("workload not measured: \(error.message)")
            return
        }
        for event in measurement.events {
            try tpmLock.withLock { try TPM2.extend(tpm, pcr: 23, sha256: decodeHex(event.digest) ?? []) }
            lock.withLock { workloadEvents.append(event) }
            log("PCR 23 extended: \(event.digest) \(event.name)")
        }
        log("workload measured: \(measurement.events.count) events, PCR 23 expected \(measurement.pcr23)")
    }

    func serve() throws {
        let http = try HTTPServer(port: options.httpPort) { [self] in self.handle($0) }
        http.start()
        log("serving HTTP on port \(options.httpPort)")
        guard policy.tls else {
            log("HTTPS disabled by the policy (https_server.enable_tls = false)")
            return
        }
        let identity = try TLSIdentity()
        lock.withLock { tlsFingerprint = identity.fingerprint }
        let https = try HTTPServer(port: options.httpsPort, wrap: { identity.accept($0) }) { [self] in self.handle($0) }
        https.start()
        log("serving HTTPS on port \(options.httpsPort); TLS certificate fingerprint \(identity.fingerprint)")
    }

    func handle(_ request: HTTPRequest) -> HTTPResponse {
        let path = request.path.split(separator: "?").first.map(String.init) ?? request.path
        switch (request.method, path) {
        case ("GET", "/golden-measurement"):
            do { return HTTPResponse(status: 200, body: try goldenMeasurement()) } catch {
                return .json(500, jsonObject(["error": "\(error)"]))
            }
        case ("GET", "/api-token"):
            return issueAPIToken()
        case ("POST", "/update-workload"):
            return updateWorkload(request)
        case (_, "/update-workload"):
            return .json(405, jsonObject(["error": "use POST"]))
        case ("POST", "/offchain-verify"):
            return offchainVerify(request)
        case (_, "/offchain-verify"):
            return .json(405, jsonObject(["error": "use POST"]))
        case ("GET", _) where path.hasPrefix("/collaterals/"):
            return collaterals(nonceHex: String(path.dropFirst("/collaterals/".count)))
        case (_, "/golden-measurement"), (_, "/api-token"):
            return .json(405, jsonObject(["error": "use GET"]))
        default:
            return .json(404, jsonObject(["error": "no such endpoint: \(path)"]))
        }
    }

    /// `GET /api-token`: a random bearer token, exactly once; afterwards 410 Gone forever.
    func issueAPIToken() -> HTTPResponse {
        var rng = SystemRandomNumberGenerator()
        let token = hexString((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })
        let issued: Bool = lock.withLock {
            guard apiTokenDigest == nil else { return false }
            apiTokenDigest = SHA256.hash(token)
            return true
        }
        guard issued else { return .json(410, jsonObject(["error": "the API token was already issued"])) }
        log("API token issued")
        return .json(200, jsonObject(["token": token]))
    }

    /// Whether `Authorization: Bearer <token>` carries the issued token (compared by digest,
    /// so the comparison time does not depend on how many characters match).
    func authorized(_ request: HTTPRequest) -> Bool {
        guard let header = request.headers["authorization"], header.hasPrefix("Bearer ") else { return false }
        let digest = SHA256.hash(String(header.dropFirst(7)))
        guard let issued = lock.withLock({ apiTokenDigest }), issued.count == digest.count else { return false }
        // Constant time over the digest bytes as well.
        return zip(issued, digest).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// `GET /golden-measurement` (docs/agent-api.md).
    func goldenMeasurement() throws -> [UInt8] {
        let pcrs = try tpmLock.withLock { try TPM2.readSHA256(tpm) }
        var bank: [String: String] = [:]
        for (index, value) in pcrs { bank[String(index)] = hexString(value) }
        let eventLog = readWholeFile(options.eventLog) ?? []
        let (events, error, fingerprint) = lock.withLock { (workloadEvents, workloadError, tlsFingerprint) }
        var object: [String: Any] = [
            "version": 1,
            "tee": Self.teeKind(),
            "policy": policy.json,
            "firewall": firewall,
            "pcrs": ["sha256": bank],
            "event_log": Base64.encode(eventLog),
            "workload_events": events.map { ["name": $0.name, "content_sha256": $0.contentSHA256, "digest": $0.digest] },
            "agent_version": AgentVersion.string,
        ]
        lock.withLock {
            object["workload_pcr23_base"] = workloadPCR23Base
            object["workload_updates"] = workloadUpdates
        }
        object.merge(runner.report) { $1 }
        if let fingerprint { object["tls_fingerprint"] = fingerprint }
        if let error { object["workload_error"] = error }
        return Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
    }

    /// `GET /collaterals/{nonce}`: a TPM2 quote of all SHA-256 PCRs whose qualifying data is
    /// SHA-256(nonce || TLS fingerprint bytes), with the AK, the PCR values and the event logs.
    func collaterals(nonceHex: String) -> HTTPResponse {
        guard (16...128).contains(nonceHex.count), nonceHex.count % 2 == 0,
              nonceHex.allSatisfy({ $0.isHexDigit && $0.isASCII }) else {
            return .json(400, jsonObject(["error": "the nonce must be 8 to 64 bytes in hex (16 to 128 hex digits)"]))
        }
        do {
            return HTTPResponse(status: 200, body: try makeCollaterals(nonce: decodeHex(nonceHex) ?? []))
        } catch let error as CVMError {
            return .json(500, jsonObject(["error": error.message]))
        } catch {
            return .json(500, jsonObject(["error": "\(error)"]))
        }
    }

    /// The collaterals document for `nonce` (also what POST /offchain-verify verifies).
    func makeCollaterals(nonce: [UInt8]) throws -> [UInt8] {
        let fingerprint = lock.withLock { tlsFingerprint }
        let fingerprintBytes = fingerprint.map { decodeHex(String($0.dropFirst("sha256:".count))) ?? [] } ?? []
        // The workload events are read with the TPM held: they are the ones behind the quoted PCR 23.
        let (attestation, events, error, base) = try tpmLock.withLock {
            let attestation = try PCRAttestation.make(tpm, nonce: nonce, tlsFingerprint: fingerprintBytes)
            let (events, error, base) = lock.withLock { (workloadEvents, workloadError, workloadPCR23Base) }
            return (attestation, events, error, base)
        }
        var bank: [String: String] = [:]
        for (index, value) in attestation.pcrs { bank[String(index)] = hexString(value) }
        var object: [String: Any] = [
            "version": 1,
            "nonce": hexString(nonce),
            "qualifying_data": hexString(attestation.qualifyingData),
            "quote": Base64.encode(attestation.quote.attest),
            "signature": Base64.encode(attestation.quote.signature),
            "ak_public": attestation.akPublicPEM,
            "pcrs": ["sha256": bank],
            "event_log": Base64.encode(readWholeFile(options.eventLog) ?? []),
            "workload_events": events.map { ["name": $0.name, "content_sha256": $0.contentSHA256, "digest": $0.digest] },
            "agent_version": AgentVersion.string,
        ]
        object["workload_pcr23_base"] = base
        if let fingerprint { object["tls_fingerprint"] = fingerprint }
        if let error { object["workload_error"] = error }
        log("quote made for nonce \(hexString(nonce))")
        return Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
    }

    /// Which confidential-computing guest device the kernel offers.
    static func teeKind() -> String {
        if FileManager.default.fileExists(atPath: "/dev/sev-guest") { return "snp" }
        if FileManager.default.fileExists(atPath: "/dev/tdx_guest") { return "tdx" }
        return "none"
    }
}

func jsonObject(_ object: [String: String]) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
    return String(decoding: data, as: UTF8.self)
}

/// Reads a file to its end with read(2) in a loop: securityfs files report size 0 and return
/// the event log a page at a time, so a single sized read would cut it short.
func readWholeFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        out += buffer.prefix(n)
    }
    return out
}
