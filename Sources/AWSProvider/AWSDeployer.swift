import CloudAuth
import CVMCrypto
import CVMMatrix
import CVMSupport
import Deploy
import DiskImage
import Foundation
import Transport

/// `deploy-aws`: an AMD SEV-SNP instance from a disk, with EC2's query API. Every step first
/// looks for what an earlier run of the same VM made (by name or the `cvm-cli:vm` tag).
public final class AWSDeployer: CloudDeployer, @unchecked Sendable {
    public static let tagKey = "cvm-cli:vm"
    public let cloud = CloudName.aws
    let session: AWSSession
    let ec2: EC2Client
    let options: AWSUploadOptions
    let uploadPath: AWSUploadPath
    /// Wall-clock budget for the image to become available and the instance to run.
    public var readyDeadline: Double = 1800

    init(session: AWSSession, ec2: EC2Client, options: AWSUploadOptions, uploadPath: AWSUploadPath = .ebs) {
        self.session = session
        self.ec2 = ec2
        self.options = options
        self.uploadPath = uploadPath
    }

    // MARK: names

    /// The AMI name: one per uploaded snapshot, so a rerun finds it and a new disk gets a new
    /// one (AMI names are unique per account and region).
    static func imageName(vm: String, snapshot: String) -> String { "cvm-\(vm)-\(snapshot)" }

    /// The snapshot an image name of this VM refers to, nil for other names.
    static func snapshot(fromImageName name: String, vm: String) -> String? {
        let prefix = "cvm-\(vm)-"
        guard name.hasPrefix(prefix) else { return nil }
        let rest = String(name.dropFirst(prefix.count))
        guard rest.hasPrefix("snap-"), rest.dropFirst(5).allSatisfy({ $0.isHexDigit }), rest.count > 5 else { return nil }
        return rest
    }

    static func isPlaceholder(_ id: String?) -> Bool { id?.hasPrefix("<") ?? true }

    private func tags(_ vm: String) -> [(String, String)] { [("Name", vm), (Self.tagKey, vm)] }

    // MARK: upload

    public func uploadDisk(_ state: DeployState) throws {
        let r = state.request
        let disk = try DiskImageFile.open(r.diskPath)
        let identity = try DiskFileIdentity(path: r.diskPath)
        let a = state.artifact
        if let snap = a.resources["snapshot_id"], !Self.isPlaceholder(snap), a.hasDigest(of: identity) {
            let found = try ec2.result("DescribeSnapshots", [("SnapshotId.1", snap)])
            if case .success(let xml) = found, xml.items("snapshotSet").first?.text("status") == "completed" {
                state.log("snapshot \(snap) of this disk exists: not uploading again")
                return
            }
        }
        if case .s3(let bucket) = uploadPath {
            let (snapshot, url, task, digest) = try AWSImportSnapshot(session: session, ec2: ec2, options: options)
                .run(state, disk: disk, bucket: bucket)
            state.artifact.resources["snapshot_id"] = snapshot
            state.artifact.resources["s3_object"] = url
            state.artifact.resources["import_task_id"] = task
            if !r.dryRun {
                state.artifact.diskSHA256 = digest.map(hexString)
                state.artifact.recordDisk(identity)
            }
            return
        }
        let volumeGiB = (disk.virtualSize + (1 << 30) - 1) >> 30
        if r.dryRun {
            let ebs = try session.endpoint("ebs")
            state.plan.add(PlannedCall(method: "POST", endpoint: ebs + "/snapshots", operation: "ebs:StartSnapshot",
                                       parameters: [("VolumeSize", "\(volumeGiB)"), ("Tags", "created-by=cvm-cli,\(Self.tagKey)=\(r.vmName)")], mutating: true))
            state.plan.add(PlannedCall(method: "PUT", endpoint: ebs + "/snapshots/<snapshot>/blocks/<index>", operation: "ebs:PutSnapshotBlock",
                                       parameters: [("blocks", "each non-zero 512 KiB block of \(formatBytes(disk.virtualSize))")], mutating: true))
            state.plan.add(PlannedCall(method: "POST", endpoint: ebs + "/snapshots/completion/<snapshot>", operation: "ebs:CompleteSnapshot",
                                       parameters: [("ChecksumAggregationMethod", "LINEAR")], mutating: true))
            state.artifact.resources["snapshot_id"] = "<new snapshot>"
            return
        }
        var options = self.options
        options.tags = [Self.tagKey: r.vmName, "Name": r.vmName]
        options.description = "cvm-cli deploy-aws \(r.vmName)"
        let digest = DigestBox()
        options.contentDigest = { digest.set($0) }
        let upload = EBSSnapshotUpload(session: session, options: options)
        let (id, blocks, bytes, _) = try upload.upload(disk, name: r.diskPath)
        state.log("uploaded \(formatBytes(bytes)) in \(blocks) blocks to snapshot \(id)")
        state.artifact.resources["snapshot_id"] = id
        state.artifact.diskSHA256 = digest.value.map(hexString)
        state.artifact.recordDisk(identity)
    }

