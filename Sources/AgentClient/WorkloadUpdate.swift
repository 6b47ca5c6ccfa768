import CVMCrypto
import CVMSupport
import Foundation
import Transport
import Workload
import WorkloadArchive

/// A workload folder that passed the workload check, packed for `POST /update-workload`, and
/// the host's measurement of it (the code of `workload measure`, which the agent runs too).
public struct PackedWorkload: Sendable {
    public let path: String
    /// The check's warnings (an error refuses the folder: `CheckFailed`).
    public let warnings: [WorkloadDiagnostic]
    /// The tar.gz; the same folder always gives the same bytes.
    public let archive: [UInt8]
    public let measurement: WorkloadMeasurement

    public var archiveSHA256: String { hexString(SHA256.hash(archive)) }

    /// The folder fails the workload check; nothing was packed or sent.
    public struct CheckFailed: Error, Sendable {
        public let path: String
        /// Every finding, errors and warnings, for the caller to list.
        public let diagnostics: [WorkloadDiagnostic]

        public var error: CVMError {
            let n = diagnostics.filter { $0.severity == .error }.count
            return .invalid("\(path): \(n) error\(n == 1 ? "" : "s") in the workload check (listed above; `cvm-cli workload check \(path)` shows them too); nothing was sent to the agent")
        }
    }

    /// Checks, measures and packs the folder at `path`.
    public static func make(path: String) throws -> PackedWorkload {
        let folder = try WorkloadFolder(path: path)
        let diagnostics = WorkloadCheck.run(folder: folder)
        guard !diagnostics.contains(where: { $0.severity == .error }) else {
            throw CheckFailed(path: path, diagnostics: diagnostics)
        }
        // The agent's limits, checked here so an oversized update is refused before it is sent.
        let unpacked = folder.entries.reduce(1024) { total, entry in
            if case .file(let size) = entry.kind { return total + 1024 + Int((size + 511) / 512 * 512) }
            return total + 1024
        }
        guard unpacked <= WorkloadArchive.maxUnpackedBytes else {
            throw CVMError.invalid("\(path): the workload is \(formatBytes(UInt64(unpacked))) as a tar; the agent accepts at most \(formatBytes(UInt64(WorkloadArchive.maxUnpackedBytes))) (image archives that large belong on the disk: `cvm-cli update-disk`)")
        }
        let measurement = try WorkloadMeasurement.measure(folder)
        let archive = try WorkloadArchive.pack(folder)
        guard archive.count <= WorkloadArchive.maxCompressedBytes else {
            throw CVMError.invalid("\(path): the packed workload is \(formatBytes(UInt64(archive.count))); the agent accepts at most \(formatBytes(UInt64(WorkloadArchive.maxCompressedBytes))) compressed (image archives that large belong on the disk: `cvm-cli update-disk`)")
        }
        return PackedWorkload(path: path, warnings: diagnostics, archive: archive, measurement: measurement)
    }
}

extension AgentClient {
    /// The token for `Authorization: Bearer`, and where it came from (for messages: the token
    /// itself never appears in any output or error).
    public struct APIToken: Sendable {
        public let value: String
        public let source: String
    }

