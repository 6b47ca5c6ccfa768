import CloudAuth
import CVMCrypto
import CVMMatrix
import CVMSupport
import Deploy
import DiskImage
import Foundation
import Transport

/// Knobs of deploy-gcp besides the shared `DeployRequest`.
public struct GCPDeployOptions: Sendable {
    public var bucket: String
    /// Nil: the credentials' / environment's project.
    public var projectID: String?
    /// Keep the uploaded archive in the bucket after the image was made from it.
    public var keepUpload = false
    public var upload = GCSUploadOptions()
    /// Wall-clock budget for each Operation and for the instance to reach RUNNING.
    public var readyDeadline: Double = 1800
    /// Pauses between instance status polls: first, then doubled up to the maximum.
    public var pollInterval: (first: Double, maximum: Double) = (1, 10)

    public init(bucket: String, projectID: String? = nil) {
        self.bucket = bucket
        self.projectID = projectID
        upload.resume = true   // a rerun continues an interrupted upload of the same disk
    }
}

/// `deploy-gcp`: an SEV-SNP (n2d) or TDX (c3) Confidential VM on Compute Engine. Every step looks
/// for what an earlier run of the same VM made (by name, and the disk digest label) first.
public final class GCPDeployer: CloudDeployer, @unchecked Sendable {
    public let cloud = CloudName.gcp
    let compute: ComputeClient
    let objects: GCSObjects
    let options: GCPDeployOptions
    let environment: [String: String]
    let home: String
    let verbose: Bool
    /// This run uploaded (or, in a dry run, would upload) the archive: retireOld removes it.
    private var uploaded = false

    init(compute: ComputeClient, objects: GCSObjects, options: GCPDeployOptions, environment: [String: String],
         home: String, verbose: Bool) {
        self.compute = compute
        self.objects = objects
        self.options = options
        self.environment = environment
        self.home = home
        self.verbose = verbose
    }

    static let placeholderDigest = "<disk sha256>"
    static func isPlaceholder(_ s: String?) -> Bool { s?.hasPrefix("<") ?? true }

    func zone(_ state: DeployState) -> String { state.request.region }

    // MARK: upload

    public func uploadDisk(_ state: DeployState) throws {
        let r = state.request
        let identity = try DiskFileIdentity(path: r.diskPath)
        var a = state.artifact
        a.resources["project_id"] = compute.project
        a.resources["bucket"] = options.bucket
        // The digest names the object: reuse the artifact's while the file is unchanged, else
        // read the disk once (not in a dry run: the plan names it by placeholder).
        if !a.hasDigest(of: identity) {
            a.diskSHA256 = nil
            a.resources["object_crc32c"] = nil
            if !r.dryRun {
                let disk = try DiskImageFile.open(r.diskPath)
                state.log("hashing the disk content (\(formatBytes(disk.virtualSize)))")
                a.diskSHA256 = hexString(try DiskContentDigest.sha256(of: disk, isCancelled: options.upload.isCancelled))
            } else {
                _ = try DiskImageFile.open(r.diskPath)   // a bad disk fails the dry run too
            }
            a.recordDisk(identity)
        }
        let digest = a.diskSHA256 ?? Self.placeholderDigest
        let object = GCSObjectName(bucket: options.bucket, object: GCPNames.object(vm: r.vmName, diskSHA256: digest))
        a.resources["object"] = object.object
        state.artifact = a

        // An image of this disk already exists: nothing to upload.
        if let image = try compute.get("global/images/\(GCPNames.image(vm: r.vmName))", operation: "compute.images.get"),
           Self.imageMatches(image, digest: digest) {
            state.log("image \(GCPNames.image(vm: r.vmName)) of this disk exists: not uploading")
            return
        }
        // The archive of this disk is in the bucket already (an earlier run stopped after it).
        if let crc = a.resources["object_crc32c"], let meta = try objects.metadata(object), meta["crc32c"] as? String == crc {
            state.log("\(object) was uploaded before: not uploading again")
            return
        }
        if r.dryRun {
            compute.plan.add(PlannedCall(method: "POST", endpoint: objects.endpoint + "/upload/storage/v1/b/\(object.bucket)/o",
                                       operation: "storage.objects.insert",
                                       parameters: [("uploadType", "resumable"), ("name", object.object),
                                                    ("content", "GCP tar.gz of \(r.diskPath)")], mutating: true))
            uploaded = true
            return
        }
        var upload = options.upload
        upload.log = upload.log ?? { line in state.log(line) }
        let result = try GCSUpload.run(diskPath: r.diskPath, destination: object, environment: environment, home: home,
                                       options: upload, verbose: verbose)
        state.log("uploaded \(formatBytes(result.size)) to \(result.destination) (\(formatBytes(result.bytesSent)) sent)")
        state.artifact.resources["object_crc32c"] = result.crc32c
        uploaded = true
    }

