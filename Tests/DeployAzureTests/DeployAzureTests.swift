import AzureTestSupport
import CVMSupport
import CVMTestData
import Foundation
import XCTest

/// `cvm-cli deploy-azure` and `cleanup azure` as a user runs them, against `Scripts/arm_server.py`
/// (a fake Entra token endpoint + ARM that validates every PUT body with azure-mgmt-compute /
/// -network / -storage models) and the SharedKey-checking page-blob endpoint for the upload.
final class DeployAzureTests: XCTestCase {
    nonisolated(unsafe) static var blobs: PageBlobServer?
    nonisolated(unsafe) static var arm: Process?
    nonisolated(unsafe) static var armPort: UInt16 = 0
    nonisolated(unsafe) static var startError: Error?
    static let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    static let clientID = "0f4e8b1c-cvm-cli-test"
    static let subscription = "00000000-1111-2222-3333-444444444444"
    nonisolated(unsafe) static var secret = ""
    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts")

    override class func setUp() {
        do {
            let check = try PageBlobServer.run(["python3", "-c", "import azure.mgmt.compute, azure.mgmt.network, azure.mgmt.storage"], allowFailure: true)
            guard check.status == 0 else {
                throw CVMError.io("azure-mgmt-compute/-network/-storage are not installed (scripts/install-deps.sh --with-test-tools): \(check.stderr.suffix(300))")
            }
            let b = try PageBlobServer()
            blobs = b
            secret = "s3cr3t~" + UUID().uuidString
            armPort = try PageBlobServer.freePort()
            arm = try LocalServers.startPython(
                script: scripts.appendingPathComponent("arm_server.py").path,
                [String(armPort), tenant, clientID, secret, subscription, "\(b.endpoint)/\(b.account)/", b.key],
                port: armPort, log: b.directory.appendingPathComponent("arm.log"))
        } catch {
            startError = error
        }
    }

    override class func tearDown() {
        if let arm, arm.isRunning { arm.terminate(); arm.waitUntilExit() }
        blobs?.stop()
    }

    var armURL: String { "http://127.0.0.1:\(Self.armPort)" }
    private var work: URL!

    override func setUpWithError() throws {
        if let e = Self.startError { throw e }
        work = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-deploy-azure-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        try config(["polls": 2, "retry_after": "0", "throttle_every": 0, "poll_503_every": 0,
                    "blob_endpoint": "\(Self.blobs!.endpoint)/\(Self.blobs!.account)/"])
    }

    override func tearDownWithError() throws {
        if let work { try? FileManager.default.removeItem(at: work) }
    }

    // MARK: helpers

    func environment(secret: String? = nil) -> [String: String] {
        [
            "AZURE_TENANT_ID": Self.tenant, "AZURE_CLIENT_ID": Self.clientID, "AZURE_CLIENT_SECRET": secret ?? Self.secret,
            "AZURE_SUBSCRIPTION_ID": Self.subscription, "AZURE_AUTHORITY_HOST": armURL,
            "AZURE_RESOURCE_MANAGER_ENDPOINT": armURL,
            "HOME": work.path, "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
        ]
    }

    func cli(_ args: [String], secret: String? = nil) throws -> PageBlobServer.Output {
        guard let binary = TestProcess.cvmCLI() else { throw CVMError.io("cvm-cli is not built next to the tests") }
        return try PageBlobServer.run(["sh", "-c", "cd \"$1\" && shift && exec \"$@\"", "sh", work.path, binary] + args,
                                      environment: environment(secret: secret), allowFailure: true)
    }

