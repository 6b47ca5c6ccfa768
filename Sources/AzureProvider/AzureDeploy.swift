import CloudAuth
import CVMMatrix
import CVMSupport
import Deploy
import Foundation
import Logging
import Transport

/// The entry points of `cvm-cli deploy-azure` and `cvm-cli cleanup azure`.
public enum AzureDeploy {
    /// Checks the request (matrix first when the location is known, before any request), reads
    /// the resource group, storage account and gallery (failing on a missing one unless
    /// `createMissing`), then runs the deploy pipeline.
    public static func run(_ request: DeployRequest, target: AzureDeployTarget, location: String?, subscription: String?,
                           matrix: CVMMatrix, environment: [String: String] = ProcessInfo.processInfo.environment,
                           home: String = NSHomeDirectory(), options: AzureUploadOptions = AzureUploadOptions(),
                           verbose: Bool = false, log: @escaping @Sendable (String) -> Void = { _ in }) throws -> DeployOutcome {
        try DeployRequest.checkVMName(request.vmName)
        try target.validate()
        if let location {
            _ = try matrix.check(cloud: .azure, vmType: request.vmType, region: location, tee: request.tee,
                                 allowUnlisted: request.allowUnlisted)
        } else {
            // The region comes from the resource group; the size must at least be a CVM size.
            let m = try matrix.matrix(for: .azure)
            if !request.allowUnlisted, let first = m.families.first,
               !m.families.contains(where: { $0.matches(vmType: request.vmType) }) {
                _ = try matrix.check(cloud: .azure, vmType: request.vmType, region: first.regions.first ?? "", tee: request.tee)
            }
        }
        guard FileManager.default.isReadableFile(atPath: request.diskPath) else {
            throw CVMError.usage("--disk \(request.diskPath): no such readable file; expected the VM's disk image")
        }
        let plan = DeployPlan()
        let (arm, makeClient) = try clients(subscription: subscription, dryRun: request.dryRun, plan: plan,
                                            environment: environment, options: options, verbose: verbose)
        let base = try AzureDeployer.checkBase(arm: arm, target: target, location: location) { region in
            _ = try matrix.check(cloud: .azure, vmType: request.vmType, region: region, tee: request.tee,
                                 allowUnlisted: request.allowUnlisted)
        }
        var request = request
        request.region = base.location
        let deployer = AzureDeployer(arm: arm, target: target, environment: environment, home: home,
                                     uploadOptions: options, makeHTTPClient: makeClient)
        deployer.pendingMissing = base.missing
        var outcome = try DeployPipeline.run(deployer, request: request, matrix: matrix, log: log)
        outcome.plan = outcome.plan + plan.calls
        return outcome
    }

    static func clients(subscription: String?, dryRun: Bool, plan: DeployPlan, environment: [String: String],
                        options: AzureUploadOptions, verbose: Bool) throws -> (ARMClient, @Sendable () -> HTTPClient) {
        let subscriptionID = try subscription.flatMap { $0.isEmpty ? nil : $0 } ?? AzureDiscovery.subscriptionId(environment: environment)
        let credentials = try AzureDiscovery.entraCredentials(environment: environment)
        let endpoint = try ARMEndpoint(environment: environment)
        let logger = Logger.commandLog(label: "cvm.azure", verbose: verbose)
        let makeClient: @Sendable () -> HTTPClient = { [logger] in
            var transport = TransportConfiguration(environment: environment, maxConcurrentTransfers: options.maxConcurrentTransfers,
                                                   isCancelled: options.isCancelled)
            transport.errorParser = ARMClient.errorParser
            return HTTPClient(configuration: transport, logger: logger)
        }
        let client = makeClient()
        let tokens = EntraTokenSource(credentials: credentials, scope: endpoint.scope, client: client)
        let arm = try ARMClient(endpoint: endpoint, subscription: subscriptionID, tokens: tokens, client: client,
                                dryRun: dryRun, plan: plan)
        return (arm, makeClient)
    }

