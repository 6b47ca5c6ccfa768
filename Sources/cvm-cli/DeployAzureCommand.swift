import ArgumentParser
import AzureProvider
import CVMMatrix
import CVMSupport
import Deploy
import Foundation

/// The resource group, storage account and gallery flags deploy-azure and cleanup azure share.
struct AzureTargetOptions: ParsableArguments {
    @Option(name: [.customLong("resource_group"), .customLong("resource-group")], help: "Resource group of everything deployed.")
    var resourceGroup: String?

    @Option(name: [.customLong("storage_account"), .customLong("storage-account")],
            help: "Storage account (3–24 lower-case letters and digits) for the uploaded VHD, container vhds.")
    var storageAccount: String?

    @Option(name: [.customLong("gallery_name"), .customLong("gallery-name")], help: "Azure Compute Gallery for the image.")
    var galleryName: String?

    @Option(help: "Subscription id (default: AZURE_SUBSCRIPTION_ID).")
    var subscription: String?
}

struct DeployAzureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy-azure",
        abstract: "Deploy a disk as a confidential VM (SEV-SNP or TDX) on Azure from a gallery image (agent on port 8000).",
        discussion: """
        Checks vm_type × location against the CVM matrix, uploads the disk as a page blob (fixed VHD) \
        to container vhds of --storage_account (key from ARM listKeys), makes gallery image definition \
        <vm_name>-def (Specialized, V2, TrustedLaunchAndConfidentialVmSupported) and an image version, \
        an NSG (attestation_agent tcp 8000, Workload_<port> rules), a VNet, a static Standard public IP, \
        a NIC and the VM (ConfidentialVM, Secure Boot, vTPM, VMGuestStateOnly), then prints the public IP \
        last and writes _artifacts/azure_<vm_name>.json. Credentials: AZURE_TENANT_ID, AZURE_CLIENT_ID, \
        AZURE_CLIENT_SECRET (AZURE_AUTHORITY_HOST); ARM at AZURE_RESOURCE_MANAGER_ENDPOINT if set. \
        Reruns reuse what exists; `cvm-cli cleanup azure` removes it.
        """
    )

    @Option(help: "Disk image (VHD, raw, qcow2, VMDK, GCP tar.gz; converted to a fixed VHD on the fly).")
    var disk = "azure_disk.vhd"

    @Option(name: [.customLong("vm_type"), .customLong("vm-type")],
            help: "VM size: DCasv5/ECasv5 (SEV-SNP) or DCesv5/DCedsv5/DCesv6 (TDX).")
    var vmType = "Standard_DC2es_v5"

    @Option(help: "Azure location (default: the resource group's).")
    var location: String?

    @Flag(name: [.customLong("create-missing"), .customLong("create_missing")],
          help: "Create the resource group (needs --location), storage account (Standard_LRS) and gallery if absent.")
    var createMissing = false

    @OptionGroup var azure: AzureTargetOptions
    @OptionGroup var common: CommonDeployOptions

    func run() throws {
        try runReportingErrors {
            guard let rg = azure.resourceGroup, let sa = azure.storageAccount, let gallery = azure.galleryName else {
                let missing = [("--resource_group", azure.resourceGroup), ("--storage_account", azure.storageAccount),
                               ("--gallery_name", azure.galleryName)].filter { $0.1 == nil }.map(\.0)
                throw CVMError.usage("deploy-azure needs \(missing.joined(separator: ", ")): the resource group, storage account and gallery to use (--create-missing makes absent ones)")
            }
            var target = AzureDeployTarget(resourceGroup: rg, storageAccount: sa, gallery: gallery)
            target.createMissing = createMissing
            let request = try common.request(cloud: .azure, disk: disk, region: location ?? "", vmType: vmType)
            var options = AzureUploadOptions()
            let interrupt = InterruptFlag.install()
            options.isCancelled = { interrupt.isSet }
            let outcome = try AzureDeploy.run(request, target: target, location: location, subscription: azure.subscription,
                                              matrix: try CVMMatrix.embedded(), options: options,
                                              verbose: common.verbose, log: common.log)
            try printDeployOutcome(outcome, json: common.json)
        }
    }
}

struct CleanupAzureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "azure",
        abstract: "Delete the VM, NIC, public IP, NSG, VNet, disks, image version and definition and blob of a deploy-azure VM."
    )

    @OptionGroup var cleanup: CleanupOptions

    @OptionGroup var azure: AzureTargetOptions

    @Flag(help: "Also delete the resource group, storage account and gallery, if this tool created them (--create-missing).")
    var all = false

    func run() throws {
        try runReportingErrors {
            var target: AzureDeployTarget?
            if let rg = azure.resourceGroup, let sa = azure.storageAccount, let g = azure.galleryName {
                target = AzureDeployTarget(resourceGroup: rg, storageAccount: sa, gallery: g)
            }
            try cleanup.report(AzureDeploy.cleanup(vmName: cleanup.vmName, target: target, subscription: azure.subscription, all: all,
                                                   dryRun: cleanup.dryRun, verbose: cleanup.verbose, log: cleanup.logLine))
        }
    }
}
