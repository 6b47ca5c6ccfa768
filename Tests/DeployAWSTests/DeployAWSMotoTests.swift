@testable import AWSProvider
import AWSTestSupport
import CVMCrypto
import CVMMatrix
import CVMSupport
import CVMTestData
import Deploy
import DiskImage
import Foundation
import XCTest

/// deploy-aws and cleanup aws end to end against moto_server with SigV4 enforced, through a
/// recording proxy whose log botocore's ec2 model then judges; the server's state is read back
/// with boto3.
final class DeployAWSMotoTests: XCTestCase {
    nonisolated(unsafe) static var server: MotoServer?
    nonisolated(unsafe) static var startError: Error?

    override class func setUp() {
        super.setUp()
        do { server = try MotoServer() } catch { startError = error }
    }

    override class func tearDown() {
        server?.stop()
        server = nil
        super.tearDown()
    }

    var moto: MotoServer!
    private var dir = ""
    private var proxies: [Process] = []

    override func setUpWithError() throws {
        if let e = Self.startError { throw e }
        moto = try XCTUnwrap(Self.server)
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-deploy-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        for p in proxies where p.isRunning { p.terminate(); p.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: dir)
    }

    // MARK: harness

    struct Proxy { let endpoint: String; let log: String }

    /// A recording (and optionally fault-injecting) proxy in front of moto.
    private func startProxy(faults: Bool = false) throws -> Proxy {
        let script = dir + "/deploy_proxy.py"
        try deployProxyScript.write(toFile: script, atomically: true, encoding: .utf8)
        let log = dir + "/requests-\(UUID().uuidString).jsonl"
        FileManager.default.createFile(atPath: log, contents: nil)
        let port = try MotoServer.freePort()
        let upstream = String(moto.endpoint.split(separator: ":").last!)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script, String(port), upstream, log, faults ? "1" : "0", moto.credentialsJSON, moto.region]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        proxies.append(p)
        let deadline = MotoServer.monotonicNow() + 20
        while !MotoServer.canConnect(port: port) {
            guard p.isRunning, MotoServer.monotonicNow() < deadline else { throw CVMError.io("proxy did not start") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return Proxy(endpoint: "http://127.0.0.1:\(port)", log: log)
    }

    private func records(_ proxy: Proxy) throws -> [[String: Any]] {
        try String(contentsOfFile: proxy.log, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    /// A small raw disk with data, holes and a last partial block; returns (vmdk path, SHA-256 of the raw bytes).
    private func makeDisk() throws -> (String, String) {
        let raw = dir + "/disk.raw"
        FileManager.default.createFile(atPath: raw, contents: nil)
        let fd = FileDescriptor(fd: open(raw, O_RDWR), path: raw)
        defer { fd.close() }
        let size: UInt64 = (5 << 20) + 4096
        try fd.truncate(to: size)
        try fd.write(TestData.pseudoRandomBytes(count: 300_000, seed: 1), at: 4096)
        try fd.write(TestData.pseudoRandomBytes(count: 600_000, seed: 2), at: 2 << 20)
        try fd.write(TestData.pseudoRandomBytes(count: 4096, seed: 3), at: size - 4096)
        let sha = hexString(SHA256.hash(Array(try Data(contentsOf: URL(fileURLWithPath: raw)))))
        let vmdk = dir + "/aws_disk.vmdk"
        _ = try DiskConversion.run(input: raw, output: vmdk, format: .vmdk, overwrite: true)
        return (vmdk, sha)
    }

    private func request(_ disk: String, vm: String, ports: String = "80,443,9000-9010", dryRun: Bool = false) throws -> DeployRequest {
        var r = DeployRequest(cloud: .aws, diskPath: disk, vmName: vm, region: moto.region, vmType: "m6a.large")
        r.additionalPorts = try PortRange.parseList(ports)
        r.dataDiskGiB = 4
        r.dryRun = dryRun
        r.artifactsDirectory = dir + "/_artifacts"
        return r
    }

    private var fastOptions: AWSUploadOptions {
        var o = AWSUploadOptions()
        o.pollInterval = (0.05, 0.3)
        return o
    }

    private func deploy(_ r: DeployRequest, via proxy: Proxy, upload: AWSUploadPath = .ebs, log: LineLog? = nil) throws -> DeployOutcome {
        try AWSDeploy.run(r, matrix: try CVMMatrix.embedded(), environment: moto.environment(endpoint: proxy.endpoint),
                          home: dir, options: fastOptions, upload: upload, log: { log?.add($0) })
    }

    private func fetch(_ url: String) throws -> Any {
        let r = try MotoServer.python(["-c", "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())", url])
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
    }

    /// The server's view of a VM's resources, read with boto3.
    private func state(_ vm: String) throws -> [String: Any] {
        let script = dir + "/state.py"
        try Self.stateScript.write(toFile: script, atomically: true, encoding: .utf8)
        let r = try MotoServer.python([script, moto.endpoint, moto.credentialsJSON, moto.region, vm])
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
    }

    static let stateScript = #"""
    import hashlib, json, sys
    import boto3
    from botocore.config import Config
    endpoint, creds, region, vm = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name=region, aws_access_key_id=creds["id"],
                       aws_secret_access_key=creds["secret"], config=Config(retries={"max_attempts": 1}))
    def fix(request, **kw):
        body = request.body or b""
        if isinstance(body, str): body = body.encode()
        request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    ec2.meta.events.register("before-sign", fix)
    tagf = [{"Name": "tag:cvm-cli:vm", "Values": [vm]}]
    out = {"instances": [], "images": [], "groups": [], "addresses": [], "snapshots": [], "volumes": []}
    for res in ec2.describe_instances(Filters=tagf)["Reservations"]:
        for i in res["Instances"]:
            if i["State"]["Name"] == "terminated": continue
            out["instances"].append({"id": i["InstanceId"], "state": i["State"]["Name"], "image": i["ImageId"],
                                     "type": i["InstanceType"], "groups": [g["GroupId"] for g in i.get("SecurityGroups", [])],
                                     "devices": sorted(b["DeviceName"] for b in i.get("BlockDeviceMappings", []))})
    for im in ec2.describe_images(Owners=["self"])["Images"]:
        if im["Name"].startswith("cvm-" + vm + "-snap-"):
            out["images"].append({"id": im["ImageId"], "name": im["Name"], "state": im["State"]})
    for g in ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [vm + "-sg"]}])["SecurityGroups"]:
        perms = sorted(f'{p["IpProtocol"]}:{p["FromPort"]}-{p["ToPort"]}' for p in g["IpPermissions"])
        out["groups"].append({"id": g["GroupId"], "perms": perms, "tags": {t["Key"]: t["Value"] for t in g.get("Tags", [])}})
    for a in ec2.describe_addresses()["Addresses"]:
        tags = {t["Key"]: t["Value"] for t in a.get("Tags", [])}
        if tags.get("cvm-cli:vm") == vm:
            out["addresses"].append({"allocation": a["AllocationId"], "ip": a["PublicIp"], "instance": a.get("InstanceId")})
    for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=tagf)["Snapshots"]:
        out["snapshots"].append({"id": s["SnapshotId"], "state": s["State"]})
    for v in ec2.describe_volumes(Filters=tagf)["Volumes"]:
        out["volumes"].append({"id": v["VolumeId"], "state": v["State"]})
    print(json.dumps(out))
    """#

    /// Runs the botocore checker over a proxy log; fails the test on any finding.
    @discardableResult
    private func checkAgainstBotocore(_ proxy: Proxy, file: StaticString = #filePath, line: UInt = #line) throws -> [(action: String, params: [String: String])] {
        let script = dir + "/check_ec2.py"
        try botocoreEC2CheckerScript.write(toFile: script, atomically: true, encoding: .utf8)
        let r = try MotoServer.python([script, proxy.log])
        let out = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let errors = out["errors"] as! [String]
        XCTAssertEqual(errors, [], "EC2 requests that botocore's model rejects", file: file, line: line)
        XCTAssertGreaterThan(out["checked"] as! Int, 5, file: file, line: line)
        return (out["requests"] as! [[String: Any]]).map { ($0["action"] as! String, $0["params"] as! [String: String]) }
    }

    /// For the CLI tests (in another file): a disk in this test's folder, and a proxy.
    func makeDiskForCLI() throws -> (path: String, dir: String) { (try makeDisk().0, dir) }
    func startProxyForCLI() throws -> String { try startProxy().endpoint }

    // MARK: tests

    func testDeployRerunAndCleanup() throws {
        let (disk, rawSHA) = try makeDisk()
        let proxy = try startProxy()
        let vm = "cvm-full"
        let log = LineLog()
        var firstRequest = try request(disk, vm: vm)
        firstRequest.secureBootCerts = try SecureBootCerts.load(directory: try AWSUEFIDataTests.makeCertificateFolder(dir))
        let first = try deploy(firstRequest, via: proxy, log: log)

        // The artifact, as written on disk.
        let path = dir + "/_artifacts/aws_\(vm).json"
        let artifact = try XCTUnwrap(try DeployArtifact.read(path))
        XCTAssertEqual(artifact, first.artifact)
        XCTAssertEqual(artifact.diskSHA256, rawSHA, "disk_sha256 is the SHA-256 of the virtual disk's raw bytes")
        XCTAssertEqual(artifact.region, moto.region)
        XCTAssertEqual(artifact.tee, "SEV-SNP")
        for key in ["snapshot_id", "image_id", "security_group_id", "instance_id", "allocation_id", "association_id", "vpc_id"] {
            XCTAssertFalse(artifact.resources[key]?.isEmpty ?? true, "artifact lacks \(key): \(artifact.resources)")
        }
        let ip = try XCTUnwrap(artifact.publicIP)
        XCTAssertNotNil(ip.split(separator: ".").count == 4 ? ip : nil, ip)
        XCTAssertFalse(try String(contentsOfFile: path, encoding: .utf8).contains(moto.secretAccessKey))

        // The server's state.
        var s = try state(vm)
        let instances = s["instances"] as! [[String: Any]]
        XCTAssertEqual(instances.count, 1, "\(s)")
        XCTAssertEqual(instances.first?["id"] as? String, artifact.resources["instance_id"])
        XCTAssertEqual(instances.first?["state"] as? String, "running")
        XCTAssertEqual(instances.first?["image"] as? String, artifact.resources["image_id"])
        XCTAssertEqual(instances.first?["type"] as? String, "m6a.large")
        XCTAssertEqual(instances.first?["groups"] as? [String], [artifact.resources["security_group_id"]!])
        // moto's RegisterImage drops the image's mappings, so only the data disk shows here.
        XCTAssertTrue((instances.first?["devices"] as? [String])?.contains("/dev/sdf") ?? false, "data disk: \(instances)")
        let groups = s["groups"] as! [[String: Any]]
        XCTAssertEqual(groups.count, 1)
        XCTAssertEqual((groups.first?["tags"] as? [String: String])?["cvm-cli:vm"], vm)
        XCTAssertEqual(groups.first?["perms"] as? [String],
                       ["tcp:443-443", "tcp:80-80", "tcp:8000-8000", "tcp:9000-9010", "udp:443-443", "udp:80-80", "udp:9000-9010"])
        let addresses = s["addresses"] as! [[String: Any]]
        XCTAssertEqual(addresses.count, 1)
        XCTAssertEqual(addresses.first?["ip"] as? String, ip)
        XCTAssertEqual(addresses.first?["instance"] as? String, artifact.resources["instance_id"])
        XCTAssertEqual((s["images"] as! [[String: Any]]).map { $0["id"] as? String }, [artifact.resources["image_id"]])
        XCTAssertEqual((s["snapshots"] as! [[String: Any]]).map { $0["id"] as? String }, [artifact.resources["snapshot_id"]])

        // Rerun: the same resources, nothing new, and no second upload.
        let before = try records(proxy).count
        let second = try deploy(try request(disk, vm: vm), via: proxy)
        XCTAssertEqual(second.artifact.resources, artifact.resources)
        XCTAssertEqual(second.artifact.publicIP, ip)
        let rerun = try records(proxy).dropFirst(before)
        XCTAssertFalse(rerun.contains { ($0["path"] as? String)?.hasPrefix("/snapshots") ?? false }, "no EBS call on a rerun")
        let rerunWrites = rerun.compactMap { $0["action"] as? String }.filter { !$0.hasPrefix("Describe") }
        XCTAssertEqual(rerunWrites, [], "a rerun of an unchanged deploy changes nothing")
        s = try state(vm)
        for kind in ["instances", "groups", "images", "addresses", "snapshots"] {
            XCTAssertEqual((s[kind] as! [Any]).count, 1, "\(kind) after rerun: \(s)")
        }

        // Every EC2 request by botocore's model; the CVM parameters explicitly.
        let requests = try checkAgainstBotocore(proxy)
        let register = try XCTUnwrap(requests.first { $0.action == "RegisterImage" }?.params)
        XCTAssertEqual(register["BootMode"], "uefi")
        XCTAssertEqual(register["TpmSupport"], "v2.0")
        XCTAssertEqual(register["ImdsSupport"], "v2.0")
        XCTAssertEqual(register["EnaSupport"], "true")
        XCTAssertEqual(register["Architecture"], "x86_64")
        XCTAssertEqual(register["VirtualizationType"], "hvm")
        XCTAssertEqual(register["BlockDeviceMapping.1.Ebs.SnapshotId"], artifact.resources["snapshot_id"])
        XCTAssertEqual(register["TagSpecification.1.Tag.2.Key"], "cvm-cli:vm")
        let uefi = try AWSUEFIDataTests.decode(try XCTUnwrap(register["UefiData"]), in: dir)
        XCTAssertEqual(uefi.map { $0["name"] as? String }, ["PK", "KEK", "db"], "UefiData holds the --secure-boot-certs keys")
        let run = try XCTUnwrap(requests.first { $0.action == "RunInstances" }?.params)
        XCTAssertEqual(run["CpuOptions.AmdSevSnp"], "enabled")
        XCTAssertEqual(run["ImageId"], artifact.resources["image_id"])
        XCTAssertEqual(run["BlockDeviceMapping.1.Ebs.VolumeType"], "gp3")
        XCTAssertEqual(run["BlockDeviceMapping.1.Ebs.VolumeSize"], "4")
        // SigV4 with the payload hash on every request.
        for r in try records(proxy) {
            XCTAssertTrue((r["authorization"] as? String ?? "").hasPrefix("AWS4-HMAC-SHA256 Credential="), "\(r)")
            XCTAssertNotNil(r["contentSha256"] as? String, "\(r)")
        }

        // Cleanup leaves nothing; a second cleanup finds nothing and does not fail.
        let cleaned = try AWSDeploy.cleanup(vmName: vm, region: nil, artifactsDirectory: dir + "/_artifacts",
                                            environment: moto.environment(endpoint: proxy.endpoint), home: dir, options: fastOptions)
        XCTAssertEqual(cleaned.region, moto.region, "region from the artifact")
        XCTAssertTrue(cleaned.removed.contains("instance \(artifact.resources["instance_id"]!)"), "\(cleaned.removed)")
        XCTAssertTrue(cleaned.removed.contains("security group \(artifact.resources["security_group_id"]!)"), "\(cleaned.removed)")
        s = try state(vm)
        for kind in ["instances", "groups", "images", "addresses", "snapshots", "volumes"] {
            XCTAssertEqual((s[kind] as! [Any]).count, 0, "\(kind) after cleanup: \(s)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "the artifact is removed")
        let again = try AWSDeploy.cleanup(vmName: vm, region: nil, artifactsDirectory: dir + "/_artifacts",
                                          environment: moto.environment(endpoint: proxy.endpoint), home: dir, options: fastOptions)
        XCTAssertEqual(again.removed, [])
        try checkAgainstBotocore(proxy)
    }
}

extension DeployAWSMotoTests {
    func testDryRunReadsButChangesNothing() throws {
        let (disk, _) = try makeDisk()
        let proxy = try startProxy()
        let vm = "cvm-dry"
        let before = try state(vm)
        let outcome = try deploy(try request(disk, vm: vm, dryRun: true), via: proxy)
        XCTAssertTrue(outcome.dryRun)
        XCTAssertNil(outcome.artifactPath)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/_artifacts/aws_\(vm).json"), "a dry run writes no artifact")
        let sent = try records(proxy)
        XCTAssertFalse(sent.isEmpty, "a dry run reads")
        for r in sent {
            let action = r["action"] as? String ?? "(EBS \(r["method"]!) \(r["path"]!))"
            XCTAssertTrue(action.hasPrefix("Describe"), "a dry run sent \(action)")
        }
        XCTAssertEqual(NSDictionary(dictionary: try state(vm)), NSDictionary(dictionary: before), "server state unchanged")
        XCTAssertTrue(outcome.plan.contains { $0.operation == "ec2:DescribeVpcs" && !$0.mutating }, "reads are in the plan too")
        let ops = outcome.plan.filter(\.mutating).map(\.operation)
        XCTAssertEqual(ops, ["ebs:StartSnapshot", "ebs:PutSnapshotBlock", "ebs:CompleteSnapshot", "ec2:RegisterImage",
                             "ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress", "ec2:RunInstances",
                             "ec2:AllocateAddress", "ec2:AssociateAddress"])
        let register = try XCTUnwrap(outcome.plan.first { $0.operation == "ec2:RegisterImage" })
        XCTAssertEqual(register.parameters["BootMode"], "uefi")
        XCTAssertEqual(register.method, "POST")
        XCTAssertEqual(register.endpoint, proxy.endpoint + "/")
        XCTAssertEqual(outcome.plan.first { $0.operation == "ec2:RunInstances" }?.parameters["CpuOptions.AmdSevSnp"], "enabled")

        // cleanup --dry-run after a real deploy lists everything and deletes nothing.
        _ = try deploy(try request(disk, vm: vm), via: proxy)
        let deployed = try state(vm)
        let listed = try AWSDeploy.cleanup(vmName: vm, region: nil, artifactsDirectory: dir + "/_artifacts", dryRun: true,
                                           environment: moto.environment(endpoint: proxy.endpoint), home: dir, options: fastOptions)
        XCTAssertEqual(Set(listed.removed.map { String($0.split(separator: " ").first!) }),
                       ["address", "image", "instance", "security", "snapshot"])
        XCTAssertTrue(listed.removed.contains("snapshot \(try XCTUnwrap(try DeployArtifact.read(dir + "/_artifacts/aws_\(vm).json")?.resources["snapshot_id"]))"))
        XCTAssertEqual(NSDictionary(dictionary: try state(vm)), NSDictionary(dictionary: deployed), "cleanup --dry-run changed the server")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/_artifacts/aws_\(vm).json"))
        _ = try AWSDeploy.cleanup(vmName: vm, region: nil, artifactsDirectory: dir + "/_artifacts",
                                  environment: moto.environment(endpoint: proxy.endpoint), home: dir, options: fastOptions)
        try checkAgainstBotocore(proxy)
    }

    /// A rerun with a changed disk: new snapshot, image and instance; the old ones go only once
    /// the new instance runs and holds the address.
    func testChangedDiskReplacesImageAndInstanceAfterTheNewOnesAreReady() throws {
        let (disk, _) = try makeDisk()
        let proxy = try startProxy()
        let vm = "cvm-replace"
        let old = try deploy(try request(disk, vm: vm), via: proxy).artifact
        // A new disk in the same place.
        let raw = dir + "/disk.raw"
        let fd = FileDescriptor(fd: open(raw, O_RDWR), path: raw)
        try fd.write(TestData.pseudoRandomBytes(count: 8192, seed: 99), at: 3 << 20)
        fd.close()
        let newSHA = hexString(SHA256.hash(Array(try Data(contentsOf: URL(fileURLWithPath: raw)))))
        _ = try DiskConversion.run(input: raw, output: disk, format: .vmdk, overwrite: true)
        let before = try records(proxy).count
        let new = try deploy(try request(disk, vm: vm), via: proxy).artifact
        XCTAssertEqual(new.diskSHA256, newSHA)
        for key in ["snapshot_id", "image_id", "instance_id"] {
            XCTAssertNotEqual(new.resources[key], old.resources[key], key)
        }
        XCTAssertEqual(new.resources["allocation_id"], old.resources["allocation_id"], "the Elastic IP stays")
        XCTAssertEqual(new.resources["security_group_id"], old.resources["security_group_id"])
        XCTAssertEqual(new.publicIP, old.publicIP)
        // Order: the old image is deregistered only after the new one was registered and the
        // new instance holds the address.
        let actions = try records(proxy).dropFirst(before).compactMap { $0["action"] as? String }
        let register = try XCTUnwrap(actions.firstIndex(of: "RegisterImage"))
        let associate = try XCTUnwrap(actions.firstIndex(of: "AssociateAddress"))
        let deregister = try XCTUnwrap(actions.firstIndex(of: "DeregisterImage"))
        let terminate = try XCTUnwrap(actions.firstIndex(of: "TerminateInstances"))
        XCTAssertLessThan(register, associate)
        XCTAssertLessThan(associate, terminate)
        XCTAssertLessThan(associate, deregister)
        let s = try state(vm)
        XCTAssertEqual((s["instances"] as! [[String: Any]]).map { $0["id"] as? String }, [new.resources["instance_id"]])
        XCTAssertEqual((s["images"] as! [[String: Any]]).map { $0["id"] as? String }, [new.resources["image_id"]])
        XCTAssertEqual((s["snapshots"] as! [[String: Any]]).map { $0["id"] as? String }, [new.resources["snapshot_id"]])
        XCTAssertEqual((s["addresses"] as! [[String: Any]]).first?["instance"] as? String, new.resources["instance_id"])
        try checkAgainstBotocore(proxy)
        _ = try AWSDeploy.cleanup(vmName: vm, region: nil, artifactsDirectory: dir + "/_artifacts",
                                  environment: moto.environment(endpoint: proxy.endpoint), home: dir, options: fastOptions)
    }

    /// --upload s3: the file goes up as is, ImportSnapshot (played by the proxy, judged by
    /// botocore's model) turns it into the snapshot, the rest is as with EBS; cleanup also
    /// deletes the S3 object.
    func testUploadThroughS3AndImportSnapshot() throws {
        let (disk, rawSHA) = try makeDisk()
        let proxy = try startProxy()
        let vm = "cvm-s3"
        _ = try moto.helper("s3-create-bucket", ["cvm-import"])
        let log = LineLog()
        let outcome = try deploy(try request(disk, vm: vm), via: proxy, upload: .s3(bucket: "cvm-import"), log: log)
        let a = outcome.artifact
        XCTAssertEqual(a.diskSHA256, rawSHA)
        XCTAssertEqual(a.resources["s3_object"], "s3://cvm-import/cvm-cli/\(vm)/aws_disk.vmdk")
        let imports = try fetch(proxy.endpoint + "/proxy-imports") as! [[String: Any]]
        XCTAssertEqual(imports.count, 1)
        XCTAssertEqual(imports.first?["format"] as? String, "VMDK")
        let fileSHA = hexString(SHA256.hash(Array(try Data(contentsOf: URL(fileURLWithPath: disk)))))
        XCTAssertEqual(imports.first?["sha256"] as? String, fileSHA, "the object is the disk file as is")
        XCTAssertEqual(a.resources["import_task_id"], imports.first?["task"] as? String)
        XCTAssertTrue(log.lines.contains { $0.contains("converting") }, "import progress is reported: \(log.lines)")
        let s = try state(vm)
        XCTAssertEqual((s["snapshots"] as! [[String: Any]]).map { $0["id"] as? String }, [a.resources["snapshot_id"]], "the imported snapshot is tagged")
        XCTAssertEqual((s["instances"] as! [Any]).count, 1)
        let requests = try checkAgainstBotocore(proxy)
        let importParams = try XCTUnwrap(requests.first { $0.action == "ImportSnapshot" }?.params)
        XCTAssertEqual(importParams["DiskContainer.UserBucket.S3Bucket"], "cvm-import")
        XCTAssertEqual(importParams["DiskContainer.Format"], "VMDK")

        let cleaned = try AWSDeploy.cleanup(vmName: vm, region: nil, artifactsDirectory: dir + "/_artifacts",
                                            environment: moto.environment(endpoint: proxy.endpoint), home: dir, options: fastOptions)
        XCTAssertTrue(cleaned.removed.contains("object s3://cvm-import/cvm-cli/\(vm)/aws_disk.vmdk"), "\(cleaned.removed)")
        let listing = try moto.helper("s3-uploads", ["cvm-import"])
        XCTAssertEqual(listing["objects"] as? Int, 0)
        XCTAssertEqual((try state(vm)["instances"] as! [Any]).count, 0)
    }

    /// Ctrl-C after the image was registered: the rerun uploads nothing again and reuses the
    /// snapshot and the image.
    func testInterruptedDeployResumes() throws {
        let (disk, _) = try makeDisk()
        let proxy = try startProxy()
        let vm = "cvm-resume"
        let stop = Flag()
        var options = fastOptions
        options.isCancelled = { stop.isSet }
        let r = try request(disk, vm: vm)
        XCTAssertThrowsError(try AWSDeploy.run(r, matrix: try CVMMatrix.embedded(), environment: moto.environment(endpoint: proxy.endpoint),
                                               home: dir, options: options, log: { if $0.hasPrefix("registered image") { stop.set() } })) { e in
            XCTAssertEqual((e as? CVMError)?.kind, .interrupted, "\(e)")
        }
        let partial = try XCTUnwrap(try DeployArtifact.read(dir + "/_artifacts/aws_\(vm).json"), "the artifact is saved after each step")
        let snapshot = try XCTUnwrap(partial.resources["snapshot_id"])
        XCTAssertNil(partial.resources["instance_id"])
        let before = try records(proxy).count
        let done = try deploy(r, via: proxy)
        XCTAssertEqual(done.artifact.resources["snapshot_id"], snapshot)
        let rerun = try records(proxy).dropFirst(before)
        XCTAssertFalse(rerun.contains { ($0["path"] as? String)?.hasPrefix("/snapshots") ?? false }, "no second upload")
        XCTAssertFalse(rerun.contains { $0["action"] as? String == "RegisterImage" }, "the image is found by name")
        let s = try state(vm)
        XCTAssertEqual((s["images"] as! [Any]).count, 1)
        XCTAssertEqual((s["instances"] as! [Any]).count, 1)
        _ = try AWSDeploy.cleanup(vmName: vm, region: nil, artifactsDirectory: dir + "/_artifacts",
                                  environment: moto.environment(endpoint: proxy.endpoint), home: dir, options: fastOptions)
    }

    func testMatrixErrorsComeBeforeAnyRequest() throws {
        let proxy = try startProxy()
        let cases: [(String, String, TEE?, String)] = [
            ("m5.large", "us-east-2", nil, "'m5.large' is not a confidential-VM type on aws"),
            ("c6a.large", "us-west-1", nil, "c6a.large is SEV-SNP capable in us-east-2 and eu-west-1"),
            ("m6a.large", "us-east-2", .tdx, "aws offers no TDX confidential VMs"),
        ]
        for (type, region, tee, expected) in cases {
            var r = DeployRequest(cloud: .aws, diskPath: dir + "/no-such-disk.vmdk", vmName: "cvm-matrix", region: region, vmType: type)
            r.tee = tee
            r.artifactsDirectory = dir + "/_artifacts"
            XCTAssertThrowsError(try deploy(r, via: proxy)) { e in
                XCTAssertEqual((e as? CVMError)?.kind, .usage, "\(e)")
                XCTAssertTrue("\(e)".contains(expected), "\(e)")
            }
        }
        XCTAssertEqual(try records(proxy).count, 0, "no request before the matrix check passes")
        // Credentials are not even looked at first.
        var r = DeployRequest(cloud: .aws, diskPath: "/nope", vmName: "cvm-matrix", region: "us-west-1", vmType: "c6a.large")
        r.artifactsDirectory = dir
        XCTAssertThrowsError(try AWSDeploy.run(r, matrix: try CVMMatrix.embedded(), environment: [:], home: dir)) { e in
            XCTAssertTrue("\(e)".contains("SEV-SNP capable"), "\(e)")
        }
    }

    func testDeployCompletesThroughInjectedFaults() throws {
        let (disk, rawSHA) = try makeDisk()
        let proxy = try startProxy(faults: true)
        let vm = "cvm-faults"
        let outcome = try deploy(try request(disk, vm: vm, ports: "53"), via: proxy)
        XCTAssertEqual(outcome.artifact.diskSHA256, rawSHA)
        XCTAssertNotNil(outcome.artifact.publicIP)
        let fetched = try MotoServer.python(["-c", "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())", proxy.endpoint + "/proxy-stats"])
        let stats = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(fetched.stdout.utf8)) as? [String: Int])
        for kind in ["start500", "block503", "blockdrop", "register503", "describeimagesdrop", "creategroup500", "run400throttle", "allocate503"] {
            XCTAssertEqual(stats[kind], 1, "fault \(kind) was not injected: \(stats)")
        }
        let s = try state(vm)
        for kind in ["instances", "groups", "images", "addresses", "snapshots"] {
            XCTAssertEqual((s[kind] as! [Any]).count, 1, "\(kind) after a deploy with faults: \(s)")
        }
        XCTAssertEqual(((s["groups"] as! [[String: Any]]).first?["perms"] as? [String]), ["tcp:53-53", "tcp:8000-8000", "udp:53-53"])
        // Cleanup with the artifact gone works from tags and names.
        try FileManager.default.removeItem(atPath: dir + "/_artifacts/aws_\(vm).json")
        let cleaned = try AWSDeploy.cleanup(vmName: vm, region: moto.region, artifactsDirectory: dir + "/_artifacts",
                                            environment: moto.environment(endpoint: proxy.endpoint), home: dir, options: fastOptions)
        XCTAssertEqual(Set(cleaned.removed.map { String($0.split(separator: " ").first!) }),
                       ["address", "image", "instance", "security", "snapshot"])
        let after = try state(vm)
        for kind in ["instances", "groups", "images", "addresses", "snapshots", "volumes"] {
            XCTAssertEqual((after[kind] as! [Any]).count, 0, "\(kind) after cleanup without the artifact: \(after)")
        }
    }

    func testWrongSecretIsRefusedAndNeverShown() throws {
        let (disk, _) = try makeDisk()
        let secret = "wrongSecretValue/ABCDEFGHIJKLMNOPQRSTUVW"
        let r = try request(disk, vm: "cvm-auth")
        XCTAssertThrowsError(try AWSDeploy.run(r, matrix: try CVMMatrix.embedded(), environment: moto.environment(secret: secret),
                                               home: dir, options: fastOptions)) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("403") || text.contains("401"), text)
            XCTAssertFalse(text.contains(secret), text)
        }
    }

    /// The checker itself rejects what AWS would: misspelt names, bad enum values, wrong types.
    func testBotocoreCheckerRejectsBadRequests() throws {
        let log = dir + "/bad.jsonl"
        let bad = [
            "Action=RunInstances&Version=2016-11-15&ImageId=ami-1&MinCount=1&MaxCount=1&CpuOptions.AmdSevSNP=enabled",
            "Action=RegisterImage&Version=2016-11-15&Name=xyz&BootMode=efi&TpmSupport=v2.0",
            "Action=RunInstances&Version=2016-11-15&ImageId=ami-1&MinCount=one&MaxCount=1",
            "Action=RegisterImage&Version=2016-11-15&Name=xyz&EnaSupport=yes",
            "Action=DescribeImages&Version=2016-11-15&Owners.1=self",
            "Action=RunInstances&Version=2016-11-15&ImageId=ami-1&MinCount=1",
        ]
        let lines = bad.map { body in
            String(decoding: try! JSONSerialization.data(withJSONObject: ["action": "x", "body": body, "method": "POST", "path": "/"]), as: UTF8.self)
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: log, atomically: true, encoding: .utf8)
        let script = dir + "/check_ec2.py"
        try botocoreEC2CheckerScript.write(toFile: script, atomically: true, encoding: .utf8)
        let out = try JSONSerialization.jsonObject(with: Data(try MotoServer.python([script, log]).stdout.utf8)) as! [String: Any]
        let errors = (out["errors"] as! [String]).joined(separator: "\n")
        XCTAssertTrue(errors.contains("unknown parameter CpuOptions.AmdSevSNP"), errors)
        XCTAssertTrue(errors.contains("BootMode='efi' is not one of"), errors)
        XCTAssertTrue(errors.contains("MinCount='one' is not an integer"), errors)
        XCTAssertTrue(errors.contains("EnaSupport='yes' is not a boolean"), errors)
        XCTAssertTrue(errors.contains("unknown parameter Owners.1"), errors)
        XCTAssertTrue(errors.contains("MaxCount"), "a missing required member: \(errors)")
    }
}

/// A flag set from any thread.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

/// Lines collected from any thread.
final class LineLog: @unchecked Sendable {
    private let lock = NSLock()
    private var all: [String] = []
    func add(_ line: String) { lock.withLock { all.append(line) } }
    var lines: [String] { lock.withLock { all } }
}
