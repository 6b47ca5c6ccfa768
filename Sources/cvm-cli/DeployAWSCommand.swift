import ArgumentParser
import AWSProvider
import CVMMatrix
import CVMSupport
import Deploy
import Foundation

/// Options every deploy-<cloud> shares, with the established snake_case names and their
/// kebab-case spellings.
struct CommonDeployOptions: ParsableArguments {
    @Option(name: [.customLong("additional_ports"), .customLong("additional-ports")],
            help: "Extra ports to open for tcp and udp: comma-separated ports or ranges (e.g. \"80,443,9000-9010\").")
    var additionalPorts = ""

    @Option(name: [.customLong("vm_name"), .customLong("vm-name")], help: "Name of the VM and its resources.")
    var vmName = "cvm-test"

    @Option(name: [.customLong("secure-boot-certs"), .customLong("secure_boot_certs")],
            help: "Folder with PK.crt, KEK.crt, db.crt (+ db*.crt), PEM or DER: the image's Secure Boot keys.")
    var secureBootCerts: String?

    @Option(name: [.customLong("data_disk_size"), .customLong("data-disk-size")], help: "Add a data disk of this many GiB.")
    var dataDiskSize: Int?

    @Option(help: "TEE: SEV-SNP or TDX (default: the vm_type's; checked against the CVM matrix).")
    var tee: String?

    @Flag(name: [.customLong("allow-unlisted"), .customLong("allow_unlisted")],
          help: "Go ahead when vm_type × region × TEE is not in the CVM matrix (`cvm-cli matrix`).")
    var allowUnlisted = false

    @Flag(name: [.customLong("dry-run"), .customLong("dry_run")],
          help: "Validate everything and print the plan (each REST call); read-only calls only.")
    var dryRun = false

    @Flag(help: "Print one JSON object (the artifact, and the plan with --dry-run).")
    var json = false

    @Flag(help: "Log each step and request on stderr.")
    var verbose = false

    func request(cloud: CloudName, disk: String, region: String, vmType: String) throws -> DeployRequest {
        var r = DeployRequest(cloud: cloud, diskPath: disk, vmName: vmName, region: region, vmType: vmType)
        r.additionalPorts = try PortRange.parseList(additionalPorts)
        r.tee = try tee.map { try TEE(parsing: $0) }
        if let dataDiskSize {
            guard (1...16384).contains(dataDiskSize) else {
                throw CVMError.usage("--data_disk_size \(dataDiskSize): expected 1 to 16384 GiB")
            }
            r.dataDiskGiB = dataDiskSize
        }
        r.secureBootCerts = try secureBootCerts.map { try SecureBootCerts.load(directory: $0) }
        r.allowUnlisted = allowUnlisted
        r.dryRun = dryRun
        return r
    }

    var log: @Sendable (String) -> Void {
        let verbose = self.verbose, json = self.json
        return { line in
            if verbose || (!json && line.hasPrefix("warning:")) {
                FileHandle.standardError.write(Data("cvm-cli: \(line)\n".utf8))
            }
        }
    }
}

/// Prints a finished deploy: the plan for a dry run, else a summary on stderr and the IP last,
/// alone on a line, on stdout.
func printDeployOutcome(_ outcome: DeployOutcome, json: Bool) throws {
    if json {
        try printJSON(DeployJSON(outcome))
        return
    }
    if outcome.dryRun {
        print("plan (dry run: the reads were made, nothing was created or changed):")
        for call in outcome.plan { print((call.mutating ? "  would " : "  read  ") + call.line) }
        return
    }
    let a = outcome.artifact
    var summary = "\(a.cloud) \(a.vmName) in \(a.region): "
    summary += a.resources.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    if let path = outcome.artifactPath { summary += "; artifact \(path)" }
    FileHandle.standardError.write(Data("\(summary)\n".utf8))
    print(a.publicIP ?? "")
}

struct DeployJSON: Encodable {
    let artifact: DeployArtifact
    let artifactPath: String?
    let publicIP: String?
    let dryRun: Bool
    let plan: [PlannedCall]?
    let warning: String?

    init(_ o: DeployOutcome) {
        artifact = o.artifact
        artifactPath = o.artifactPath
        publicIP = o.artifact.publicIP
        dryRun = o.dryRun
        plan = o.dryRun ? o.plan : nil
        warning = o.matrixWarning
    }

    enum CodingKeys: String, CodingKey {
        case artifact, plan, warning
        case artifactPath = "artifact_path", publicIP = "public_ip", dryRun = "dry_run"
    }
}

struct DeployAWSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy-aws",
        abstract: "Deploy a disk as an AMD SEV-SNP confidential VM on EC2 (agent on port 8000).",
        discussion: """
        Checks vm_type × region against the CVM matrix, uploads the disk as an EBS snapshot (EBS \
        direct APIs: no S3 bucket or vmimport role), registers a UEFI + TPM 2.0 image, opens tcp 8000 \
        and --additional_ports in security group <vm_name>-sg of the default VPC, launches the instance \
        with SEV-SNP, associates an Elastic IP and writes _artifacts/aws_<vm_name>.json. The IP is \
        printed last. Reruns reuse what exists; `cvm-cli cleanup aws` removes it all.
        """
    )

    @Option(help: "Disk image (raw, qcow2, VHD, VMDK, GCP tar.gz).")
    var disk = "aws_disk.vmdk"

    @Option(help: "AWS region.")
    var region = "us-east-2"

    @Option(name: [.customLong("vm_type"), .customLong("vm-type")], help: "EC2 instance type (m6a, c6a or r6a family).")
    var vmType = "m6a.large"

    @Option(help: "Upload path: ebs (EBS direct snapshot) or s3 (S3 + ImportSnapshot, needs --bucket).")
    var upload = "ebs"

    @Option(help: "S3 bucket for --upload s3 (in the same region).")
    var bucket: String?

    @OptionGroup var common: CommonDeployOptions

    func run() throws {
        try runReportingErrors {
            let path: AWSUploadPath
            switch upload {
            case "ebs":
                path = .ebs
            case "s3":
                guard let bucket else { throw CVMError.usage("--upload s3 needs --bucket NAME (an S3 bucket in \(region))") }
                path = .s3(bucket: bucket)
            default:
                throw CVMError.usage("--upload '\(upload)': expected ebs or s3")
            }
            let request = try common.request(cloud: .aws, disk: disk, region: region, vmType: vmType)
            var options = AWSUploadOptions()
            let interrupt = InterruptFlag.install()
            options.isCancelled = { interrupt.isSet }
            let progressLine = !common.json && !common.verbose && !common.dryRun && ProgressReporter.stderrIsTerminal
                ? LockedProgress(label: "upload \(disk)") : nil
            defer { progressLine?.finish() }
            if let progressLine { options.progress = { done, total in progressLine.update(done, total) } }
            let outcome = try AWSDeploy.run(request, matrix: try CVMMatrix.embedded(), options: options, upload: path,
                                            verbose: common.verbose, log: common.log)
            try printDeployOutcome(outcome, json: common.json)
        }
    }
}