    // MARK: image

    /// RegisterImage's parameters: UEFI + TPM 2.0 + IMDSv2 + ENA, the snapshot as root device.
    static func registerImageParameters(name: String, snapshot: String, vm: String, uefiData: String?) -> [(String, String)] {
        var p: [(String, String)] = [
            ("Name", name),
            ("Description", "cvm-cli confidential VM image for \(vm)"),
            ("Architecture", "x86_64"),
            ("VirtualizationType", "hvm"),
            ("RootDeviceName", "/dev/xvda"),
            ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
            ("BlockDeviceMapping.1.Ebs.SnapshotId", snapshot),
            ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
            ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
            ("EnaSupport", "true"),
            ("BootMode", "uefi"),
            ("TpmSupport", "v2.0"),
            ("ImdsSupport", "v2.0"),
        ]
        if let uefiData { p.append(("UefiData", uefiData)) }
        p += EC2Client.tagSpecifications(["image"], tags: [("Name", vm), (tagKey, vm)])
        return p
    }

    public func registerImage(_ state: DeployState) throws {
        let r = state.request
        let snapshot = state.artifact.resources["snapshot_id"] ?? "<new snapshot>"
        let uefiData = try r.secureBootCerts.map { try AWSUEFIData.encode($0) }
        let name = Self.imageName(vm: r.vmName, snapshot: snapshot)
        if !Self.isPlaceholder(snapshot) {
            let found = try ec2.read("DescribeImages", [("Owner.1", "self")] + EC2Client.filters([("name", [name])]))
            if let image = found.items("imagesSet").first(where: { $0.text("imageState") != "deregistered" }),
               let id = image.text("imageId") {
                state.log("image \(id) (\(name)) exists")
                state.artifact.resources["image_id"] = id
                if !r.dryRun { try waitForImage(id) }
                return
            }
        }
        let answer = try ec2.write("RegisterImage", Self.registerImageParameters(name: name, snapshot: snapshot, vm: r.vmName, uefiData: uefiData))
        guard let answer else {
            state.artifact.resources["image_id"] = "<new image>"
            return
        }
        guard let id = answer.text("imageId") else { throw CVMError.io("EC2 RegisterImage: the answer has no imageId") }
        state.log("registered image \(id) (\(name))")
        state.artifact.resources["image_id"] = id
        try waitForImage(id)
    }

    private func waitForImage(_ id: String) throws {
        try poll("image \(id) to become available") {
            let xml = try ec2.read("DescribeImages", [("ImageId.1", id)], retrying: ["InvalidAMIID.NotFound"])
            let image = xml.items("imagesSet").first
            switch image?.text("imageState") {
            case "available": return true
            case "failed", "error", "deregistered", "invalid":
                throw CVMError.io("EC2 image \(id) is '\(image?.text("imageState") ?? "")': \(image?.text("stateReason/message") ?? "no reason given")")
            default: return false
            }
        }
    }

    // MARK: network

    struct Permission: Hashable {
        var proto: String
        var from: Int
        var to: Int
    }

    static func wantedPermissions(_ ports: [PortRange]) -> [Permission] {
        var out = [Permission(proto: "tcp", from: 8000, to: 8000)]
        for p in ports {
            for proto in ["tcp", "udp"] {
                let perm = Permission(proto: proto, from: Int(p.from), to: Int(p.to))
                if !out.contains(perm) { out.append(perm) }
            }
        }
        return out
    }

    static func authorizeParameters(groupID: String, _ permissions: [Permission]) -> [(String, String)] {
        var p = [("GroupId", groupID)]
        for (i, perm) in permissions.enumerated() {
            let k = "IpPermissions.\(i + 1)"
            p += [("\(k).IpProtocol", perm.proto), ("\(k).FromPort", "\(perm.from)"), ("\(k).ToPort", "\(perm.to)"),
                  ("\(k).IpRanges.1.CidrIp", "0.0.0.0/0"),
                  ("\(k).IpRanges.1.Description", perm.from == 8000 && perm.to == 8000 && perm.proto == "tcp" ? "cvm agent" : "cvm-cli --additional_ports")]
        }
        return p
    }