    /// The token given as an argument, else the one `api-token` stored for this target, else
    /// `CVM_API_TOKEN`.
    public func resolveAPIToken(argument: String?,
                                environment: [String: String] = ProcessInfo.processInfo.environment) throws -> APIToken {
        let token: APIToken
        if let argument {
            token = APIToken(value: argument, source: "the command line")
        } else if FileManager.default.fileExists(atPath: apiTokenPath) {
            let file = try FileDescriptor.openForReading(apiTokenPath)
            defer { file.close() }
            let size = try file.size()
            guard size <= 4096 else { throw CVMError.invalid("\(apiTokenPath): \(size) bytes is not an API token file") }
            let text = String(decoding: try file.read(count: Int(size), at: 0), as: UTF8.self)
            token = APIToken(value: text.trimmingCharacters(in: .whitespacesAndNewlines), source: apiTokenPath)
        } else if let value = environment["CVM_API_TOKEN"] {
            token = APIToken(value: value.trimmingCharacters(in: .whitespacesAndNewlines), source: "CVM_API_TOKEN")
        } else {
            throw CVMError.usage("no API token for \(target.vmName ?? target.hostPort): none given after the address, none stored in \(apiTokenPath) (`cvm-cli api-token \(target.vmName ?? target.hostPort)` retrieves and stores it), and CVM_API_TOKEN is not set")
        }
        // RFC 6750 b64token; anything else could not travel in the header (and is not echoed).
        let allowed = Set("-._~+/=")
        guard !token.value.isEmpty, token.value.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || allowed.contains($0)) }) else {
            throw CVMError.usage("the API token from \(token.source) is empty or has characters a Bearer token cannot have (letters, digits and -._~+/= only)")
        }
        return token
    }

    /// What an update did, read back from the agent after it reported the new workload.
    public struct WorkloadUpdateOutcome: Sendable {
        /// PCR 23 in `/golden-measurement` before the upload: what the new events extend.
        public let pcr23Before: String
        /// `pcr23Before` extended by the host's measurement of the folder.
        public let predictedPCR23: String
        /// PCR 23 in `/golden-measurement` once it reports the new workload.
        public let pcr23: String
        /// The agent's `workload_pcr23_base` then (PCR 23 before the new events).
        public let reportedBase: String?
        /// `pcr23` in the answer to the POST.
        public let answerPCR23: String?
        /// The new golden measurement, as served.
        public let goldenMeasurement: [UInt8]
        public let certificateSHA256: String

        public var matches: Bool { pcr23 == predictedPCR23 }

        /// Why `pcr23` is not the prediction, when it is not.
        public let mismatchReason: String?
    }

    /// Uploads `packed` with `token` over the pinned TLS connection and waits until the
    /// agent's golden measurement reports the new workload (at most `timeout` seconds).
    /// PCR 23 cannot be reset: the agent extends the new events on top of its current value,
    /// so the prediction starts from the PCR 23 read just before the upload. Sends nothing if
    /// the agent's certificate is not the pinned one.
    /// `progress` sees the archive's bytes as they go out.
    public func updateWorkload(_ packed: PackedWorkload, token: APIToken, timeout: Double = 300,
                               pollInterval: Double = 1,
                               progress: TransferProgressHandler? = nil) throws -> WorkloadUpdateOutcome {
        let start = Date()
        let goldenURL = target.url("/golden-measurement")
        let updateURL = target.url("/update-workload")

        // Every request stays within `timeout` (at least a few seconds each, at most the client's own).
        func remaining() -> Double { min(client.configuration.deadline, max(5, timeout - Date().timeIntervalSince(start))) }

        let before = try fetchGoldenMeasurement(deadline: remaining())
        let beforeDoc = try CanonicalJSON.parse(before.document, source: goldenURL)
        guard let pcr23Before = Self.pcr23(beforeDoc) else {
            throw CVMError.invalid("\(goldenURL): the answer has no pcrs.sha256.\"23\" of 64 hex digits; is this a cvm-agent?")
        }
        let updatesBefore = Self.integer(beforeDoc["workload_updates"])
        let predicted = packed.measurement.pcr23(extending: pcr23Before)!

        var request = HTTPRequest(method: "POST", url: updateURL, body: BytesBody(packed.archive))
        request.headers.set("Authorization", "Bearer " + token.value)
        request.headers.set("Content-Type", "application/gzip")
        request.secretValues = [token.value]
        request.deadline = max(5, timeout - Date().timeIntervalSince(start))
        // Every status is an answer to explain, and none is retried: a repeated update would
        // extend PCR 23 twice.
        let answer = try exchange(request, accepted: Set(100..<600), retry: false, progress: progress)
        guard answer.status == 200 else {
            throw refusal(status: answer.status, body: answer.body, url: updateURL, token: token, archiveBytes: packed.archive.count)
        }
        let answerPCR23 = (try? CanonicalJSON.parse(answer.body))?["pcr23"]?.stringValue

        let expectedDigests = packed.measurement.events.map(\.digest)
        while true {
            let now = try fetchGoldenMeasurement(deadline: remaining())
            let doc = try CanonicalJSON.parse(now.document, source: goldenURL)
            let digests: [String]? = {
                guard case .array(let events)? = doc["workload_events"] else { return nil }
                return events.map { $0["digest"]?.stringValue ?? "" }
            }()
            let updates = Self.integer(doc["workload_updates"])
            // The new events, and (when the agent counts updates) a count past the one before:
            // re-sending an unchanged folder lists the same events.
            let reportsNew = digests == expectedDigests && (updatesBefore == nil || (updates ?? 0) > updatesBefore!)
            if reportsNew, let pcr23 = Self.pcr23(doc) {
                let base = doc["workload_pcr23_base"]?.stringValue
                var reason: String?
                if pcr23 != predicted {
                    if let base, base != pcr23Before {
                        reason = "the agent extended the new events on top of PCR 23 = \(base), not the \(pcr23Before) it reported before the upload: something else extended PCR 23 in between (another update?)"
                    } else if let base, packed.measurement.pcr23(extending: base) != pcr23 {
                        reason = "PCR 23 is not the agent's own workload_events replayed from its workload_pcr23_base: something besides the workload measurement extended PCR 23"
                    } else {
                        reason = "the agent's PCR 23 is not the host's prediction from the same events"
                    }
                }
                return WorkloadUpdateOutcome(pcr23Before: pcr23Before, predictedPCR23: predicted, pcr23: pcr23,
                                             reportedBase: base, answerPCR23: answerPCR23, goldenMeasurement: now.document,
                                             certificateSHA256: now.certificateSHA256, mismatchReason: reason)
            }
            let waited = Date().timeIntervalSince(start)
            guard waited + pollInterval < timeout else {
                throw CVMError.io("\(goldenURL): still not reporting the new workload (\(expectedDigests.count) events, PCR 23 predicted \(predicted)) \(Int(waited)) s after the upload was accepted; it reports \(digests?.count ?? 0) events and PCR 23 = \(Self.pcr23(doc) ?? "none")")
            }
            Thread.sleep(forTimeInterval: pollInterval)
        }
    }

    /// One line for an agent that refused the update; the token is never quoted.
    func refusal(status: Int, body: [UInt8], url: String, token: APIToken, archiveBytes: Int) -> CVMError {
        let json = try? CanonicalJSON.parse(body)
        var said = json?["error"]?.stringValue ?? String(decoding: body.prefix(300), as: UTF8.self)
        if case .array(let diagnostics)? = json?["diagnostics"] {
            said += ": " + diagnostics.compactMap(\.stringValue).joined(separator: "; ")
        }
        said = said.replacingOccurrences(of: token.value, with: "[redacted]")
            .split(whereSeparator: \.isNewline).joined(separator: " ")
        let name = target.vmName ?? target.hostPort
        switch status {
        case 401:
            return .invalid("POST \(url): HTTP 401: the agent does not accept the API token from \(token.source) (\(said)); `cvm-cli api-token \(name)` retrieves the right one, once")
        case 403:
            return .invalid("POST \(url): HTTP 403: \(said); this VM's agent policy takes no workload updates (a new one applies from the next boot)")
        case 413:
            return .invalid("POST \(url): HTTP 413: the agent refuses the \(formatBytes(UInt64(archiveBytes))) archive as too large (\(said))")
        case 415:
            return .invalid("POST \(url): HTTP 415: the agent refuses the body's media type (\(said)); it expects Content-Type: application/gzip")
        case 400:
            return .invalid("POST \(url): HTTP 400: the agent refused the workload: \(said)")
        case 409:
            return .io("POST \(url): HTTP 409: \(said); try again when it has finished")
        default:
            return .io("POST \(url): HTTP \(status): \(said)")
        }
    }

    static func pcr23(_ doc: JSONValue) -> String? {
        guard let value = doc["pcrs"]?["sha256"]?["23"]?.stringValue?.lowercased(),
              value.count == 64, value.allSatisfy(\.isHexDigit) else { return nil }
        return value
    }

    static func integer(_ value: JSONValue?) -> Int? {
        if case .number(let n)? = value, n >= 0, n == n.rounded() { return Int(n) }
        return nil
    }
}