    /// A READY image made from the same disk (its digest label), not being deleted.
    static func imageMatches(_ image: [String: Any], digest: String) -> Bool {
        let labels = image["labels"] as? [String: String] ?? [:]
        return !isPlaceholder(digest) && labels[GCPNames.diskLabel] == String(digest.prefix(12))
            && (image["description"] as? String ?? "").hasSuffix(digest) && (image["status"] as? String) != "FAILED"
            && (image["status"] as? String) != "DELETING"
    }

    // MARK: image

    public func registerImage(_ state: DeployState) throws {
        let r = state.request
        let name = GCPNames.image(vm: r.vmName)
        let digest = state.artifact.diskSHA256 ?? Self.placeholderDigest
        let existing = try compute.get("global/images/\(name)", operation: "compute.images.get")
        if let image = existing, Self.imageMatches(image, digest: digest) {
            state.artifact.resources["image"] = name
            state.artifact.resources["image_id"] = Self.id(image)
            if !r.dryRun { try waitForImage(name) }
            return
        }
        // The new archive is uploaded: only now does the old image of this name go.
        if existing != nil {
            state.log("deleting the earlier image \(name) (another disk)")
            try compute.mutate("DELETE", "global/images/\(name)", body: nil, operation: "compute.images.delete",
                               parameters: [("image", name)], notFoundIsFine: true)
        }
        let body = GCPComputeBodies.image(name: name, vm: r.vmName, bucket: options.bucket,
                                          object: state.artifact.resources["object"] ?? "<object>", diskSHA256: digest,
                                          region: GCPNames.region(ofZone: r.region), certs: r.secureBootCerts)
        var parameters = [("name", name), ("rawDisk.source", (body["rawDisk"] as? [String: String])?["source"] ?? ""),
                          ("guestOsFeatures", GCPComputeBodies.guestOsFeatures.joined(separator: ",")),
                          ("storageLocations", GCPNames.region(ofZone: r.region))]
        if r.secureBootCerts != nil { parameters.append(("shieldedInstanceInitialState", "pk,keks,dbs (X509)")) }
        let op = try compute.mutate("POST", "global/images", body: body, operation: "compute.images.insert", parameters: parameters)
        state.artifact.resources["image"] = name
        guard let op else { state.artifact.resources["image_id"] = "<new image>"; return }
        state.artifact.resources["image_id"] = op["targetId"].map { "\($0)" } ?? ""
        try waitForImage(name)
        state.log("created image \(name)")
    }

    /// images.insert's Operation is DONE once the image is READY; checked anyway.
    private func waitForImage(_ name: String) throws {
        try poll("image \(name) to be READY") {
            guard let image = try compute.get("global/images/\(name)", operation: "compute.images.get") else { return false }
            switch image["status"] as? String {
            case "READY": return true
            case "FAILED", "DELETING":
                throw CVMError.io("GCE image \(name) is \(image["status"] as? String ?? ""); rerun deploy-gcp to make it again")
            default: return false
            }
        }
    }