    public func prepareNetwork(_ state: DeployState) throws {
        let r = state.request
        let vpcs = try ec2.read("DescribeVpcs", EC2Client.filters([("isDefault", ["true"])]))
        guard let vpc = vpcs.items("vpcSet").first?.text("vpcId") else {
            throw CVMError.usage("region \(r.region) has no default VPC; create one (ec2:CreateDefaultVpc, `aws ec2 create-default-vpc`) and rerun")
        }
        let groupName = "\(r.vmName)-sg"
        let groups = try ec2.read("DescribeSecurityGroups", EC2Client.filters([("group-name", [groupName]), ("vpc-id", [vpc])]))
        var existing = Set<Permission>()
        let groupID: String
        if let g = groups.items("securityGroupInfo").first, let id = g.text("groupId") {
            groupID = id
            for item in g.items("ipPermissions") {
                guard let proto = item.text("ipProtocol"), let from = item.text("fromPort").flatMap(Int.init),
                      let to = item.text("toPort").flatMap(Int.init),
                      item.items("ipRanges").contains(where: { $0.text("cidrIp") == "0.0.0.0/0" }) else { continue }
                existing.insert(Permission(proto: proto, from: from, to: to))
            }
            state.log("security group \(groupName) (\(id)) exists")
        } else {
            let answer = try ec2.write("CreateSecurityGroup", [
                ("GroupName", groupName), ("GroupDescription", "cvm-cli: agent port 8000 and --additional_ports of \(r.vmName)"),
                ("VpcId", vpc),
            ] + EC2Client.tagSpecifications(["security-group"], tags: tags(r.vmName)))
            groupID = answer?.text("groupId") ?? "<new security group>"
            state.log("created security group \(groupName) (\(groupID))")
        }
        state.artifact.resources["vpc_id"] = vpc
        state.artifact.resources["security_group_id"] = groupID
        let missing = Self.wantedPermissions(r.additionalPorts).filter { !existing.contains($0) }
        if !missing.isEmpty {
            try ec2.write("AuthorizeSecurityGroupIngress", Self.authorizeParameters(groupID: groupID, missing))
        }
    }

    // MARK: instance

    /// Instances tagged for this VM that are not (being) terminated: (id, image, state).
    func instances(of vm: String) throws -> [(id: String, image: String, state: String)] {
        let xml = try ec2.read("DescribeInstances", EC2Client.filters([
            ("tag:\(Self.tagKey)", [vm]), ("instance-state-name", ["pending", "running", "stopping", "stopped"]),
        ]))
        return xml.items("reservationSet").flatMap { $0.items("instancesSet") }.compactMap { i in
            guard let id = i.text("instanceId") else { return nil }
            return (id, i.text("imageId") ?? "", i.text("instanceState/name") ?? "")
        }
    }

