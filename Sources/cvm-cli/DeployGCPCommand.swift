import ArgumentParser
import CVMMatrix
import CVMSupport
import Deploy
import Foundation
import GCPProvider

struct DeployGCPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy-gcp",
        abstract: "Deploy a disk as an SEV-SNP (n2d) or TDX (c3) Confidential VM on Compute Engine (agent on port 8000).",
        discussion: """
        Checks vm_type × zone against the CVM matrix, uploads the disk to gs://BUCKET/<vm_name>-<sha256[:12]>.tar.gz \
        (any input format, converted while it is sent; resumable), replaces image <vm_name>-image with one made \
        from it (UEFI, GVNIC, SEV-SNP/TDX capable, Secure Boot keys from --secure-boot-certs), opens tcp 8000 and \
        --additional_ports in firewall <vm_name>-ingress, creates instance <vm_name> with confidential computing, \
        Shielded VM and an external IP, and writes _artifacts/gcp_<vm_name>.json. The IP is printed last. Reruns \
        reuse what exists; `cvm-cli cleanup gcp` removes it all.
        """
    )

    @Option(name: [.customLong("project_id"), .customLong("project-id")],
            help: "GCP project (default: GOOGLE_CLOUD_PROJECT, else the service-account key's project).")
    var projectID: String?

    @Option(help: "GCS bucket for the uploaded image archive.")
    var bucket: String

    @Option(help: "Disk image (raw, qcow2, VHD, VMDK, GCP tar.gz).")
    var disk = "gcp_disk.tar.gz"

    @Option(help: "Compute Engine zone (the image is stored in its region).")
    var region = "asia-southeast1-b"

    @Option(name: [.customLong("vm_type"), .customLong("vm-type")], help: "Machine type: n2d-standard-* (SEV-SNP) or c3-standard-* (TDX).")
    var vmType = "c3-standard-4"

    @Flag(name: [.customLong("keep-upload"), .customLong("keep_upload")],
          help: "Keep the uploaded archive in the bucket once the image is made.")
    var keepUpload = false

    @OptionGroup var common: CommonDeployOptions

    func run() throws {
        try runReportingErrors {
            let request = try common.request(cloud: .gcp, disk: disk, region: region, vmType: vmType)
            var options = GCPDeployOptions(bucket: bucket, projectID: projectID)
            options.keepUpload = keepUpload
            let interrupt = InterruptFlag.install()
            options.upload.isCancelled = { interrupt.isSet }
            // Upload progress on a terminal only (bytes, rate, ETA).
            let progressLine = !common.json && !common.verbose && ProgressReporter.stderrIsTerminal && !common.dryRun
                ? LockedProgress(label: "upload to gs://\(bucket)") : nil
            defer { progressLine?.finish() }
            if let progressLine { options.upload.progress = { done, total in progressLine.update(done, total) } }
            let outcome = try GCPDeploy.run(request, options: options, matrix: try CVMMatrix.embedded(),
                                            verbose: common.verbose, log: common.log)
            try printDeployOutcome(outcome, json: common.json)
        }
    }
}

struct CleanupGCPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gcp",
        abstract: "Delete the instance, data disk, firewall, image and uploaded archives of a deploy-gcp VM."
    )

    @OptionGroup var cleanup: CleanupOptions

    @Option(help: "Zone (default: the artifact's).")
    var region: String?

    @Option(name: [.customLong("project_id"), .customLong("project-id")], help: "GCP project (default: the artifact's, else the credentials').")
    var projectID: String?

    @Option(help: "Bucket holding the uploaded archives (default: the artifact's).")
    var bucket: String?

    func run() throws {
        try runReportingErrors {
            let interrupt = InterruptFlag.install()
            try cleanup.report(GCPDeploy.cleanup(vmName: cleanup.vmName, zone: region, projectID: projectID, bucket: bucket,
                                                 dryRun: cleanup.dryRun, verbose: cleanup.verbose,
                                                 isCancelled: { interrupt.isSet }, log: cleanup.logLine))
        }
    }
}
