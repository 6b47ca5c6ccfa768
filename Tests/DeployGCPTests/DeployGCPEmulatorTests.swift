import CVMCrypto
import CVMMatrix
import CVMSupport
import CVMTestData
import Deploy
import DiskImage
import Foundation
import GCPProvider
import GCPTestSupport
import XCTest

/// deploy-gcp and cleanup gcp end to end: gcp-storage-emulator behind the JWT-verifying token
/// server and bearer-checking proxy for the upload, and `fake_compute.py` (every request checked
/// against the official compute.v1 discovery document, tokens checked against the token
/// server's, Operations PENDING → RUNNING → DONE) for Compute Engine.
final class DeployGCPEmulatorTests: XCTestCase {
    nonisolated(unsafe) static var shared: GCSHarness?
    nonisolated(unsafe) static var startError: Error?

    override class func setUp() {
        super.setUp()
        do { shared = try GCSHarness() } catch { startError = error }
    }

    override class func tearDown() {
        shared?.stop()
        shared = nil
        super.tearDown()
    }

    var harness: GCSHarness!
    var dir: URL!
    var proxy: GCSHarness.Proxy!
    var compute: FakeCompute!
    var env: [String: String] = [:]
    let project = "cvm-test"

    override func setUpWithError() throws {
        if let e = Self.startError { throw e }
        harness = try XCTUnwrap(Self.shared)
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-deploygcp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // The emulator is shared by the tests: each starts with an empty bucket.
        try GCSHarness.run(["python3", "-c", """
            import json, sys, urllib.parse, urllib.request
            base = sys.argv[1] + "/storage/v1/b/" + sys.argv[2] + "/o"
            for item in json.load(urllib.request.urlopen(base)).get("items", []):
                urllib.request.urlopen(urllib.request.Request(base + "/" + urllib.parse.quote(item["name"], safe=""), method="DELETE"))
            """, harness.emulatorEndpoint, GCSHarness.bucket])
    }

    override func tearDownWithError() throws {
        compute?.stop()
        proxy?.stop()
        if let dir { try? FileManager.default.removeItem(at: dir) }
    }

    /// Token server + storage proxy + fake Compute, and the environment cvm-cli sees.
    func start(faults: Bool = false) throws {
        proxy = try harness.startProxy(faults: faults)
        compute = try FakeCompute(tokenServer: proxy.endpoint, storage: harness.emulatorEndpoint, faults: faults,
                                  log: dir.appendingPathComponent("compute.log"))
        let key = try harness.writeKeyFile(tokenURI: proxy.tokenURI, name: "key-\(proxy.port).json")
        env = harness.environment(proxy: proxy, keyFile: key, home: dir)
        env["CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"] = compute.endpoint
    }

    func request(disk: String, vm: String = "cvm-gcp", zone: String = "asia-southeast1-b", vmType: String = "n2d-standard-2",
                 ports: String = "80,443", dataDisk: Int? = nil, dryRun: Bool = false) throws -> DeployRequest {
        var r = DeployRequest(cloud: .gcp, diskPath: disk, vmName: vm, region: zone, vmType: vmType)
        r.additionalPorts = try PortRange.parseList(ports)
        r.dataDiskGiB = dataDisk
        r.dryRun = dryRun
        r.artifactsDirectory = dir.appendingPathComponent("_artifacts").path
        return r
    }

    func options(keepUpload: Bool = false) -> GCPDeployOptions {
        var o = GCPDeployOptions(bucket: GCSHarness.bucket)
        o.keepUpload = keepUpload
        o.pollInterval = (0.05, 0.2)
        o.upload.chunkSize = 1 << 20
        return o
    }

    func deploy(_ r: DeployRequest, _ o: GCPDeployOptions? = nil) throws -> DeployOutcome {
        try GCPDeploy.run(r, options: o ?? options(), matrix: try CVMMatrix.embedded(), environment: env, home: dir.path,
                          log: { line in if ProcessInfo.processInfo.environment["CVM_TEST_VERBOSE"] != nil { print("deploy: \(line)") } })
    }

    func cleanup(_ vm: String = "cvm-gcp", zone: String? = nil, dryRun: Bool = false) throws -> CleanupOutcome {
        try GCPDeploy.cleanup(vmName: vm, zone: zone, projectID: nil, bucket: nil,
                              artifactsDirectory: dir.appendingPathComponent("_artifacts").path, dryRun: dryRun,
                              environment: env, home: dir.path)
    }

    // MARK: tests