    static func runInstancesParameters(image: String, vmType: String, groupID: String, vm: String,
                                       dataDiskGiB: Int?) -> [(String, String)] {
        var p: [(String, String)] = [
            ("ImageId", image), ("InstanceType", vmType), ("MinCount", "1"), ("MaxCount", "1"),
            ("SecurityGroupId.1", groupID),
            ("CpuOptions.AmdSevSnp", "enabled"),
            ("MetadataOptions.HttpTokens", "required"),
            ("MetadataOptions.HttpEndpoint", "enabled"),
            // Same VM and image: a retried or repeated launch returns the same instance.
            ("ClientToken", String("\(vm)-\(image)".prefix(64))),
        ]
        if let gib = dataDiskGiB {
            p += [("BlockDeviceMapping.1.DeviceName", "/dev/sdf"), ("BlockDeviceMapping.1.Ebs.VolumeSize", "\(gib)"),
                  ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"), ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true")]
        }
        p += EC2Client.tagSpecifications(["instance", "volume"], tags: [("Name", vm), (tagKey, vm)])
        return p
    }

    public func createVM(_ state: DeployState) throws {
        let r = state.request
        let image = state.artifact.resources["image_id"] ?? "<new image>"
        let current = try instances(of: r.vmName)
        if let same = current.first(where: { $0.image == image }) {
            state.log("instance \(same.id) runs image \(image) (\(same.state))")
            if same.state == "stopped" || same.state == "stopping" {
                try ec2.write("StartInstances", [("InstanceId.1", same.id)], retrying: ["IncorrectInstanceState"])
            }
            state.artifact.resources["instance_id"] = same.id
            return
        }
        let answer = try ec2.write("RunInstances", Self.runInstancesParameters(
            image: image, vmType: r.vmType, groupID: state.artifact.resources["security_group_id"] ?? "<new security group>",
            vm: r.vmName, dataDiskGiB: r.dataDiskGiB), retrying: ["InvalidAMIID.NotFound", "InvalidGroup.NotFound"])
        let id = answer.flatMap { $0.items("instancesSet").first?.text("instanceId") } ?? "<new instance>"
        if answer != nil { state.log("launched instance \(id)") }
        state.artifact.resources["instance_id"] = id
    }

    public func waitUntilRunning(_ state: DeployState) throws {
        guard !state.request.dryRun, let id = state.artifact.resources["instance_id"], !Self.isPlaceholder(id) else { return }
        try poll("instance \(id) to run") {
            let xml = try ec2.read("DescribeInstances", [("InstanceId.1", id)], retrying: ["InvalidInstanceID.NotFound"])
            let instance = xml.items("reservationSet").flatMap { $0.items("instancesSet") }.first
            switch instance?.text("instanceState/name") {
            case "running": return true
            case "pending", nil: return false
            case let s?:
                throw CVMError.io("EC2 instance \(id) is '\(s)' instead of running: \(instance?.text("stateReason/message") ?? "no reason given")")
            }
        }
    }

    // MARK: address

    public func assignPublicIP(_ state: DeployState) throws {
        let r = state.request
        let instance = state.artifact.resources["instance_id"] ?? "<new instance>"
        let found = try ec2.read("DescribeAddresses", EC2Client.filters([("tag:\(Self.tagKey)", [r.vmName])]))
        var allocation: String, ip: String?, attachedTo: String?
        if let a = found.items("addressesSet").first, let id = a.text("allocationId") {
            allocation = id
            ip = a.text("publicIp")
            attachedTo = a.text("instanceId")
            state.log("Elastic IP \(ip ?? "?") (\(id)) exists")
        } else {
            let answer = try ec2.write("AllocateAddress", [("Domain", "vpc")]
                                       + EC2Client.tagSpecifications(["elastic-ip"], tags: tags(r.vmName)))
            allocation = answer?.text("allocationId") ?? "<new address>"
            ip = answer?.text("publicIp")
        }
        state.artifact.resources["allocation_id"] = allocation
        if attachedTo != instance {
            let answer = try ec2.write("AssociateAddress", [("AllocationId", allocation), ("InstanceId", instance),
                                                            ("AllowReassociation", "true")],
                                       retrying: ["InvalidInstanceID"])
            if let assoc = answer?.text("associationId") { state.artifact.resources["association_id"] = assoc }
        }
        state.artifact.publicIP = ip
    }

    // MARK: replacing an earlier deploy

    public func retireOld(_ state: DeployState) throws {
        let r = state.request
        let keepInstance = state.artifact.resources["instance_id"]
        let keepImage = state.artifact.resources["image_id"]
        let keepSnapshot = state.artifact.resources["snapshot_id"]
        let old = try instances(of: r.vmName).filter { $0.id != keepInstance }
        if !old.isEmpty {
            state.log("terminating the earlier instance(s) \(old.map(\.id).joined(separator: ", "))")
            try ec2.write("TerminateInstances", old.enumerated().map { ("InstanceId.\($0.offset + 1)", $0.element.id) })
        }
        for image in try images(of: r.vmName) where image.id != keepImage {
            state.log("deregistering the earlier image \(image.id) (\(image.name))")
            try ec2.delete("DeregisterImage", [("ImageId", image.id)])
        }
        for snap in try snapshots(of: r.vmName) where snap != keepSnapshot {
            state.log("deleting the earlier snapshot \(snap)")
            try ec2.delete("DeleteSnapshot", [("SnapshotId", snap)])
        }
    }

    /// Images of this VM (by exact name pattern; tags are not relied on).
    func images(of vm: String) throws -> [(id: String, name: String, snapshots: [String])] {
        let xml = try ec2.read("DescribeImages", [("Owner.1", "self")] + EC2Client.filters([("name", ["cvm-\(vm)-snap-*"])]))
        return xml.items("imagesSet").compactMap { i in
            guard let id = i.text("imageId"), let name = i.text("name"),
                  let snap = Self.snapshot(fromImageName: name, vm: vm), i.text("imageState") != "deregistered" else { return nil }
            let mapped = i.items("blockDeviceMapping").compactMap { $0.text("ebs/snapshotId") }
            return (id, name, Array(Set([snap] + mapped)).sorted())
        }
    }

    /// Snapshots tagged for this VM.
    func snapshots(of vm: String) throws -> [String] {
        let xml = try ec2.read("DescribeSnapshots", [("Owner.1", "self")] + EC2Client.filters([("tag:\(Self.tagKey)", [vm])]))
        return xml.items("snapshotSet").compactMap { $0.text("snapshotId") }
    }

    // MARK: helpers

    /// Polls `done` with growing pauses until it returns true or `readyDeadline` passes.
    func poll(_ what: String, _ done: () throws -> Bool) throws {
        try pollWithBackoff(what, command: "deploy-aws", interval: options.pollInterval, deadline: readyDeadline,
                            isCancelled: session.client.configuration.isCancelled, done)
    }
}

/// Receives the disk digest from an upload thread.
final class DigestBox: @unchecked Sendable {
    private let lock = NSLock()
    private var digest: [UInt8]?
    func set(_ d: [UInt8]) { lock.withLock { digest = d } }
    var value: [UInt8]? { lock.withLock { digest } }
}