    // MARK: network

    public func prepareNetwork(_ state: DeployState) throws {
        let r = state.request
        let name = GCPNames.firewall(vm: r.vmName)
        let wanted = GCPComputeBodies.firewall(name: name, vm: r.vmName, ports: r.additionalPorts)
        let ports = GCPComputeBodies.firewallPorts(r.additionalPorts)
        state.artifact.resources["firewall"] = name
        if let rule = try compute.get("global/firewalls/\(name)", operation: "compute.firewalls.get") {
            let allowed = (rule["allowed"] as? [[String: Any]]) ?? []
            let open = Set(allowed.filter { ($0["IPProtocol"] as? String) == "tcp" }.flatMap { $0["ports"] as? [String] ?? [] })
            let tags = rule["targetTags"] as? [String] ?? []
            if open == Set(ports) && tags == [r.vmName] && (rule["sourceRanges"] as? [String]) == ["0.0.0.0/0"] {
                state.log("firewall \(name) exists")
                return
            }
            try compute.mutate("PATCH", "global/firewalls/\(name)", body: wanted, operation: "compute.firewalls.patch",
                               parameters: [("firewall", name), ("allowed", "tcp:" + ports.joined(separator: ","))])
            state.log("updated firewall \(name)")
            return
        }
        try compute.mutate("POST", "global/firewalls", body: wanted, operation: "compute.firewalls.insert",
                           parameters: [("name", name), ("allowed", "tcp:" + ports.joined(separator: ",")),
                                        ("targetTags", r.vmName), ("sourceRanges", "0.0.0.0/0")])
        state.log("created firewall \(name)")
    }

    // MARK: instance

    public func createVM(_ state: DeployState) throws {
        let r = state.request
        let zone = zone(state)
        let digest = state.artifact.diskSHA256 ?? Self.placeholderDigest
        let path = "zones/\(zone)/instances/\(r.vmName)"
        if let instance = try compute.get(path, operation: "compute.instances.get") {
            let labels = instance["labels"] as? [String: String] ?? [:]
            let machine = ComputeClient.lastComponent(instance["machineType"] as? String ?? "")
            if labels[GCPNames.diskLabel] == String(digest.prefix(12)), !Self.isPlaceholder(digest), machine == r.vmType {
                state.artifact.resources["instance"] = r.vmName
                state.artifact.resources["instance_id"] = Self.id(instance)
                let status = instance["status"] as? String ?? ""
                state.log("instance \(r.vmName) runs this disk (\(status))")
                if status == "TERMINATED" || status == "STOPPED" || status == "SUSPENDED" {
                    try compute.mutate("POST", path + "/start", body: nil, operation: "compute.instances.start",
                                       parameters: [("instance", r.vmName)])
                }
                return
            }
            // Same name, other disk or machine type: the name is the instance's, so it goes first.
            state.log("deleting the earlier instance \(r.vmName) (another disk or machine type)")
            try compute.mutate("DELETE", path, body: nil, operation: "compute.instances.delete",
                               parameters: [("instance", r.vmName)], notFoundIsFine: true)
        }
        let tee = TEE(rawValue: state.artifact.tee) ?? .sevSNP
        let body = GCPComputeBodies.instance(vm: r.vmName, zone: zone, project: compute.project, vmType: r.vmType, tee: tee,
                                             image: GCPNames.image(vm: r.vmName), diskSHA256: digest, dataDiskGiB: r.dataDiskGiB)
        var parameters = [("name", r.vmName), ("machineType", r.vmType),
                          ("confidentialInstanceType", tee == .tdx ? "TDX" : "SEV_SNP")]
        if tee != .tdx { parameters.append(("minCpuPlatform", "AMD Milan")) }
        parameters += [("onHostMaintenance", "TERMINATE"), ("sourceImage", GCPNames.image(vm: r.vmName))]
        if let gib = r.dataDiskGiB { parameters.append(("dataDisk", "\(GCPNames.dataDisk(vm: r.vmName)) \(gib) GiB pd-balanced")) }
        let op = try compute.mutate("POST", "zones/\(zone)/instances", body: body, operation: "compute.instances.insert",
                                    parameters: parameters)
        state.artifact.resources["instance"] = r.vmName
        if r.dataDiskGiB != nil { state.artifact.resources["data_disk"] = GCPNames.dataDisk(vm: r.vmName) }
        guard let op else { state.artifact.resources["instance_id"] = "<new instance>"; return }
        state.artifact.resources["instance_id"] = op["targetId"].map { "\($0)" } ?? ""
        state.log("created instance \(r.vmName) (\(tee))")
    }

