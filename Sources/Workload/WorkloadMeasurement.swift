import CVMCrypto
import CVMSupport

/// The workload measurement the in-guest agent extends into PCR 23 (docs/measurement.md).
/// The host (`update-disk`, `golden predict`) and the agent use this same code.
public struct WorkloadMeasurement: Sendable, Equatable {
    public struct Event: Sendable, Equatable, Codable {
        /// Path relative to the workload folder (`docker-compose.yml`, `config/…`, `app.tar`).
        public let name: String
        /// SHA-256 of the file's bytes (of `symlink:<target>` for a symlink), hex.
        public let contentSHA256: String
        /// The value extended into PCR 23: SHA-256(name ‖ 0x00 ‖ content digest), hex.
        public let digest: String

        enum CodingKeys: String, CodingKey {
            case name, digest
            case contentSHA256 = "content_sha256"
        }
    }

    public let events: [Event]
    /// PCR 23 after extending every event in order, starting from 32 zero bytes (hex).
    public let pcr23: String

    /// Measures a workload folder. Only what changes the workload's behaviour is measured:
    /// the compose file, `config/` (files and symlinks) and image archives; `secrets/` is not.
    public static func measure(_ folder: WorkloadFolder) throws -> WorkloadMeasurement {
        var inputs: [(name: String, content: [UInt8])] = []
        for entry in measuredEntries(folder) {
            switch entry.kind {
            case .file:
                inputs.append((entry.path, try SHA256.hash(fileAt: folder.url(entry.path).path)))
            case .symlink(let target):
                inputs.append((entry.path, SHA256.hash("symlink:" + target)))
            case .directory:
                continue
            }
        }
        return fromContentDigests(inputs)
    }

    /// Entries in measurement order: compose file, `config/` sorted by path bytes, then
    /// top-level `*.tar` sorted (WorkloadFolder lists entries sorted already).
    public static func measuredEntries(_ folder: WorkloadFolder) -> [WorkloadFolder.Entry] {
        measuredEntries(folder.entries)
    }

    /// The same for a listing read elsewhere (a disk's data partition: `golden predict`),
    /// sorted by path bytes as `WorkloadFolder` sorts.
    public static func measuredEntries(_ entries: [WorkloadFolder.Entry]) -> [WorkloadFolder.Entry] {
        var out: [WorkloadFolder.Entry] = []
        if let compose = entries.first(where: { $0.path == "docker-compose.yml" }) { out.append(compose) }
        out += entries.filter { $0.path.hasPrefix("config/") && $0.kind != .directory }
        out += imageArchives(entries)
        return out
    }

    /// The image archives a workload ships: top-level `*.tar`, sorted. The agent loads exactly
    /// these, so what runs is what was measured.
    public static func imageArchives(_ entries: [WorkloadFolder.Entry]) -> [WorkloadFolder.Entry] {
        entries.filter { !$0.path.contains("/") && $0.path.hasSuffix(".tar") && $0.kind != .directory }
    }

    /// PCR 23 after extending these events on top of `base` (64 hex digits) instead of zeros:
    /// the value after `POST /update-workload`, which extends the new events on top of the value
    /// PCR 23 had (a PCR cannot be reset). Nil when `base` is not 32 bytes of hex.
    public func pcr23(extending base: String) -> String? {
        guard base.count == 64, base.allSatisfy(\.isHexDigit) else { return nil }
        let chars = Array(base.utf8)
        var pcr = stride(from: 0, to: 64, by: 2).map { UInt8(String(decoding: chars[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
        for event in events {
            let digest = Array(event.digest.utf8)
            pcr = SHA256.hash(pcr + stride(from: 0, to: digest.count, by: 2).map {
                UInt8(String(decoding: digest[$0..<$0 + 2], as: UTF8.self), radix: 16)!
            })
        }
        return hexString(pcr)
    }

    /// Builds the event list and PCR value from (name, SHA-256 of content) pairs in order.
    public static func fromContentDigests(_ inputs: [(name: String, content: [UInt8])]) -> WorkloadMeasurement {
        var pcr = [UInt8](repeating: 0, count: 32)
        var events: [Event] = []
        for (name, content) in inputs {
            let digest = SHA256.hash(Array(name.utf8) + [0] + content)
            pcr = SHA256.hash(pcr + digest)
            events.append(Event(name: name, contentSHA256: hexString(content), digest: hexString(digest)))
        }
        return WorkloadMeasurement(events: events, pcr23: hexString(pcr))
    }
}
