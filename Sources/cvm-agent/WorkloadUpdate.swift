#if canImport(Glibc)
import Glibc
#endif
import CVMCrypto
import CVMSupport
import Foundation
import Netfilter
import TPM2
import Workload
import WorkloadArchive
import WorkloadRuntime

/// `POST /update-workload` (docs/agent-api.md): a tar.gz of the new workload folder, checked
/// with the host's WorkloadCheck, swapped in by rename, measured and extended into PCR 23.
extension Agent {
    static let maxArchiveBytes = WorkloadArchive.maxCompressedBytes
    static let maxWorkloadBytes = WorkloadArchive.maxUnpackedBytes

    func updateWorkload(_ request: HTTPRequest) -> HTTPResponse {
        guard policy.workloadUpdateEndpoint else {
            return .json(403, jsonObject(["error": "the policy disables the workload update endpoint (https_server.enable_workload_update_endpoint)"]))
        }
        if policy.workloadUpdateAuth && !authorized(request) {
            return .json(401, jsonObject(["error": "missing or wrong Authorization: Bearer <token> (GET /api-token issues it once)"]))
        }
        let contentType = request.headers["content-type"]?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard contentType == "application/gzip" else {
            return .json(415, jsonObject(["error": "Content-Type must be application/gzip (a tar.gz of the workload folder's content)"]))
        }
        guard updateLock.try() else { return .json(409, jsonObject(["error": "another workload update is in progress"])) }
        defer { updateLock.unlock() }

        let target = options.workload
        let parent = (target as NSString).deletingLastPathComponent
        let staging = parent + "/.workload-new-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fm = FileManager.default
        defer { try? fm.removeItem(atPath: staging) }
        let measurement: WorkloadMeasurement
        do {
            let tar = try WorkloadArchive.gunzip(request.body, limit: Self.maxWorkloadBytes)
            try WorkloadArchive.write(try WorkloadArchive.entries(tar: tar), to: staging)
            let folder = try WorkloadFolder(path: staging)
            let errors = WorkloadCheck.run(folder: folder).filter { $0.severity == .error }
            guard errors.isEmpty else {
                let messages = errors.map { $0.description.replacingOccurrences(of: staging, with: "workload") }
                return .json(400, jsonText(["error": "the new workload fails the workload check", "diagnostics": messages]))
            }
            measurement = try WorkloadMeasurement.measure(folder)
        } catch let error as CVMError {
            return .json(400, jsonObject(["error": error.message]))
        } catch {
            return .json(400, jsonObject(["error": "\(error)"]))
        }
        // The running containers mount files of the old folder: stop them before it goes.
        runner.stop(folder: target)
        do {
            // Swap: the old folder aside, the new one in, the old one removed.
            let old = parent + "/.workload-old-\(getpid())"
            try? fm.removeItem(atPath: old)
            let hadOld = fm.fileExists(atPath: target)
            if hadOld { guard rename(target, old) == 0 else { throw CVMError.io("rename \(target): \(errnoDescription())") } }
            guard rename(staging, target) == 0 else {
                let reason = errnoDescription()
                if hadOld { _ = rename(old, target) }
                throw CVMError.io("rename into \(target): \(reason)")
            }
            sync()
            try? fm.removeItem(atPath: old)

            // PCR 23 cannot be reset: the new events extend the current value.
            // The events are recorded while the TPM is still held, so a quote never sees the
            // new PCR 23 with the old event list (collaterals read both under tpmLock).
            let (before, after): ([UInt8], [UInt8]) = try tpmLock.withLock {
                let before = try TPM2.readSHA256(tpm, pcrs: [23])[23] ?? []
                for event in measurement.events { try TPM2.extend(tpm, pcr: 23, sha256: decodeHex(event.digest) ?? []) }
                lock.withLock {
                    workloadEvents = measurement.events
                    workloadError = nil
                    workloadPCR23Base = hexString(before)
                    workloadUpdates += 1
                }
                return (before, try TPM2.readSHA256(tpm, pcrs: [23])[23] ?? [])
            }
            for event in measurement.events { log("PCR 23 extended: \(event.digest) \(event.name)") }
            log("workload updated: \(measurement.events.count) events, PCR 23 \(hexString(before)) → \(hexString(after))")
            runner.start(folder: target)
            return HTTPResponse(status: 200, body: Array(jsonText([
                "workload_status": runner.state.word,
                "pcr23": hexString(after),
                "previous_pcr23": hexString(before),
                "workload_events": measurement.events.map { ["name": $0.name, "content_sha256": $0.contentSHA256, "digest": $0.digest] },
            ]).utf8))
        } catch let error as CVMError {
            return .json(500, jsonObject(["error": error.message]))
        } catch {
            return .json(500, jsonObject(["error": "\(error)"]))
        }
    }
}

