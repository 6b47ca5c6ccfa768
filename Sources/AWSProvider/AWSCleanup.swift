import CloudAuth
import CVMSupport
import Deploy
import Foundation
import Transport

extension AWSDeploy {
    /// Deletes what deploy-aws created for `vmName`, found from the artifact and by tag/name (so
    /// it works when the artifact is gone), in dependency order: address, instances (waited until
    /// terminated), images, snapshots, security group, leftover volumes, the artifact. Parts
    /// already gone are fine.
    public static func cleanup(vmName: String, region: String?, artifactsDirectory: String = "_artifacts",
                               dryRun: Bool = false,
                               environment: [String: String] = ProcessInfo.processInfo.environment,
                               home: String = userHomeDirectory(), options: AWSUploadOptions = AWSUploadOptions(),
                               verbose: Bool = false, log: @escaping @Sendable (String) -> Void = { _ in }) throws -> CleanupOutcome {
        try DeployRequest.checkVMName(vmName)
        let artifactPath = DeployArtifact.path(directory: artifactsDirectory, cloud: "aws", vmName: vmName)
        let artifact = try DeployArtifact.read(artifactPath)
        let configured = try? configuredRegion(environment: environment, home: home)
        guard let region = region ?? artifact?.region ?? configured else {
            throw CVMError.usage("cleanup aws --vm_name \(vmName): no artifact at \(artifactPath) and no region given; pass --region")
        }
        let plan = DeployPlan()
        let (session, ec2) = try clients(region: region, dryRun: dryRun, plan: plan, environment: environment,
                                         home: home, options: options, verbose: verbose)
        let deployer = AWSDeployer(session: session, ec2: ec2, options: options)
        var removed: [String] = [], gone: [String] = []
        func note(_ existed: Bool, _ what: String) {
            if existed { removed.append(what); log((dryRun ? "would delete " : "deleted ") + what) } else { gone.append(what) }
        }
        let known = artifact?.resources ?? [:]

        // 1. Elastic IPs: tagged ones, and the artifact's.
        var addresses: [(allocation: String, association: String?)] = []
        let tagged = try ec2.read("DescribeAddresses", EC2Client.filters([("tag:\(AWSDeployer.tagKey)", [vmName])]))
        for a in tagged.items("addressesSet") {
            if let id = a.text("allocationId") { addresses.append((id, a.text("associationId"))) }
        }
        if let id = known["allocation_id"], !addresses.contains(where: { $0.allocation == id }), !AWSDeployer.isPlaceholder(id) {
            if case .success(let xml) = try ec2.result("DescribeAddresses", [("AllocationId.1", id)]),
               let a = xml.items("addressesSet").first {
                addresses.append((id, a.text("associationId")))
            } else {
                gone.append("address \(id)")
            }
        }
        for a in addresses {
            if let assoc = a.association, !assoc.isEmpty {
                try ec2.delete("DisassociateAddress", [("AssociationId", assoc)])
            }
            note(try ec2.delete("ReleaseAddress", [("AllocationId", a.allocation)]), "address \(a.allocation)")
        }

        // 2. Instances (their data volumes go with them: DeleteOnTermination).
        var instances = try deployer.instances(of: vmName).map(\.id)
        if let id = known["instance_id"], !instances.contains(id), !AWSDeployer.isPlaceholder(id) {
            if case .success(let xml) = try ec2.result("DescribeInstances", [("InstanceId.1", id)]),
               let i = xml.items("reservationSet").flatMap({ $0.items("instancesSet") }).first,
               !["terminated", "shutting-down"].contains(i.text("instanceState/name") ?? "") {
                instances.append(id)
            } else {
                gone.append("instance \(id)")
            }
        }
        if !instances.isEmpty {
            let ok = try ec2.delete("TerminateInstances", instances.enumerated().map { ("InstanceId.\($0.offset + 1)", $0.element) })
            for id in instances { note(ok, "instance \(id)") }
            if !dryRun {
                // The security group cannot go while an instance's interface still uses it.
                for id in instances {
                    try deployer.poll("instance \(id) to terminate") {
                        guard case .success(let xml) = try ec2.result("DescribeInstances", [("InstanceId.1", id)]) else { return true }
                        let state = xml.items("reservationSet").flatMap { $0.items("instancesSet") }.first?.text("instanceState/name")
                        return state == nil || state == "terminated"
                    }
                }
            }
        }

        // 3. Images, then 4. their snapshots and any other snapshot tagged for this VM.
        var snapshots = Set<String>()
        var images = try deployer.images(of: vmName)
        if let id = known["image_id"], !images.contains(where: { $0.id == id }), !AWSDeployer.isPlaceholder(id) {
            if case .success(let xml) = try ec2.result("DescribeImages", [("ImageId.1", id)]),
               let i = xml.items("imagesSet").first, i.text("imageState") != "deregistered" {
                images.append((id, i.text("name") ?? "", i.items("blockDeviceMapping").compactMap { $0.text("ebs/snapshotId") }))
            } else {
                gone.append("image \(id)")
            }
        }
        for image in images {
            note(try ec2.delete("DeregisterImage", [("ImageId", image.id)]), "image \(image.id)")
            snapshots.formUnion(image.snapshots)
        }
        snapshots.formUnion(try deployer.snapshots(of: vmName))
        if let id = known["snapshot_id"], !AWSDeployer.isPlaceholder(id) { snapshots.insert(id) }
        for snap in snapshots.sorted() {
            note(try ec2.delete("DeleteSnapshot", [("SnapshotId", snap)]), "snapshot \(snap)")
        }

        // 5. The security group: `<vm>-sg` carrying our tag (a group of that name someone else
        // made is left alone), and the artifact's id.
        var groups = Set<String>()
        let named = try ec2.read("DescribeSecurityGroups", EC2Client.filters([
            ("group-name", ["\(vmName)-sg"]), ("tag:\(AWSDeployer.tagKey)", [vmName]),
        ]))
        for g in named.items("securityGroupInfo") { if let id = g.text("groupId") { groups.insert(id) } }
        if let id = known["security_group_id"], !AWSDeployer.isPlaceholder(id) { groups.insert(id) }
        for id in groups.sorted() {
            // A terminated instance's interface lingers a little: DependencyViolation is retried.
            let ok: Bool
            if dryRun {
                ok = try ec2.delete("DeleteSecurityGroup", [("GroupId", id)])
            } else {
                switch try ec2.result("DeleteSecurityGroup", [("GroupId", id)], retrying: ["DependencyViolation"]) {
                case .success: ok = true
                case .failure(let f) where f.ec2.isNotFound: ok = false
                case .failure(let f): throw f.ec2.cvmError
                }
            }
            note(ok, "security group \(id)")
        }

        // 6. Volumes tagged for this VM that outlived their instance.
        let volumes = try ec2.read("DescribeVolumes", EC2Client.filters([("tag:\(AWSDeployer.tagKey)", [vmName]), ("status", ["available"])]))
        for v in volumes.items("volumeSet") {
            if let id = v.text("volumeId") { note(try ec2.delete("DeleteVolume", [("VolumeId", id)]), "volume \(id)") }
        }

        // 7. The uploaded disk of --upload s3 (only the artifact knows it).
        if let url = known["s3_object"], url.hasPrefix("s3://") {
            let rest = url.dropFirst(5)
            if let slash = rest.firstIndex(of: "/") {
                let bucket = String(rest[..<slash]), key = String(rest[rest.index(after: slash)...])
                let objectURL = try S3MultipartUpload(session: session, options: options).objectURL(bucket: bucket, key: key)
                if dryRun {
                    plan.add(PlannedCall(method: "DELETE", endpoint: objectURL, operation: "s3:DeleteObject",
                                         parameters: [("Bucket", bucket), ("Key", key)], mutating: true))
                    note(true, "object \(url)")
                } else {
                    var request = session.request("s3", method: "DELETE", url: objectURL)
                    request.acceptedStatuses = [200, 204, 404]
                    let response = try session.send("S3 DeleteObject \(url)", request)
                    note(response.status != 404, "object \(url)")
                }
            }
        }

        if !dryRun, FileManager.default.fileExists(atPath: artifactPath) {
            try? FileManager.default.removeItem(atPath: artifactPath)
        }
        return CleanupOutcome(removed: removed, alreadyGone: gone, region: region, plan: plan.calls,
                              artifactPath: artifactPath, dryRun: dryRun)
    }
}

/// The configured region, if any (credentials are not needed for it).
func configuredRegion(environment: [String: String], home: String) throws -> String? {
    try AWSDiscovery.resolve(environment: environment, home: home).region
}