    func admin(_ path: String, _ body: Any? = nil) throws -> [String: Any] {
        let script = "import urllib.request,sys; d=sys.argv[2].encode() if len(sys.argv)>2 else None; print(urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=d, method='POST' if d else 'GET')).read().decode())"
        var args = ["python3", "-c", script, armURL + path]
        if let body { args.append(String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self)) }
        let r = try PageBlobServer.run(args)
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
    }

    func config(_ values: [String: Any]) throws { _ = try admin("/_admin/config", values) }
    func resources() throws -> [String] { try admin("/_admin/state")["resources"] as! [String] }
    func stats() throws -> [String: Any] { try admin("/_admin/stats") }

    /// A small raw disk with data at the start and the end (the middle is a hole).
    func makeDisk(_ name: String = "disk.raw", seed: UInt64 = 1) throws -> String {
        let path = work.appendingPathComponent(name).path
        var bytes = [UInt8](repeating: 0, count: 3 << 20)
        let data = TestData.pseudoRandomBytes(count: 256 << 10, seed: seed)
        bytes.replaceSubrange(0..<data.count, with: data)
        bytes.replaceSubrange((bytes.count - data.count)..<bytes.count, with: data)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func base(_ rg: String, _ sa: String = "cvmtestacct", _ gallery: String = "cvmgallery") -> [String] {
        ["--resource_group", rg, "--storage_account", sa, "--gallery_name", gallery]
    }

    func assertNoSecrets(_ outputs: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let text = outputs.joined(separator: "\n")
        XCTAssertFalse(text.contains(Self.secret), "the client secret leaked", file: file, line: line)
        XCTAssertFalse(text.contains(Self.blobs!.key), "the storage key leaked", file: file, line: line)
        let log = (try? String(contentsOf: Self.blobs!.directory.appendingPathComponent("arm.log"), encoding: .utf8)) ?? ""
        _ = log
        for token in try issuedTokens() {
            XCTAssertFalse(text.contains(token), "a bearer token leaked", file: file, line: line)
        }
        for sig in (try Self.blobs!.stats()["signatures"] as? [String] ?? []).prefix(50) {
            XCTAssertFalse(text.contains(sig), "a SharedKey signature leaked", file: file, line: line)
        }
    }

    /// The tokens the fake issued (read from its bodies log is not possible: ask it).
    func issuedTokens() throws -> [String] { try admin("/_admin/tokens")["tokens"] as? [String] ?? [] }

    // MARK: tests

    func testBodyCheckerRejectsUnknownAndMissingProperties() throws {
        let bad = try admin("/_admin/check", ["type": "virtualMachines", "body": ["location": "eastus", "properties": ["hardwareProfile": ["vmSize": "x"], "securityProfil": [:]]]])
        XCTAssertNotNil(bad["problem"] as? String, "an unknown property must be refused")
        let noLocation = try admin("/_admin/check", ["type": "galleries", "body": ["properties": [:]]])
        XCTAssertNotNil(noLocation["problem"] as? String, "a missing required location must be refused")
        let ok = try admin("/_admin/check", ["type": "publicIPAddresses", "body": ["location": "eastus", "sku": ["name": "Standard"], "properties": ["publicIPAllocationMethod": "Static"]]])
        XCTAssertNil(ok["problem"] as? String)
    }

    func testDeployRerunAndCleanup() throws {
        let disk = try makeDisk()
        let certs = try makeCerts()
        try config(["polls": 2, "retry_after": "0", "throttle_every": 7, "poll_503_every": 5])
        let rg = "rg-e2e"
        // Missing resource group without --create-missing: a clear error, nothing created, nothing uploaded.
        let missing = try cli(["deploy-azure", "--disk", disk, "--vm_name", "cvm-e2e", "--location", "eastus", "--vm_type", "Standard_DC2as_v5"] + base(rg))
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("resource group 'rg-e2e' does not exist") && missing.stderr.contains("--create-missing"), missing.stderr)
        XCTAssertEqual(missing.stderr.split(separator: "\n").count, 1, missing.stderr)

        let first = try cli(["deploy-azure", "--disk", disk, "--vm_name", "cvm-e2e", "--location", "eastus", "--vm_type", "Standard_DC2as_v5",
                             "--additional_ports", "80,443,9000-9010", "--data_disk_size", "4", "--secure-boot-certs", certs,
                             "--create-missing", "--verbose"] + base(rg))
        XCTAssertEqual(first.status, 0, first.stderr)
        let lines = first.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, first.stdout)
        let ip = String(lines.last ?? "")
        XCTAssertTrue(ip.hasPrefix("20.30.40."), ip)
        var s = try stats()
        XCTAssertEqual((s["rejected"] as? [String]) ?? [], [], "bodies refused by the SDK models")
        XCTAssertGreaterThan(s["throttled"] as? Int ?? 0, 0, "429s were injected")
        let state = try resources()
        let sub = "/subscriptions/\(Self.subscription)/resourceGroups/\(rg)"
        for suffix in ["/providers/Microsoft.Compute/virtualMachines/cvm-e2e", "/providers/Microsoft.Network/networkInterfaces/cvm-e2e-nic",
                       "/providers/Microsoft.Network/networkSecurityGroups/cvm-e2e-nsg", "/providers/Microsoft.Network/publicIPAddresses/cvm-e2e-ip",
                       "/providers/Microsoft.Network/virtualNetworks/cvm-e2e-vnet", "/providers/Microsoft.Compute/galleries/cvmgallery/images/cvm-e2e-def",
                       "/providers/Microsoft.Compute/galleries/cvmgallery/images/cvm-e2e-def/versions/1.0.0",
                       "/providers/Microsoft.Compute/disks/cvm-e2e-osdisk", "/providers/Microsoft.Compute/disks/cvm-e2e-datadisk"] {
            XCTAssertTrue(state.contains(sub + suffix), "missing \(suffix) in \(state)")
        }
        let objects = try admin("/_admin/state")["objects"] as! [[String: Any]]
        let nsg = objects.first { ($0["id"] as? String)?.hasSuffix("cvm-e2e-nsg") == true }!
        let rules = ((nsg["properties"] as! [String: Any])["securityRules"] as! [[String: Any]])
        XCTAssertEqual(rules.map { $0["name"] as! String }, ["attestation_agent", "Workload_80", "Workload_443", "Workload_9000-9010"])
        XCTAssertEqual(rules.map { ($0["properties"] as! [String: Any])["priority"] as! Int }, [100, 200, 201, 202])
        let version = objects.first { ($0["id"] as? String)?.hasSuffix("/versions/1.0.0") == true }!
        let uefi = (((version["properties"] as! [String: Any])["securityProfile"] as! [String: Any])["uefiSettings"] as! [String: Any])
        XCTAssertEqual(uefi["signatureTemplateNames"] as? [String], ["NoSignatureTemplate"])
        let pk = (uefi["additionalSignatures"] as! [String: Any])["pk"] as! [String: Any]
        XCTAssertEqual(pk["type"] as? String, "x509")
        let vm = objects.first { ($0["id"] as? String)?.hasSuffix("virtualMachines/cvm-e2e") == true }!
        let sec = (vm["properties"] as! [String: Any])["securityProfile"] as! [String: Any]
        XCTAssertEqual(sec["securityType"] as? String, "ConfidentialVM")
        // The blob holds the disk (downloaded with the SDK).
        let back = work.appendingPathComponent("back.vhd").path
        let blob = try Self.blobs!.download(container: "vhds", blob: "cvm-e2e.vhd", to: back)
        XCTAssertEqual(blob.type, "PageBlob")
        XCTAssertEqual(blob.size, (3 << 20) + 512)
        let downloaded = try Data(contentsOf: URL(fileURLWithPath: back)).prefix(3 << 20)
        XCTAssertEqual(downloaded, try Data(contentsOf: URL(fileURLWithPath: disk)))
        let artifactURL = work.appendingPathComponent("_artifacts/azure_cvm-e2e.json")
        let artifact = try JSONSerialization.jsonObject(with: Data(contentsOf: artifactURL)) as! [String: Any]
        XCTAssertEqual(artifact["public_ip"] as? String, ip)
        XCTAssertEqual((artifact["disk_sha256"] as? String)?.count, 64)
        XCTAssertEqual(artifact["region"] as? String, "eastus")
        XCTAssertEqual(artifact["tee"] as? String, "SEV-SNP")

        // Rerun: nothing is created, changed or uploaded again.
        try config(["throttle_every": 0, "poll_503_every": 0])
        let mutations = s["mutations"] as! Int
        let puts = (try Self.blobs!.stats()["ops"] as? [String: Int])?["PUT page"] ?? 0
        let again = try cli(["deploy-azure", "--disk", disk, "--vm_name", "cvm-e2e", "--vm_type", "Standard_DC2as_v5",
                             "--additional_ports", "80,443,9000-9010", "--data_disk_size", "4", "--secure-boot-certs", certs, "--json"] + base(rg))
        XCTAssertEqual(again.status, 0, again.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(json["public_ip"] as? String, ip)
        s = try stats()
        XCTAssertEqual(s["mutations"] as? Int, mutations, "a rerun must not change anything")
        XCTAssertEqual((try Self.blobs!.stats()["ops"] as? [String: Int])?["PUT page"] ?? 0, puts, "a rerun must not upload again")

        // A new disk: a new image version, the VM replaced, one version left.
        let disk2 = try makeDisk("disk2.raw", seed: 2)
        let third = try cli(["deploy-azure", "--disk", disk2, "--vm_name", "cvm-e2e", "--vm_type", "Standard_DC2as_v5"] + base(rg))
        XCTAssertEqual(third.status, 0, third.stderr)
        let versions = try resources().filter { $0.contains("/versions/") }
        XCTAssertEqual(versions.map { $0.components(separatedBy: "/").last! }, ["1.0.1"])

        // Dry-run cleanup lists, changes nothing; cleanup removes all it made, keeps RG/SA/gallery.
        let before = try resources()
        let dry = try cli(["cleanup", "azure", "--vm_name", "cvm-e2e", "--dry-run"])
        XCTAssertEqual(dry.status, 0, dry.stderr)
        XCTAssertTrue(dry.stdout.contains("would delete Microsoft.Compute/virtualMachines cvm-e2e"), dry.stdout)
        XCTAssertEqual(try resources(), before)
        let cleaned = try cli(["cleanup", "azure", "--vm-name", "cvm-e2e"])
        XCTAssertEqual(cleaned.status, 0, cleaned.stderr)
        let left = try resources()
        XCTAssertEqual(left.sorted(), [sub, sub + "/providers/Microsoft.Compute/galleries/cvmgallery",
                                       sub + "/providers/Microsoft.Storage/storageAccounts/cvmtestacct"].sorted(), cleaned.stdout)
        XCTAssertThrowsError(try Self.blobs!.download(container: "vhds", blob: "cvm-e2e.vhd", to: back))
        XCTAssertFalse(FileManager.default.fileExists(atPath: artifactURL.path))
        let nothing = try cli(["cleanup", "azure", "--vm_name", "cvm-e2e"] + base(rg))
        XCTAssertEqual(nothing.status, 0, nothing.stderr)
        XCTAssertEqual(nothing.stdout, "nothing of cvm-e2e left\n")
        XCTAssertEqual((try stats()["rejected"] as? [String]) ?? [], [])
        try assertNoSecrets([missing.stdout, missing.stderr, first.stdout, first.stderr, again.stdout, again.stderr,
                             third.stdout, third.stderr, dry.stdout, dry.stderr, cleaned.stdout, cleaned.stderr])
    }

    func testDryRunMutatesNothingAndNamesEachOperation() throws {
        let disk = try makeDisk()
        let before = try stats()["mutations"] as! Int
        let tokensBefore = try stats()["tokens"] as! Int
        let pages = (try Self.blobs!.stats()["ops"] as? [String: Int]) ?? [:]
        let dry = try cli(["deploy-azure", "--disk", disk, "--vm_name", "cvm-dry", "--location", "westeurope",
                           "--vm_type", "Standard_DC2es_v5", "--create-missing", "--dry-run"] + base("rg-dry"))
        XCTAssertEqual(dry.status, 0, dry.stderr)
        for op in ["Microsoft.Resources/resourceGroups:write", "Microsoft.Storage/storageAccounts:write",
                   "Microsoft.Compute/galleries:write", "Microsoft.Compute/galleries/images:write",
                   "Microsoft.Compute/galleries/images/versions:write", "Microsoft.Network/networkSecurityGroups:write",
                   "Microsoft.Compute/virtualMachines:write", "blob:PutPage"] {
            XCTAssertTrue(dry.stdout.contains(op), "\(op) not in the plan: \(dry.stdout)")
        }
        XCTAssertEqual(try stats()["mutations"] as? Int, before)
        XCTAssertEqual(try stats()["tokens"] as? Int, tokensBefore + 1, "one token, cached, for the whole run")
        XCTAssertEqual((try Self.blobs!.stats()["ops"] as? [String: Int]) ?? [:], pages)
        // A token about to expire (under 5 minutes left) is fetched again before the next call.
        try config(["expires_in": 200])
        defer { try? config(["expires_in": 3599]) }
        let again = try cli(["deploy-azure", "--disk", disk, "--vm_name", "cvm-dry", "--location", "westeurope",
                             "--vm_type", "Standard_DC2es_v5", "--create-missing", "--dry-run"] + base("rg-dry"))
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertGreaterThan(try stats()["tokens"] as! Int, tokensBefore + 2, "short-lived tokens are refreshed")
        XCTAssertEqual(try stats()["mutations"] as? Int, before)
        XCTAssertFalse(FileManager.default.fileExists(atPath: work.appendingPathComponent("_artifacts/azure_cvm-dry.json").path))
        try assertNoSecrets([dry.stdout, dry.stderr])
    }

    func testMatrixAndInputErrorsComeBeforeAnyRequest() throws {
        let disk = try makeDisk()
        let requests = try stats()["requests"] as! Int
        // TDX size in a region without it; SNP size unknown; bad storage account name.
        let tdx = try cli(["deploy-azure", "--disk", disk, "--location", "eastus", "--vm_type", "Standard_DC2es_v5"] + base("rg-m"))
        XCTAssertNotEqual(tdx.status, 0)
        XCTAssertTrue(tdx.stderr.contains("TDX") && tdx.stderr.contains("eastus2"), tdx.stderr)
        let size = try cli(["deploy-azure", "--disk", disk, "--vm_type", "Standard_D2s_v5"] + base("rg-m"))
        XCTAssertNotEqual(size.status, 0)
        XCTAssertTrue(size.stderr.contains("not a confidential-VM type"), size.stderr)
        let name = try cli(["deploy-azure", "--disk", disk, "--location", "eastus", "--vm_type", "Standard_DC2as_v5"] + base("rg-m", "Bad_Name"))
        XCTAssertNotEqual(name.status, 0)
        XCTAssertTrue(name.stderr.contains("--storage_account 'Bad_Name'"), name.stderr)
        for r in [tdx, size, name] { XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr) }
        XCTAssertEqual(try stats()["requests"] as? Int, requests, "no ARM request before the checks")
    }

    func testMissingPartsAndWrongSecret() throws {
        let disk = try makeDisk()
        let wrong = try cli(["deploy-azure", "--disk", disk, "--location", "eastus2", "--vm_type", "Standard_DC2es_v5"] + base("rg-x"),
                            secret: "wrong-secret-value")
        XCTAssertNotEqual(wrong.status, 0)
        XCTAssertTrue(wrong.stderr.contains("invalid_client") && wrong.stderr.contains("AZURE_CLIENT_SECRET"), wrong.stderr)
        XCTAssertFalse(wrong.stderr.contains("wrong-secret-value"), wrong.stderr)

        // A resource group made elsewhere, without the storage account: the error names it.
        let rg = "/subscriptions/\(Self.subscription)/resourceGroups/rg-nosa"
        _ = try admin("/_admin/seed", ["id": rg, "name": "rg-nosa", "location": "eastus2", "properties": ["provisioningState": "Succeeded"]])
        let noSA = try cli(["deploy-azure", "--disk", disk, "--vm_name", "cvm-miss", "--vm_type", "Standard_DC2es_v5"] + base("rg-nosa", "nosuchacct"))
        XCTAssertNotEqual(noSA.status, 0)
        XCTAssertTrue(noSA.stderr.contains("storage account 'nosuchacct' does not exist") && noSA.stderr.contains("--create-missing"), noSA.stderr)
        // A storage account in another region than the VM's: said before any upload.
        _ = try admin("/_admin/seed", ["id": rg + "/providers/Microsoft.Storage/storageAccounts/farawayacct", "name": "farawayacct",
                                       "location": "westeurope", "properties": [:]])
        let far = try cli(["deploy-azure", "--disk", disk, "--vm_name", "cvm-miss", "--vm_type", "Standard_DC2es_v5"] + base("rg-nosa", "farawayacct"))
        XCTAssertNotEqual(far.status, 0)
        XCTAssertTrue(far.stderr.contains("is in westeurope but the VM goes to eastus2"), far.stderr)
        // A gallery in another region than the VM's.
        _ = try admin("/_admin/seed", ["id": rg + "/providers/Microsoft.Storage/storageAccounts/nearacct", "name": "nearacct",
                                       "location": "eastus2", "properties": [:]])
        _ = try admin("/_admin/seed", ["id": rg + "/providers/Microsoft.Compute/galleries/fargallery", "name": "fargallery",
                                       "location": "westeurope", "properties": [:]])
        let farGallery = try cli(["deploy-azure", "--disk", disk, "--vm_name", "cvm-miss", "--vm_type", "Standard_DC2es_v5"]
                                 + base("rg-nosa", "nearacct", "fargallery"))
        XCTAssertNotEqual(farGallery.status, 0)
        XCTAssertTrue(farGallery.stderr.contains("gallery 'fargallery' is in westeurope but the VM goes to eastus2"), farGallery.stderr)
        let noGallery = try cli(["deploy-azure", "--disk", disk, "--vm_name", "cvm-miss", "--vm_type", "Standard_DC2es_v5"]
                                + base("rg-nosa", "nearacct", "nogallery"))
        XCTAssertNotEqual(noGallery.status, 0)
        XCTAssertTrue(noGallery.stderr.contains("gallery 'nogallery' does not exist"), noGallery.stderr)
        // The location defaults to the resource group's, and is checked against the matrix.
        let snp = try cli(["deploy-azure", "--disk", disk, "--vm_name", "cvm-miss", "--vm_type", "Standard_DC2as_v5"] + base("rg-nosa", "nosuchacct"))
        XCTAssertNotEqual(snp.status, 0)
        XCTAssertTrue(snp.stderr.contains("not in location 'eastus2'"), snp.stderr)
        try assertNoSecrets([wrong.stdout, wrong.stderr, noSA.stderr, far.stderr, snp.stderr])
    }

    func testFaultsOnPagesAndARMAreRidden() throws {
        let disk = try makeDisk()
        let (proxy, process) = try Self.blobs!.startFaultProxy()
        defer { process.terminate(); process.waitUntilExit() }
        // Storage endpoint behind 503/429/cut-connection faults; ARM throttles every 5th request
        // and fails every 3rd status poll with 503 + Retry-After; operations take 3 polls.
        try config(["blob_endpoint": "\(proxy)/\(Self.blobs!.account)/", "polls": 3, "throttle_every": 5, "poll_503_every": 3])
        let run = try cli(["deploy-azure", "--disk", disk, "--vm_name", "cvm-faults", "--location", "westeurope",
                           "--vm_type", "Standard_DC4es_v5", "--create-missing", "--json"] + base("rg-faults"))
        XCTAssertEqual(run.status, 0, run.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as! [String: Any]
        XCTAssertEqual((json["artifact"] as! [String: Any])["tee"] as? String, "TDX")
        let s = try stats()
        XCTAssertGreaterThan(s["throttled"] as? Int ?? 0, 0)
        XCTAssertEqual((s["rejected"] as? [String]) ?? [], [])
        let faults = try Self.blobs!.getJSON(proxy + "/_proxy/stats")
        XCTAssertFalse(faults.isEmpty, "the proxy injected no fault")
        let back = work.appendingPathComponent("back.vhd").path
        _ = try Self.blobs!.download(container: "vhds", blob: "cvm-faults.vhd", to: back)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: back)).prefix(3 << 20), try Data(contentsOf: URL(fileURLWithPath: disk)))
        try config(["throttle_every": 0, "poll_503_every": 0])
        let all = try cli(["cleanup", "azure", "--vm_name", "cvm-faults", "--all"])
        XCTAssertEqual(all.status, 0, all.stderr)
        let left = try resources()
        XCTAssertTrue(left.filter { $0.contains("/resourceGroups/rg-faults") }.isEmpty, "--all removes what --create-missing made: \(left)")
        try assertNoSecrets([run.stdout, run.stderr, all.stdout, all.stderr])
    }

    // MARK: fixtures

    /// PK/KEK/db certificates made with the openssl command line (PEM).
    func makeCerts() throws -> String {
        let dir = work.appendingPathComponent("certs")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for name in ["PK", "KEK", "db"] {
            _ = try PageBlobServer.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                                        "-subj", "/CN=cvm-cli test \(name)", "-keyout", dir.appendingPathComponent("\(name).key").path,
                                        "-out", dir.appendingPathComponent("\(name).crt").path])
        }
        return dir.path
    }
}