func jsonText(_ object: [String: Any]) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    return String(decoding: data, as: UTF8.self)
}

/// The parts of `config/cvm_agent/cvm_agent_policy.json` the agent honours, read once at start
/// (a policy changed by an update applies from the next boot).
struct AgentPolicy {
    var tls = true
    var workloadUpdateEndpoint = true
    var workloadUpdateAuth = true
    /// `cvm_config.firewall.allowed_ports`; nil when the policy has none (the agent then opens
    /// only its own ports).
    var allowedPorts: [AllowedPort]?
    /// `cvm_config.container_api.container_engine`: the only engine the workload may run with.
    var containerEngine: ContainerEngine.Kind?
    /// `cvm_config.container_api.container_owner`: the user the policy wants containers to run as.
    var containerOwner: String?
    /// `workload_config.image_signature_verification.enable`.
    var imageSignatureVerification = false
    /// Entries of allowed_ports the agent could not use, with the reason.
    var ignoredPorts: [String] = []
    var source = "defaults (no policy file)"

    static func load(workload: String) -> AgentPolicy {
        var p = AgentPolicy()
        let path = workload + "/config/cvm_agent/cvm_agent_policy.json"
        guard let data = FileManager.default.contents(atPath: path) else { return p }
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            p.source = "defaults (\(path) is not a JSON object)"
            return p
        }
        let https = (root["cvm_config"] as? [String: Any])?["https_server"] as? [String: Any] ?? [:]
        p.tls = https["enable_tls"] as? Bool ?? true
        p.workloadUpdateEndpoint = https["enable_workload_update_endpoint"] as? Bool ?? true
        p.workloadUpdateAuth = https["enable_workload_update_auth"] as? Bool ?? true
        let containerAPI = (root["cvm_config"] as? [String: Any])?["container_api"] as? [String: Any] ?? [:]
        p.containerEngine = (containerAPI["container_engine"] as? String).flatMap(ContainerEngine.Kind.init(rawValue:))
        p.containerOwner = containerAPI["container_owner"] as? String
        let signatures = ((root["workload_config"] as? [String: Any])?["image_signature_verification"] as? [String: Any]) ?? [:]
        p.imageSignatureVerification = signatures["enable"] as? Bool ?? false
        let firewall = (root["cvm_config"] as? [String: Any])?["firewall"] as? [String: Any]
        if let entries = firewall?["allowed_ports"] as? [Any] {
            var ports: [AllowedPort] = []
            for (i, entry) in entries.enumerated() {
                let e = entry as? [String: Any] ?? [:]
                guard let proto = (e["protocol"] as? String).flatMap(AllowedPort.Proto.init(rawValue:)),
                      let text = e["port"] as? String, let port = UInt16(text), port > 0 else {
                    p.ignoredPorts.append("allowed_ports[\(i)]: expected {\"name\", \"protocol\": \"tcp\"|\"udp\", \"port\": \"1\"–\"65535\"}")
                    continue
                }
                ports.append(AllowedPort(name: e["name"] as? String ?? "", proto: proto, port: port))
            }
            p.allowedPorts = ports
        }
        p.source = path
        return p
    }

    var json: [String: Any] {
        ["enable_tls": tls, "enable_workload_update_endpoint": workloadUpdateEndpoint,
         "enable_workload_update_auth": workloadUpdateAuth, "source": source,
         "container_engine": containerEngine?.rawValue ?? NSNull(),
         "image_signature_verification": imageSignatureVerification]
    }
}