    /// Deletes what deploy-azure made for `vmName` — VM, NIC, public IP, NSG, VNet, OS and data
    /// disks, image versions and definition, the uploaded blob — in dependency order; parts
    /// already gone are fine. With `all`, also the resource group, storage account and gallery,
    /// but only those the artifact says this tool created.
    public static func cleanup(vmName: String, target: AzureDeployTarget?, subscription: String?, all: Bool = false,
                               artifactsDirectory: String = "_artifacts", dryRun: Bool = false,
                               environment: [String: String] = ProcessInfo.processInfo.environment,
                               home: String = NSHomeDirectory(), options: AzureUploadOptions = AzureUploadOptions(),
                               verbose: Bool = false, log: @escaping @Sendable (String) -> Void = { _ in }) throws -> CleanupOutcome {
        try DeployRequest.checkVMName(vmName)
        let artifactPath = DeployArtifact.path(directory: artifactsDirectory, cloud: "azure", vmName: vmName)
        let artifact = try DeployArtifact.read(artifactPath)
        let known = artifact?.resources ?? [:]
        func lastComponent(_ id: String?) -> String? { id.flatMap { $0.split(separator: "/").last.map(String.init) } }
        guard let resourceGroup = target?.resourceGroup ?? known["resource_group"] else {
            throw CVMError.usage("cleanup azure --vm_name \(vmName): no artifact at \(artifactPath); pass --resource_group (and --storage_account, --gallery_name)")
        }
        guard let storageAccount = target?.storageAccount ?? lastComponent(known["storage_account_id"]),
              let gallery = target?.gallery ?? lastComponent(known["gallery_id"]) else {
            throw CVMError.usage("cleanup azure --vm_name \(vmName): no artifact at \(artifactPath); pass --storage_account and --gallery_name too")
        }
        let resolved = AzureDeployTarget(resourceGroup: resourceGroup, storageAccount: storageAccount, gallery: gallery)
        try resolved.validate()
        let plan = DeployPlan()
        let (arm, makeClient) = try clients(subscription: subscription, dryRun: dryRun, plan: plan,
                                            environment: environment, options: options, verbose: verbose)
        let deployer = AzureDeployer(arm: arm, target: resolved, environment: environment, home: home,
                                     uploadOptions: options, makeHTTPClient: makeClient)
        let n = deployer.names(vmName)
        typealias API = AzureDeployer.API
        var removed: [String] = [], gone: [String] = []
        func remove(_ path: String, _ api: String, _ type: String) throws {
            let what = "\(type) \(path.split(separator: "/").last ?? "")"
            if try arm.delete(path, apiVersion: api, operation: "\(type):delete") {
                removed.append(what)
                log((dryRun ? "would delete " : "deleted ") + what)
            } else {
                gone.append(what)
            }
        }
        // The VM first (it holds the NIC and disks), then what only it used.
        try remove(n.vmPath, API.compute, "Microsoft.Compute/virtualMachines")
        try remove(n.disk(n.osDiskName), API.disks, "Microsoft.Compute/disks")
        try remove(n.disk(n.dataDiskName), API.disks, "Microsoft.Compute/disks")
        try remove(n.nic, API.network, "Microsoft.Network/networkInterfaces")
        try remove(n.publicIP, API.network, "Microsoft.Network/publicIPAddresses")
        try remove(n.nsg, API.network, "Microsoft.Network/networkSecurityGroups")
        try remove(n.vnet, API.network, "Microsoft.Network/virtualNetworks")
        for v in try deployer.listVersions(n) {
            try remove(n.imageVersion(v.name), API.galleries, "Microsoft.Compute/galleries/images/versions")
        }
        try remove(n.imageDefinition, API.galleries, "Microsoft.Compute/galleries/images")

        // The uploaded blob (the vhds container stays).
        if let session = try deployer.storageSession(n) {
            let url = session.url(container: AzureDeployer.container, blob: n.blobName)
            let exists = try session.blobExists(url)
            if exists {
                if dryRun {
                    plan.add(PlannedCall(method: "DELETE", endpoint: url, operation: "blob:DeleteBlob", parameters: [], mutating: true))
                } else {
                    _ = try session.deleteBlob(url)
                }
                removed.append("blob \(AzureDeployer.container)/\(n.blobName)")
            } else {
                gone.append("blob \(AzureDeployer.container)/\(n.blobName)")
            }
        }

        if all {
            let created = Set((known["created"] ?? "").split(separator: ",").map(String.init))
            if created.contains("gallery") { try remove(n.gallery, API.galleries, "Microsoft.Compute/galleries") }
            if created.contains("storage_account") { try remove(n.storageAccount, API.storage, "Microsoft.Storage/storageAccounts") }
            if created.contains("resource_group") { try remove(n.resourceGroup, API.resourceGroups, "Microsoft.Resources/resourceGroups") }
        }
        if !dryRun, FileManager.default.fileExists(atPath: artifactPath) {
            try? FileManager.default.removeItem(atPath: artifactPath)
        }
        return CleanupOutcome(removed: removed, alreadyGone: gone, region: artifact?.region ?? "", plan: plan.calls,
                              artifactPath: artifactPath, dryRun: dryRun)
    }
}