    public func waitUntilRunning(_ state: DeployState) throws {
        guard !state.request.dryRun else { return }
        let path = "zones/\(zone(state))/instances/\(state.request.vmName)"
        try poll("instance \(state.request.vmName) to run") {
            guard let instance = try compute.get(path, operation: "compute.instances.get") else { return false }
            switch instance["status"] as? String {
            case "RUNNING":
                state.artifact.resources["instance_id"] = Self.id(instance)
                return true
            case "PROVISIONING", "STAGING", "REPAIRING", nil: return false
            case let s?:
                throw CVMError.io("GCE instance \(state.request.vmName) is \(s) instead of RUNNING: \(instance["statusMessage"] as? String ?? "no reason given")")
            }
        }
    }

    // MARK: address

    public func assignPublicIP(_ state: DeployState) throws {
        guard !state.request.dryRun else { return }
        let path = "zones/\(zone(state))/instances/\(state.request.vmName)"
        guard let instance = try compute.get(path, operation: "compute.instances.get") else {
            throw CVMError.io("GCE instance \(state.request.vmName) vanished while deploying; rerun deploy-gcp")
        }
        let nics = instance["networkInterfaces"] as? [[String: Any]] ?? []
        let ip = nics.flatMap { $0["accessConfigs"] as? [[String: Any]] ?? [] }.compactMap { $0["natIP"] as? String }.first
        guard let ip, !ip.isEmpty else {
            throw CVMError.io("GCE instance \(state.request.vmName) has no external IP (natIP) although it is RUNNING")
        }
        state.artifact.publicIP = ip
    }

    // MARK: afterwards

    /// The archive is in the image now: remove it from the bucket unless `--keep-upload`.
    public func retireOld(_ state: DeployState) throws {
        // Only an archive this run or an interrupted one uploaded (its crc32c is recorded until deleted).
        guard !options.keepUpload, uploaded || state.artifact.resources["object_crc32c"] != nil,
              let name = state.artifact.resources["object"] else { return }
        let object = GCSObjectName(bucket: options.bucket, object: name)
        if state.request.dryRun {
            compute.plan.add(PlannedCall(method: "DELETE", endpoint: objects.url(object), operation: "storage.objects.delete",
                                       parameters: [("object", object.description)], mutating: true))
            return
        }
        if try objects.delete(object) { state.log("deleted \(object) (the image holds it; --keep-upload keeps it)") }
        state.artifact.resources["object_crc32c"] = nil
        uploaded = false
    }

    // MARK: helpers

    static func id(_ resource: [String: Any]) -> String {
        if let s = resource["id"] as? String { return s }
        if let n = resource["id"] as? NSNumber { return n.stringValue }
        return ""
    }

    /// Polls `done` with growing pauses until it returns true or `readyDeadline` passes.
    func poll(_ what: String, _ done: () throws -> Bool) throws {
        try pollWithBackoff(what, command: "deploy-gcp", interval: options.pollInterval, deadline: options.readyDeadline,
                            isCancelled: options.upload.isCancelled, done)
    }
}