    func testSEVSNPDeployRerunAndCleanup() throws {
        try start()
        let disk = try makeDisk("disk.raw", size: 6 << 20)
        let certs = try makeCerts()
        var r = try request(disk: disk, dataDisk: 20)
        r.secureBootCerts = try SecureBootCerts.load(directory: certs)
        let outcome = try deploy(r)

        // The IP the fake gave the instance's ONE_TO_ONE_NAT, and the artifact.
        let ip = try XCTUnwrap(outcome.artifact.publicIP)
        XCTAssertTrue(ip.hasPrefix("203.0.113."), ip)
        let artifact = try XCTUnwrap(try DeployArtifact.read(r.artifactPath))
        let digest = hexString(try SHA256.hash(fileAt: disk))
        XCTAssertEqual(artifact.diskSHA256, digest, "disk_sha256 is the raw content's SHA-256")
        XCTAssertEqual(artifact.publicIP, ip)
        XCTAssertEqual(artifact.region, "asia-southeast1-b")
        XCTAssertEqual(artifact.tee, "SEV-SNP")
        XCTAssertEqual(artifact.resources["object"], "cvm-gcp-\(digest.prefix(12)).tar.gz")
        XCTAssertEqual(artifact.resources["image"], "cvm-gcp-image")
        XCTAssertEqual(artifact.resources["firewall"], "cvm-gcp-ingress")
        XCTAssertEqual(artifact.resources["instance"], "cvm-gcp")
        XCTAssertEqual(artifact.resources["project_id"], project)

        let state = try compute.state()
        let image = try XCTUnwrap(state["images"]?["cvm-gcp-image"])
        XCTAssertEqual((image["rawDisk"] as? [String: String])?["source"],
                       "https://storage.googleapis.com/\(GCSHarness.bucket)/cvm-gcp-\(digest.prefix(12)).tar.gz")
        XCTAssertEqual((image["rawDisk"] as? [String: String])?["containerType"], "TAR")
        XCTAssertEqual(Set((image["guestOsFeatures"] as? [[String: String]] ?? []).compactMap { $0["type"] }),
                       ["UEFI_COMPATIBLE", "GVNIC", "VIRTIO_SCSI_MULTIQUEUE", "SEV_SNP_CAPABLE", "TDX_CAPABLE", "SEV_CAPABLE", "SEV_LIVE_MIGRATABLE_V2"])
        XCTAssertEqual(image["storageLocations"] as? [String], ["asia-southeast1"])
        // Secure Boot keys: base64 of openssl's DER, X509.
        let initial = try XCTUnwrap(image["shieldedInstanceInitialState"] as? [String: Any])
        let pk = try XCTUnwrap(initial["pk"] as? [String: String])
        XCTAssertEqual(pk["fileType"], "X509")
        XCTAssertEqual(pk["content"], Base64.encode(try derOf("\(certs)/PK.crt")))
        XCTAssertEqual((initial["keks"] as? [[String: String]])?.first?["content"], Base64.encode(try derOf("\(certs)/KEK.crt")))
        XCTAssertEqual((initial["dbs"] as? [[String: String]])?.count, 1)
        // The archive went into the image and then out of the bucket (no --keep-upload).
        XCTAssertEqual(image["archiveSizeBytes"] as? String != "0", true)
        XCTAssertEqual(try objectNames(), [])

        let firewall = try XCTUnwrap(state["firewalls"]?["cvm-gcp-ingress"])
        XCTAssertEqual(firewall["targetTags"] as? [String], ["cvm-gcp"])
        XCTAssertEqual(firewall["sourceRanges"] as? [String], ["0.0.0.0/0"])
        let allowed = try XCTUnwrap(firewall["allowed"] as? [[String: Any]])
        XCTAssertEqual(allowed.count, 1)
        XCTAssertEqual(allowed[0]["IPProtocol"] as? String, "tcp")
        XCTAssertEqual(allowed[0]["ports"] as? [String], ["8000", "80", "443"])

        let instanceBody = try recordedBody("compute.instances.insert")
        XCTAssertEqual((instanceBody["confidentialInstanceConfig"] as? [String: String])?["confidentialInstanceType"], "SEV_SNP")
        XCTAssertEqual(instanceBody["minCpuPlatform"] as? String, "AMD Milan")
        XCTAssertEqual(instanceBody["machineType"] as? String, "zones/asia-southeast1-b/machineTypes/n2d-standard-2")
        XCTAssertEqual((instanceBody["scheduling"] as? [String: Any])?["onHostMaintenance"] as? String, "TERMINATE")
        XCTAssertEqual(instanceBody["shieldedInstanceConfig"] as? [String: Bool],
                       ["enableSecureBoot": true, "enableVtpm": true, "enableIntegrityMonitoring": true])
        XCTAssertEqual((instanceBody["tags"] as? [String: [String]])?["items"], ["cvm-gcp"])
        XCTAssertEqual((instanceBody["metadata"] as? [String: Any]).flatMap { $0["items"] as? [[String: String]] },
                       [["key": "serial-port-enable", "value": "TRUE"]])
        let disks = try XCTUnwrap(instanceBody["disks"] as? [[String: Any]])
        XCTAssertEqual(disks.count, 2)
        XCTAssertEqual((disks[0]["initializeParams"] as? [String: String])?["sourceImage"], "projects/\(project)/global/images/cvm-gcp-image")
        XCTAssertEqual((disks[1]["initializeParams"] as? [String: String])?["diskType"], "zones/asia-southeast1-b/diskTypes/pd-balanced")
        XCTAssertEqual((disks[1]["initializeParams"] as? [String: String])?["diskSizeGb"], "20")
        let nat = (instanceBody["networkInterfaces"] as? [[String: Any]])?.first?["accessConfigs"] as? [[String: String]]
        XCTAssertEqual(nat?.first?["type"], "ONE_TO_ONE_NAT")
        XCTAssertNotNil(state["disks"]?["cvm-gcp-data"])

        // Every request passed the discovery check and carried an issued token; Operations
        // took two polls each (PENDING → RUNNING → DONE), through the zone and global endpoints.
        try assertCleanTraffic()
        let ids = compute.requests.compactMap { $0["id"] as? String }
        let mutations = ids.filter { $0.hasSuffix(".insert") || $0.hasSuffix(".delete") }
        XCTAssertEqual(mutations, ["compute.images.insert", "compute.firewalls.insert", "compute.instances.insert"])
        XCTAssertEqual(ids.filter { $0 == "compute.globalOperations.wait" }.count, 4)
        XCTAssertEqual(ids.filter { $0 == "compute.zoneOperations.wait" }.count, 2)
        for insert in compute.requests where (insert["id"] as? String)?.hasSuffix(".insert") == true {
            XCTAssertEqual(((insert["query"] as? [String: [String]])?["requestId"])?.count, 1, "inserts carry a requestId")
        }

        // A rerun changes nothing: no upload, no mutating call, same IP.
        let uploadedBefore = try proxy.stats()["bytes_in"] as? Int
        let before = compute.requests.count
        let again = try deploy(r)
        XCTAssertEqual(again.artifact.publicIP, ip)
        XCTAssertEqual(try proxy.stats()["bytes_in"] as? Int, uploadedBefore)
        let rerun = compute.requests.dropFirst(before)
        XCTAssertFalse(rerun.isEmpty)
        XCTAssertTrue(rerun.allSatisfy { $0["method"] as? String == "GET" }, "\(rerun.map { $0["id"] ?? "" })")

        // A stopped instance of this disk is started again, not replaced.
        _ = try FakeCompute.fetch(compute.base + "/harness-config", method: "POST", body: Data(#"{"instance_status": {"cvm-gcp": "TERMINATED"}}"#.utf8))
        let beforeStart = compute.requests.count
        XCTAssertEqual(try deploy(r).artifact.publicIP, ip)
        let started = compute.requests.dropFirst(beforeStart).compactMap { $0["id"] as? String }.filter { !$0.hasSuffix(".get") && !$0.hasSuffix(".wait") }
        XCTAssertEqual(started, ["compute.instances.start"])
        XCTAssertEqual(try compute.state()["instances"]?["cvm-gcp"]?["status"] as? String, "RUNNING")

        // Cleanup leaves nothing, in order; a second cleanup finds nothing and is fine.
        let removed = try cleanup()
        XCTAssertEqual(removed.removed, ["instance cvm-gcp", "firewall cvm-gcp-ingress", "image cvm-gcp-image"])
        let after = try compute.state()
        for (kind, items) in after { XCTAssertTrue(items.isEmpty, "\(kind) left: \(items.keys)") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: r.artifactPath))
        let second = try cleanup(zone: "asia-southeast1-b")
        XCTAssertEqual(second.removed, [])
        XCTAssertEqual(Set(second.alreadyGone), ["instance cvm-gcp", "firewall cvm-gcp-ingress", "image cvm-gcp-image"])
        try assertCleanTraffic()
    }

    func testTDXOnC3KeepsUploadAndNewDiskReplacesImageAfterUpload() throws {
        try start()
        let disk = try makeDisk("tdx.raw", size: 5 << 20)
        let r = try request(disk: disk, vm: "tdx-vm", zone: "us-central1-a", vmType: "c3-standard-4", ports: "")
        let first = try deploy(r, options(keepUpload: true))
        XCTAssertNotNil(first.artifact.publicIP)
        let body = try recordedBody("compute.instances.insert")
        XCTAssertEqual((body["confidentialInstanceConfig"] as? [String: String])?["confidentialInstanceType"], "TDX")
        XCTAssertNil(body["minCpuPlatform"], "AMD Milan is for SEV-SNP only")
        XCTAssertEqual((body["disks"] as? [Any])?.count, 1, "no data disk asked for")
        XCTAssertEqual(try compute.state()["images"]?["tdx-vm-image"]?["storageLocations"] as? [String], ["us-central1"])
        XCTAssertNil(try compute.state()["images"]?["tdx-vm-image"]?["shieldedInstanceInitialState"])

        // --keep-upload: the archive stays, and it is what `convert` makes of the disk.
        let digest = hexString(try SHA256.hash(fileAt: disk))
        let object = "tdx-vm-\(digest.prefix(12)).tar.gz"
        XCTAssertEqual(try objectNames(), [object])
        let copy = dir.appendingPathComponent("copy.tar.gz").path
        _ = try harness.download(object, to: copy)
        let reference = dir.appendingPathComponent("reference.tar.gz").path
        _ = try DiskConversion.run(input: disk, output: reference, format: .tarGz, overwrite: true,
                                   options: WriterOptions(compressionLevel: 6, timestamp: 0))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: reference)))

        // Another disk and another port: uploaded first, then the old image goes and the new one
        // comes, the firewall is patched, the instance replaced.
        try writeBlock(disk, seed: 99)
        let bytesBefore = try proxy.stats()["bytes_in"] as? Int ?? 0
        let before = compute.requests.count
        var changed = r
        changed.additionalPorts = [PortRange(8443)]
        _ = try deploy(changed, options(keepUpload: true))
        XCTAssertGreaterThan(try proxy.stats()["bytes_in"] as? Int ?? 0, bytesBefore, "the new disk was uploaded")
        let ids = compute.requests.dropFirst(before).compactMap { $0["id"] as? String }
            .filter { !$0.hasSuffix("Operations.wait") && !$0.hasSuffix(".get") }
        XCTAssertEqual(ids, ["compute.images.delete", "compute.images.insert", "compute.firewalls.patch",
                             "compute.instances.delete", "compute.instances.insert"])
        XCTAssertEqual((try compute.state()["firewalls"]?["tdx-vm-ingress"]?["allowed"] as? [[String: Any]])?.first?["ports"] as? [String],
                       ["8000", "8443"])
        let newDigest = hexString(try SHA256.hash(fileAt: disk))
        let labels = try compute.state()["images"]?["tdx-vm-image"]?["labels"] as? [String: String]
        XCTAssertEqual(labels?["cvm-disk-sha256"], String(newDigest.prefix(12)))
        XCTAssertEqual(Set(try objectNames()), [object, "tdx-vm-\(newDigest.prefix(12)).tar.gz"])
        try assertCleanTraffic()

        // cleanup also removes the kept archives.
        let removed = try cleanup("tdx-vm")
        XCTAssertEqual(removed.removed.filter { $0.hasPrefix("object ") }.count, 2, "\(removed.removed)")
        XCTAssertEqual(try objectNames(), [])
        for (kind, items) in try compute.state() { XCTAssertTrue(items.isEmpty, "\(kind) left: \(items.keys)") }
    }

    func testMatrixErrorBeforeAnyRequest() throws {
        try start()
        let disk = try makeDisk("m.raw", size: 1 << 20)
        for (vmType, zone, expected) in [("n2d-standard-2", "europe-west1-b", "not in zone 'europe-west1-b'"),
                                         ("e2-standard-2", "us-central1-a", "not a confidential-VM type"),
                                         ("c3-standard-4", "europe-west3-a", "TDX capable in")] {
            XCTAssertThrowsError(try deploy(try request(disk: disk, zone: zone, vmType: vmType))) { error in
                let e = error as? CVMError
                XCTAssertEqual(e?.kind, .usage)
                XCTAssertTrue(e?.message.contains(expected) == true, e?.message ?? "\(error)")
            }
        }
        XCTAssertEqual(compute.requests.count, 0)
        XCTAssertEqual(try proxy.stats()["token_requests"] as? Int, 0, "not even a token was asked for")
        XCTAssertEqual(try objectNames(), [])
    }

    func testDryRunMutatesNothingAndNamesEachOperation() throws {
        try start()
        let disk = try makeDisk("dry.raw", size: 2 << 20)
        let outcome = try deploy(try request(disk: disk, dataDisk: 10, dryRun: true))
        XCTAssertTrue(outcome.dryRun)
        XCTAssertNil(outcome.artifactPath)
        let operations = outcome.plan.filter(\.mutating).map(\.operation)
        XCTAssertEqual(operations, ["storage.objects.insert", "compute.images.insert", "compute.firewalls.insert",
                                    "compute.instances.insert", "storage.objects.delete"])
        let instance = try XCTUnwrap(outcome.plan.first { $0.operation == "compute.instances.insert" })
        XCTAssertEqual(instance.parameters["confidentialInstanceType"], "SEV_SNP")
        XCTAssertEqual(instance.parameters["minCpuPlatform"], "AMD Milan")
        XCTAssertTrue(instance.endpoint.hasPrefix(compute.endpoint + "projects/\(project)/zones/asia-southeast1-b/instances"), instance.endpoint)
        // Reads only; nothing made, nothing uploaded, no artifact.
        XCTAssertTrue(compute.requests.allSatisfy { $0["method"] as? String == "GET" })
        for (kind, items) in try compute.state() { XCTAssertTrue(items.isEmpty, "\(kind): \(items.keys)") }
        XCTAssertEqual(try proxy.stats()["bytes_in"] as? Int, 0)
        XCTAssertEqual(try objectNames(), [])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("_artifacts").path))
        try assertCleanTraffic()

        // cleanup --dry-run on a deployed VM lists, and deletes nothing.
        _ = try deploy(try request(disk: disk))
        let listed = try cleanup(dryRun: true)
        XCTAssertEqual(listed.removed, ["instance cvm-gcp", "firewall cvm-gcp-ingress", "image cvm-gcp-image"])
        XCTAssertEqual(listed.plan.filter(\.mutating).map(\.operation), ["compute.instances.delete", "compute.firewalls.delete", "compute.images.delete"])
        XCTAssertEqual(try compute.state()["instances"]?.count, 1)
    }

    /// Faults on the token endpoint, the upload (dropped connections, 503, 429, a chunk whose
    /// answer is lost, a 500 on session start) and on operation polls (503, 429): the deploy
    /// completes and the image holds the right archive.
    func testUploadAndOperationPollingThroughFaults() throws {
        try start(faults: true)
        let disk = try makeDisk("f.raw", size: 4 << 20, randomBytes: 3 << 20)
        var o = options(keepUpload: true)
        o.upload.chunkSize = 256 << 10
        let outcome = try deploy(try request(disk: disk, vmType: "n2d-standard-4"), o)
        XCTAssertNotNil(outcome.artifact.publicIP)
        let faults = try XCTUnwrap(try compute.stats()["faults"] as? [String: Int])
        XCTAssertEqual(faults["503"], 2)
        XCTAssertEqual(faults["429"], 1)
        // The insert whose answer was lost was retried with its requestId: the same Operation.
        XCTAssertEqual(faults["insert503"], 1)
        XCTAssertEqual(try compute.stats()["replayed"] as? Int, 1)
        XCTAssertEqual(try compute.state()["images"]?.count, 1)
        let uploadFaults = try XCTUnwrap(try proxy.stats()["faults"] as? [String: Int])
        for kind in ["token503", "start500", "drop", "503", "429", "drop-after-forward"] {
            XCTAssertEqual(uploadFaults[kind], 1, "upload fault \(kind) injected: \(uploadFaults)")
        }
        try assertCleanTraffic()
        XCTAssertEqual(try compute.state()["instances"]?.count, 1)
        // Nothing lost or doubled: the stored archive is what `convert` makes.
        let object = try XCTUnwrap(outcome.artifact.resources["object"])
        let copy = dir.appendingPathComponent("copy.tar.gz").path
        _ = try harness.download(object, to: copy)
        let reference = dir.appendingPathComponent("reference.tar.gz").path
        _ = try DiskConversion.run(input: disk, output: reference, format: .tarGz, overwrite: true,
                                   options: WriterOptions(compressionLevel: 6, timestamp: 0))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: reference)))
    }

    func testOperationErrorIsOneClearLine() throws {
        try start()
        let disk = try makeDisk("e.raw", size: 1 << 20)
        // An unlisted type goes ahead as SEV-SNP; Compute refuses it in the Operation.
        var r = try request(disk: disk, vmType: "n2-standard-4")
        r.allowUnlisted = true
        XCTAssertThrowsError(try deploy(r)) { error in
            let m = (error as? CVMError)?.message ?? "\(error)"
            XCTAssertTrue(m.hasPrefix("GCE compute.instances.insert failed (operation operation-"), m)
            XCTAssertTrue(m.contains("UNSUPPORTED_OPERATION: SEV_SNP is not supported for machine type n2-standard-4"), m)
            XCTAssertTrue(m.contains("cvm-cli matrix --cloud gcp"), m)
            XCTAssertFalse(m.contains("\n"))
        }
        try assertCleanTraffic()
    }

    /// An Operation that never finishes ends at the deadline with one line saying what to do.
    func testOperationDeadline() throws {
        try start()
        _ = try FakeCompute.fetch(compute.base + "/harness-config", method: "POST", body: Data(#"{"stuck": true}"#.utf8))
        let disk = try makeDisk("s.raw", size: 1 << 20)
        var o = options()
        o.readyDeadline = 1.5
        let started = Date()
        XCTAssertThrowsError(try deploy(try request(disk: disk), o)) { error in
            let m = (error as? CVMError)?.message ?? "\(error)"
            XCTAssertTrue(m.hasPrefix("GCE compute.images.insert: gave up waiting for operation operation-"), m)
            XCTAssertTrue(m.contains("still RUNNING") && m.contains("rerun"), m)
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 30)
        let waits = compute.requests.filter { $0["id"] as? String == "compute.globalOperations.wait" }.count
        XCTAssertGreaterThan(waits, 1)
        XCTAssertLessThan(waits, 40, "paused between polls that came back at once")
    }

    /// The referee must be able to fail: it rejects what the API would, and accepts our bodies.
    func testDiscoveryCheckRejectsBadBodiesAndMissingTokens() throws {
        try start()
        let instance = GCPComputeBodies.instance(vm: "v", zone: "us-central1-a", project: project, vmType: "c3-standard-4",
                                                 tee: .tdx, image: "v-image", diskSHA256: String(repeating: "a", count: 64), dataDiskGiB: 5)
        XCTAssertEqual(try compute.validate("compute.instances.insert", instance), [])
        let image = GCPComputeBodies.image(name: "v-image", vm: "v", bucket: "b", object: "o.tar.gz", diskSHA256: String(repeating: "b", count: 64),
                                           region: "us-central1", certs: SecureBootCerts(pk: [0x30, 0x03, 0x30, 0x01, 0], kek: [[0x30, 0]], db: [[0x30, 0]]))
        XCTAssertEqual(try compute.validate("compute.images.insert", image), [])
        XCTAssertEqual(try compute.validate("compute.firewalls.insert", GCPComputeBodies.firewall(name: "v-ingress", vm: "v", ports: [PortRange(80)])), [])

        var bad = instance
        bad["confidentialInstanceConfig"] = ["confidentialInstanceType": "SNP"]
        bad["bootDisk"] = true
        bad["status"] = "RUNNING"
        bad["disks"] = [["initializeParams": ["diskSizeGb": "ten"]]]
        bad["name"] = nil
        let errors = try compute.validate("compute.instances.insert", bad)
        XCTAssertTrue(errors.contains { $0.contains("confidentialInstanceType: 'SNP' is not one of") }, "\(errors)")
        XCTAssertTrue(errors.contains { $0.contains("body.bootDisk: unknown field") }, "\(errors)")
        XCTAssertTrue(errors.contains { $0.contains("body.status: output-only") }, "\(errors)")
        XCTAssertTrue(errors.contains { $0.contains("diskSizeGb: expected an int64") }, "\(errors)")
        XCTAssertTrue(errors.contains { $0.contains("body.name: required") }, "\(errors)")

        // No token, or one the token server never issued: 401.
        let url = compute.endpoint + "projects/\(project)/global/images/x"
        XCTAssertEqual(try FakeCompute.status(url), 401)
        XCTAssertEqual(try FakeCompute.status(url, headers: ["Authorization": "Bearer ya29.made-up"]), 401)
        XCTAssertEqual(try compute.stats()["unauthorized"] as? Int, 2)
    }

    /// The command line: IP last and alone on stdout, --json, cleanup gcp, one-line errors, and
    /// no token, assertion or key line in any output.
    func testCommandLine() throws {
        try start()
        let cli = try GCSHarness.cliBinary()
        // A GCP tar.gz goes as is (the other tests send raw disks, converted on the fly).
        let raw = try makeDisk("cli.raw", size: 2 << 20)
        let disk = dir.appendingPathComponent("cli.tar.gz").path
        _ = try DiskConversion.run(input: raw, output: disk, format: .tarGz, overwrite: true,
                                   options: WriterOptions(compressionLevel: 1, timestamp: 0))
        let work = dir.appendingPathComponent("work").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        func run(_ args: [String]) throws -> GCSHarness.Output {
            try GCSHarness.run(["bash", "-c", "cd \"$1\" && shift && exec \"$@\"", "_", work, cli] + args, environment: env, allowFailure: true)
        }
        let deploy = try run(["deploy-gcp", "--project_id", project, "--bucket", GCSHarness.bucket, "--disk", disk,
                              "--vm_name", "cli-vm", "--region", "us-central1-b", "--vm-type", "n2d-standard-2",
                              "--additional_ports", "8080,9000-9010", "--keep-upload"])
        XCTAssertEqual(deploy.status, 0, deploy.stderr)
        let ip = deploy.stdout.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(ip.hasPrefix("203.0.113."), deploy.stdout)
        XCTAssertEqual(deploy.stdout, ip + "\n", "only the IP on stdout")
        let artifact = try XCTUnwrap(try DeployArtifact.read(work + "/_artifacts/gcp_cli-vm.json"))
        XCTAssertEqual(artifact.publicIP, ip)
        // disk_sha256 is the virtual disk's (the raw content padded to the archive's GiB), by sha256sum.
        let padded = dir.appendingPathComponent("padded.raw").path
        try GCSHarness.run(["cp", raw, padded])
        try GCSHarness.run(["truncate", "-s", "1G", padded])
        let expected = try GCSHarness.run(["sha256sum", padded]).stdout.prefix(64)
        XCTAssertEqual(artifact.diskSHA256, String(expected))
        let object = try XCTUnwrap(artifact.resources["object"])
        XCTAssertEqual(object, "cli-vm-\(expected.prefix(12)).tar.gz")
        let copy = dir.appendingPathComponent("copy.tar.gz").path
        _ = try harness.download(object, to: copy)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), try Data(contentsOf: URL(fileURLWithPath: disk)), "sent byte for byte")
        XCTAssertEqual(try compute.state()["firewalls"]?["cli-vm-ingress"].flatMap { ($0["allowed"] as? [[String: Any]])?.first?["ports"] as? [String] },
                       ["8000", "8080", "9000-9010"])

        let json = try run(["--json", "deploy-gcp", "--project-id", project, "--bucket", GCSHarness.bucket, "--disk", disk,
                            "--vm-name", "cli-vm", "--region", "us-central1-b", "--vm_type", "n2d-standard-2",
                            "--additional-ports", "8080,9000-9010", "--keep_upload"])
        XCTAssertEqual(json.status, 0, json.stderr)
        let answer = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(answer["public_ip"] as? String, ip)

        let dry = try run(["deploy-gcp", "--bucket", GCSHarness.bucket, "--disk", disk, "--vm_name", "other-vm",
                           "--region", "us-central1-b", "--vm_type", "c3-standard-8", "--dry-run", "--verbose"])
        XCTAssertEqual(dry.status, 0, dry.stderr)
        XCTAssertTrue(dry.stdout.contains("compute.instances.insert") && dry.stdout.contains("confidentialInstanceType=TDX"), dry.stdout)
        XCTAssertTrue(dry.stderr.contains("HTTP GET \(compute.endpoint)projects/"), "--verbose logs each request: \(dry.stderr)")

        let bad = try run(["deploy-gcp", "--bucket", GCSHarness.bucket, "--disk", disk, "--region", "us-central1", "--vm_type", "c3-standard-4"])
        XCTAssertEqual(bad.status, 64, bad.stderr)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
        XCTAssertTrue(bad.stderr.hasPrefix("cvm-cli: error: "), bad.stderr)
        let upper = try run(["deploy-gcp", "--bucket", GCSHarness.bucket, "--disk", disk, "--vm_name", "Big-VM",
                             "--region", "us-central1-b", "--vm_type", "c3-standard-4"])
        XCTAssertEqual(upper.status, 64, upper.stderr)
        XCTAssertTrue(upper.stderr.contains("--vm_name 'Big-VM'"), upper.stderr)

        let clean = try run(["cleanup", "gcp", "--vm_name", "cli-vm", "--json", "--verbose"])
        XCTAssertEqual(clean.status, 0, clean.stderr)
        let removed = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(clean.stdout.utf8)) as? [String: Any])?["removed"] as? [String])
        XCTAssertEqual(removed.first, "instance cli-vm")
        XCTAssertTrue(removed.contains { $0.hasPrefix("object gs://\(GCSHarness.bucket)/cli-vm-") }, "\(removed)")
        for (kind, items) in try compute.state() { XCTAssertTrue(items.isEmpty, "\(kind) left: \(items.keys)") }

        // Secrets: tokens, JWT assertions and key lines appear nowhere.
        let stats = try proxy.stats()
        let secrets = (stats["tokens"] as? [String] ?? []) + (stats["assertions"] as? [String] ?? [])
            + harness.privateKeyPEM.split(separator: "\n").filter { !$0.hasPrefix("-----") }.map(String.init)
        XCTAssertFalse(secrets.isEmpty)
        for output in [deploy, json, dry, bad, upper, clean] {
            for secret in secrets where !secret.isEmpty {
                XCTAssertFalse(output.stdout.contains(secret) || output.stderr.contains(secret), "a secret leaked")
            }
        }
        try assertCleanTraffic()
    }

    // MARK: helpers

    func assertCleanTraffic(file: StaticString = #filePath, line: UInt = #line) throws {
        let stats = try compute.stats()
        XCTAssertEqual((stats["violations"] as? [Any])?.count, 0, "discovery violations: \(stats["violations"] ?? "")", file: file, line: line)
        XCTAssertEqual(stats["unauthorized"] as? Int, 0, file: file, line: line)
    }

    /// The body of the last request with this method id.
    func recordedBody(_ id: String) throws -> [String: Any] {
        try XCTUnwrap(compute.requests.last { $0["id"] as? String == id }?["body"] as? [String: Any], "no \(id) recorded")
    }

    /// Objects in the test bucket, read from the emulator directly.
    func objectNames() throws -> [String] {
        let r = try GCSHarness.run(["python3", "-c", """
            import json, sys, urllib.request
            d = json.load(urllib.request.urlopen(sys.argv[1] + "/storage/v1/b/" + sys.argv[2] + "/o"))
            print(json.dumps(sorted(i["name"] for i in d.get("items", []))))
            """, harness.emulatorEndpoint, GCSHarness.bucket])
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String])
    }

    func makeDisk(_ name: String, size: UInt64, randomBytes: Int = 256 << 10) throws -> String {
        let path = dir.appendingPathComponent(name).path
        var bytes = [UInt8](repeating: 0, count: Int(size))
        let data = TestData.pseudoRandomBytes(count: randomBytes / 2, seed: UInt64(name.count))
        bytes.replaceSubrange(0..<data.count, with: data)
        bytes.replaceSubrange(Int(size) - data.count..<Int(size), with: data)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func writeBlock(_ path: String, seed: UInt64) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seek(toOffset: 1 << 20)
        handle.write(Data(TestData.pseudoRandomBytes(count: 64 << 10, seed: seed)))
        try handle.close()
        // A later mtime whatever the clock's resolution: the deploy sees a changed file.
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(5)], ofItemAtPath: path)
    }

    /// PK (DER), KEK and db (PEM) made by openssl.
    func makeCerts() throws -> String {
        let certs = dir.appendingPathComponent("certs").path
        try FileManager.default.createDirectory(atPath: certs, withIntermediateDirectories: true)
        for (cn, file, der) in [("PK", "PK.crt", true), ("KEK", "KEK.crt", false), ("db", "db.crt", false)] {
            try GCSHarness.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(certs)/\(cn).key",
                                "-subj", "/CN=cvm test \(cn)", "-days", "2", "-out", "\(certs)/\(cn).pem"])
            try GCSHarness.run(["openssl", "x509", "-in", "\(certs)/\(cn).pem", "-outform", der ? "DER" : "PEM", "-out", "\(certs)/\(file)"])
            try FileManager.default.removeItem(atPath: "\(certs)/\(cn).key")
            try FileManager.default.removeItem(atPath: "\(certs)/\(cn).pem")
        }
        return certs
    }

    func derOf(_ path: String) throws -> [UInt8] {
        let out = dir.appendingPathComponent("der-\(UUID().uuidString)").path
        try GCSHarness.run(["openssl", "x509", "-in", path, "-inform", path.hasSuffix("PK.crt") ? "DER" : "PEM", "-outform", "DER", "-out", out])
        return Array(try Data(contentsOf: URL(fileURLWithPath: out)))
    }
}
