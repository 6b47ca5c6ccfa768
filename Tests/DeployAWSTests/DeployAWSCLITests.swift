import AWSTestSupport
import CVMSupport
import Foundation
import XCTest

/// `cvm-cli deploy-aws` and `cvm-cli cleanup aws` as a user runs them, against moto.
extension DeployAWSMotoTests {
    private func cli(_ args: [String], in directory: String, endpoint: String, secret: String? = nil) throws -> MotoServer.Output {
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var binary = URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("cvm-cli").path
        if !FileManager.default.isExecutableFile(atPath: binary) {
            binary = Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("cvm-cli").path
        }
        if let override = ProcessInfo.processInfo.environment["CVM_CLI_BINARY"] { binary = override }
        return try MotoServer.run(["sh", "-c", "cd \"$1\" && shift && exec \"$@\"", "sh", directory, binary] + args,
                                  environment: moto.environment(secret: secret, endpoint: endpoint), allowFailure: true)
    }

    func testCLIDeployPrintsTheIPLastAndCleansUp() throws {
        let disk = try makeDiskForCLI()
        let proxy = try startProxyForCLI()
        let work = disk.dir
        // kebab-case spellings
        let first = try cli(["deploy-aws", "--disk", disk.path, "--vm-name", "cvm-cli1", "--additional-ports", "8080,7000-7001",
                             "--data-disk-size", "2", "--verbose"], in: work, endpoint: proxy)
        XCTAssertEqual(first.status, 0, first.stderr)
        let lines = first.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.count, 2, "only the IP on stdout: \(first.stdout)")
        let ip = String(lines[0])
        XCTAssertEqual(ip.split(separator: ".").count, 4, ip)
        XCTAssertFalse((first.stdout + first.stderr).contains(moto.secretAccessKey), "the secret leaked into the output")
        XCTAssertTrue(FileManager.default.fileExists(atPath: work + "/_artifacts/aws_cvm-cli1.json"))

        // snake_case spellings, --json: the same VM again.
        let again = try cli(["deploy-aws", "--disk", disk.path, "--vm_name", "cvm-cli1", "--additional_ports", "8080,7000-7001",
                             "--data_disk_size", "2", "--json"], in: work, endpoint: proxy)
        XCTAssertEqual(again.status, 0, again.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(json["public_ip"] as? String, ip)
        XCTAssertEqual(json["dry_run"] as? Bool, false)
        let artifact = json["artifact"] as! [String: Any]
        XCTAssertEqual(artifact["vm_name"] as? String, "cvm-cli1")
        XCTAssertEqual((artifact["disk_sha256"] as? String)?.count, 64)

        let dry = try cli(["deploy-aws", "--disk", disk.path, "--vm_name", "cvm-cli2", "--dry-run"], in: work, endpoint: proxy)
        XCTAssertEqual(dry.status, 0, dry.stderr)
        XCTAssertTrue(dry.stdout.contains("ec2:RunInstances") && dry.stdout.contains("CpuOptions.AmdSevSnp=enabled"), dry.stdout)
        XCTAssertFalse(FileManager.default.fileExists(atPath: work + "/_artifacts/aws_cvm-cli2.json"))

        let listed = try cli(["cleanup", "aws", "--vm_name", "cvm-cli1", "--dry-run"], in: work, endpoint: proxy)
        XCTAssertEqual(listed.status, 0, listed.stderr)
        XCTAssertTrue(listed.stdout.contains("would delete instance i-"), listed.stdout)
        let cleaned = try cli(["cleanup", "aws", "--vm-name", "cvm-cli1"], in: work, endpoint: proxy)
        XCTAssertEqual(cleaned.status, 0, cleaned.stderr)
        XCTAssertTrue(cleaned.stdout.contains("deleted instance i-") && cleaned.stdout.contains("deleted address eipalloc-"), cleaned.stdout)
        let nothing = try cli(["cleanup", "aws", "--vm_name", "cvm-cli1"], in: work, endpoint: proxy)
        XCTAssertEqual(nothing.status, 0, nothing.stderr)
        XCTAssertEqual(nothing.stdout, "nothing of cvm-cli1 left in us-east-2\n")
    }

    func testCLIErrorsAreOneLineNamingTheFlag() throws {
        let disk = try makeDiskForCLI()
        let cases: [([String], Int32, String)] = [
            (["--additional_ports", "70000"], 64, "--additional_ports: '70000' is not a valid port"),
            (["--vm_type", "m5.large"], 64, "'m5.large' is not a confidential-VM type on aws"),
            (["--region", "us-west-1", "--vm-type", "c6a.large"], 64, "c6a.large is SEV-SNP capable in us-east-2 and eu-west-1"),
            (["--upload", "s3"], 64, "--upload s3 needs --bucket"),
            (["--tee", "TDX"], 64, "aws offers no TDX confidential VMs; it has SEV-SNP on m6a, c6a and r6a"),
            (["--tee", "sgx"], 64, "--tee 'sgx': not a TEE cvm-cli knows; expected SEV-SNP or TDX"),
            (["--upload", "ftp"], 64, "--upload 'ftp': expected ebs or s3"),
            (["--vm_name", "bad_name"], 64, "--vm_name 'bad_name'"),
            (["--secure-boot-certs", disk.dir + "/none"], 64, "--secure-boot-certs \(disk.dir)/none: not a folder"),
            (["--data_disk_size", "0"], 64, "--data_disk_size 0"),
        ]
        for (args, status, expected) in cases {
            let r = try cli(["deploy-aws", "--disk", disk.path] + args, in: disk.dir, endpoint: "http://127.0.0.1:9")
            XCTAssertEqual(r.status, status, "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.hasPrefix("cvm-cli: error: ") && r.stderr.contains(expected), "\(args): \(r.stderr)")
            XCTAssertEqual(r.stdout, "")
        }
    }
}
