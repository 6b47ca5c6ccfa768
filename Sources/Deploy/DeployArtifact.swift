import CVMSupport
import Foundation

/// What a deploy created, in `_artifacts/<cloud>_<vm_name>.json`: enough to find, reach and
/// clean up the VM. Written atomically after every step (so a rerun resumes), never a secret.
public struct DeployArtifact: Sendable, Codable, Equatable {
    public var cloud: String
    public var vmName: String
    public var region: String
    public var vmType: String
    public var tee: String
    /// Resource ids by role: `instance_id`, `image_id`, `snapshot_id`, `security_group_id`,
    /// `allocation_id`, `association_id`, `data_volume_id`, … (each cloud its own names).
    public var resources: [String: String]
    public var publicIP: String?
    /// ISO 8601 UTC time the deploy that produced this started.
    public var created: String
    /// Hex SHA-256 of the virtual disk's content (the raw bytes the VM sees).
    public var diskSHA256: String?
    /// The disk file this was made from, and its size and modification time, so a rerun can tell
    /// whether an uploaded snapshot still matches it.
    public var diskPath: String?
    public var diskFileSize: UInt64?
    public var diskFileModified: Double?
    /// `sha256:<hex>` of the agent's TLS certificate, recorded by `golden fetch`/`api-token` on
    /// first use (kept here so a resumed deploy that rewrites the artifact keeps the pin).
    public var agentTLSFingerprint: String?

    public init(cloud: String, vmName: String, region: String, vmType: String, tee: String,
                created: String = DeployArtifact.now()) {
        self.cloud = cloud
        self.vmName = vmName
        self.region = region
        self.vmType = vmType
        self.tee = tee
        self.resources = [:]
        self.created = created
    }

    enum CodingKeys: String, CodingKey {
        case cloud, region, resources, created
        case vmName = "vm_name", vmType = "vm_type", tee, publicIP = "public_ip", diskSHA256 = "disk_sha256"
        case diskPath = "disk_path", diskFileSize = "disk_file_size", diskFileModified = "disk_file_modified"
        case agentTLSFingerprint = "agent_tls_fingerprint"
    }

    public static func now() -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: Date())
    }

    /// `<directory>/<cloud>_<vm_name>.json`.
    public static func path(directory: String, cloud: String, vmName: String) -> String {
        "\(directory)/\(cloud)_\(vmName).json"
    }

    /// The artifact at `path`, nil when there is none; a damaged one is an error naming it.
    public static func read(_ path: String) throws -> DeployArtifact? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else { throw CVMError.io("\(path): cannot read it") }
        do {
            return try JSONDecoder().decode(DeployArtifact.self, from: data)
        } catch {
            throw CVMError.invalid("\(path): not a cvm-cli deploy artifact (\(error.localizedDescription)); move it away to start afresh")
        }
    }

    /// Writes atomically (temporary file + rename), creating the folder if needed.
    public func write(_ path: String) throws {
        let dir = AtomicOutputFile.directory(of: path)
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw CVMError.io("\(dir): cannot create the artifacts folder: \(error.localizedDescription)")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(self) + Data("\n".utf8)
        let out = try AtomicOutputFile(path: path, overwrite: true)
        do {
            try out.descriptor.write(Array(data), at: 0)
            try out.commit()
        } catch {
            out.discard()
            throw error
        }
    }
}

/// The disk file a deploy uploads, named the way the artifact records it (path, size,
/// modification time): a rerun with the same unchanged file reuses the artifact's digest and upload.
public struct DiskFileIdentity: Equatable, Sendable {
    public let path: String
    public let size: UInt64
    public let modified: Double

    public init(path: String) throws {
        let attrs: [FileAttributeKey: Any]
        do { attrs = try FileManager.default.attributesOfItem(atPath: path) } catch {
            throw CVMError.io("\(path): cannot stat it: \(error.localizedDescription)")
        }
        self.path = path
        size = (attrs[.size] as? NSNumber)?.uint64Value ?? 0
        modified = (attrs[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
    }
}

extension DeployArtifact {
    /// True when the artifact holds a digest taken of this very file (same path, size and mtime).
    public func hasDigest(of disk: DiskFileIdentity) -> Bool {
        diskSHA256 != nil && diskPath == disk.path && diskFileSize == disk.size && diskFileModified == disk.modified
    }

    /// Records which file the artifact's digest and upload belong to.
    public mutating func recordDisk(_ disk: DiskFileIdentity) {
        diskPath = disk.path
        diskFileSize = disk.size
        diskFileModified = disk.modified
    }
}

/// Polls `done` with doubling pauses (`interval.first` up to `interval.maximum`) until it returns
/// true; gives up when the next pause would pass `deadline` seconds, or when `isCancelled` says so.
/// `command` names what to rerun to pick up from there.
public func pollWithBackoff(_ what: String, command: String, interval: (first: Double, maximum: Double), deadline: Double,
                            isCancelled: (@Sendable () -> Bool)?, _ done: () throws -> Bool) throws {
    let start = ProcessInfo.processInfo.systemUptime
    var pause = interval.first
    while try !done() {
        let elapsed = ProcessInfo.processInfo.systemUptime - start
        if elapsed + pause > deadline {
            throw CVMError.io("gave up waiting for \(what) after \(Int(elapsed)) s; rerun \(command) to pick up from there")
        }
        if let isCancelled, isCancelled() {
            throw CVMError(.interrupted, "interrupted while waiting for \(what); rerun \(command) to pick up from there")
        }
        Thread.sleep(forTimeInterval: pause)
        pause = min(pause * 2, interval.maximum)
    }
}
