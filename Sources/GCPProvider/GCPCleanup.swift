import CloudAuth
import CVMSupport
import Deploy
import Foundation
import Transport

extension GCPDeploy {
    /// Deletes what deploy-gcp made for `vmName`, by name (so it works without the artifact too),
    /// in dependency order: the instance (its disks go with it; waited for), a leftover data
    /// disk, the firewall, the image, the uploaded archives `<vm>-*.tar.gz` in the bucket, the
    /// artifact. Parts already gone are fine.
    public static func cleanup(vmName: String, zone: String?, projectID: String?, bucket: String?,
                               artifactsDirectory: String = "_artifacts", dryRun: Bool = false,
                               environment: [String: String] = ProcessInfo.processInfo.environment,
                               home: String = NSHomeDirectory(), verbose: Bool = false,
                               isCancelled: (@Sendable () -> Bool)? = nil,
                               log: @escaping @Sendable (String) -> Void = { _ in }) throws -> CleanupOutcome {
        try DeployRequest.checkVMName(vmName)
        try GCPNames.checkVMName(vmName)
        let artifactPath = DeployArtifact.path(directory: artifactsDirectory, cloud: "gcp", vmName: vmName)
        let artifact = try DeployArtifact.read(artifactPath)
        guard let zone = zone ?? artifact?.region else {
            throw CVMError.usage("cleanup gcp --vm_name \(vmName): no artifact at \(artifactPath) and no zone given; pass --region ZONE")
        }
        try checkZone(zone)
        let known = artifact?.resources ?? [:]
        let bucket = bucket ?? known["bucket"]
        if let bucket { try checkBucket(bucket) }
        let plan = DeployPlan()
        let clients = try Clients(projectID: projectID ?? known["project_id"], dryRun: dryRun, plan: plan,
                                  environment: environment, home: home, verbose: verbose, isCancelled: isCancelled)
        let compute = clients.compute
        var removed: [String] = [], gone: [String] = []
        func note(_ existed: Bool, _ what: String) {
            if existed { removed.append(what); log((dryRun ? "would delete " : "deleted ") + what) } else { gone.append(what) }
        }
        /// Deletes `path` if it exists (a GET first, so a dry run lists only what is there).
        func remove(_ path: String, kind: String, name: String, resource: String) throws {
            guard try compute.get(path, operation: "compute.\(resource).get") != nil else { return note(false, "\(kind) \(name)") }
            let deleted = try compute.mutate("DELETE", path, body: nil, operation: "compute.\(resource).delete",
                                             parameters: [(kind, name)], notFoundIsFine: true)
            note(dryRun || deleted != nil, "\(kind) \(name)")
        }

        try remove("zones/\(zone)/instances/\(vmName)", kind: "instance", name: vmName, resource: "instances")
        // A data disk outlives its instance only if autoDelete was turned off; look anyway.
        let dataDisk = known["data_disk"] ?? GCPNames.dataDisk(vm: vmName)
        if try compute.get("zones/\(zone)/disks/\(dataDisk)", operation: "compute.disks.get") != nil {
            try remove("zones/\(zone)/disks/\(dataDisk)", kind: "disk", name: dataDisk, resource: "disks")
        }
        try remove("global/firewalls/\(GCPNames.firewall(vm: vmName))", kind: "firewall", name: GCPNames.firewall(vm: vmName), resource: "firewalls")
        try remove("global/images/\(GCPNames.image(vm: vmName))", kind: "image", name: GCPNames.image(vm: vmName), resource: "images")

        if let bucket {
            var names = Set(try clients.objects.list(bucket: bucket, prefix: vmName + "-").filter {
                $0.hasSuffix(".tar.gz") && $0.dropFirst(vmName.count + 1).dropLast(7).allSatisfy(\.isHexDigit)
            })
            if let object = known["object"], !object.contains("<") { names.insert(object) }
            for name in names.sorted() {
                let object = GCSObjectName(bucket: bucket, object: name)
                if dryRun {
                    let exists = try clients.objects.metadata(object) != nil
                    if exists {
                        plan.add(PlannedCall(method: "DELETE", endpoint: clients.objects.url(object), operation: "storage.objects.delete",
                                             parameters: [("object", object.description)], mutating: true))
                    }
                    note(exists, "object \(object)")
                } else {
                    note(try clients.objects.delete(object), "object \(object)")
                }
            }
        }
        if !dryRun, FileManager.default.fileExists(atPath: artifactPath) {
            try? FileManager.default.removeItem(atPath: artifactPath)
        }
        return CleanupOutcome(removed: removed, alreadyGone: gone, region: zone, plan: plan.calls,
                              artifactPath: artifactPath, dryRun: dryRun)
    }
}
