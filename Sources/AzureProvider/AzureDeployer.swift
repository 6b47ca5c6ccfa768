import CloudAuth
import CVMCrypto
import CVMMatrix
import CVMSupport
import Deploy
import DiskImage
import Foundation
import Transport

/// The resources a user points deploy-azure at (they exist, or `--create-missing` makes them).
public struct AzureDeployTarget: Sendable {
    public var resourceGroup: String
    public var storageAccount: String
    public var gallery: String
    public var createMissing = false

    public init(resourceGroup: String, storageAccount: String, gallery: String) {
        self.resourceGroup = resourceGroup
        self.storageAccount = storageAccount
        self.gallery = gallery
    }

    /// Azure's rules, checked before any request so the error names the flag.
    public func validate() throws {
        let rgOK = (1...90).contains(resourceGroup.count) && resourceGroup.last != "."
            && resourceGroup.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "-_.()".unicodeScalars.contains($0) }
        guard rgOK else {
            throw CVMError.usage("--resource_group '\(resourceGroup)': expected 1–90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'")
        }
        let saOK = (3...24).contains(storageAccount.count)
            && storageAccount.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber) }
        guard saOK else {
            throw CVMError.usage("--storage_account '\(storageAccount)': storage account names are 3–24 lower-case letters and digits only (no '-' or '_'), unique across Azure")
        }
        let galleryOK = (1...80).contains(gallery.count) && gallery.first!.isLetter && gallery.last != "."
            && gallery.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ".") }
        guard galleryOK else {
            throw CVMError.usage("--gallery_name '\(gallery)': expected 1–80 letters, digits, '_' and '.', starting with a letter (no '-')")
        }
    }
}

/// `deploy-azure`: a confidential VM from a specialized gallery image over ARM REST. Every step
/// first reads what an earlier run of the same VM made (resources are named after the VM).
public final class AzureDeployer: CloudDeployer, @unchecked Sendable {
    public let cloud = CloudName.azure
    let arm: ARMClient
    let target: AzureDeployTarget
    let environment: [String: String]
    let home: String
    let uploadOptions: AzureUploadOptions
    let makeHTTPClient: @Sendable () -> HTTPClient

    /// api-version per resource type (what the request bodies were checked against).
    enum API {
        static let resourceGroups = "2022-09-01"
        static let storage = "2023-05-01"
        static let galleries = "2023-07-03"
        static let compute = "2024-07-01"
        static let disks = "2024-03-02"
        static let network = "2024-05-01"
    }

    static let container = "vhds"
    static let sha256Tag = "cvm-cli-disk-sha256"
    static let vmTag = "cvm-cli-vm"

    init(arm: ARMClient, target: AzureDeployTarget, environment: [String: String], home: String,
         uploadOptions: AzureUploadOptions, makeHTTPClient: @escaping @Sendable () -> HTTPClient) {
        self.arm = arm
        self.target = target
        self.environment = environment
        self.home = home
        self.uploadOptions = uploadOptions
        self.makeHTTPClient = makeHTTPClient
    }

    // MARK: names and ids

    struct Names {
        let sub: String
        let target: AzureDeployTarget
        let vm: String

        var resourceGroup: String { "\(sub)/resourceGroups/\(target.resourceGroup)" }
        var storageAccount: String { "\(resourceGroup)/providers/Microsoft.Storage/storageAccounts/\(target.storageAccount)" }
        var gallery: String { "\(resourceGroup)/providers/Microsoft.Compute/galleries/\(target.gallery)" }
        var imageDefinitionName: String { "\(vm)-def" }
        var imageDefinition: String { "\(gallery)/images/\(imageDefinitionName)" }
        func imageVersion(_ v: String) -> String { "\(imageDefinition)/versions/\(v)" }
        var network: String { "\(resourceGroup)/providers/Microsoft.Network" }
        var vnet: String { "\(network)/virtualNetworks/\(vm)-vnet" }
        var subnet: String { "\(vnet)/subnets/default" }
        var nsg: String { "\(network)/networkSecurityGroups/\(vm)-nsg" }
        var publicIP: String { "\(network)/publicIPAddresses/\(vm)-ip" }
        var nic: String { "\(network)/networkInterfaces/\(vm)-nic" }
        var vmPath: String { "\(resourceGroup)/providers/Microsoft.Compute/virtualMachines/\(vm)" }
        var osDiskName: String { "\(vm)-osdisk" }
        var dataDiskName: String { "\(vm)-datadisk" }
        func disk(_ name: String) -> String { "\(resourceGroup)/providers/Microsoft.Compute/disks/\(name)" }
        var blobName: String { "\(vm).vhd" }
    }

    func names(_ vm: String) -> Names { Names(sub: arm.subscriptionPath, target: target, vm: vm) }

    static func isPlaceholder(_ id: String?) -> Bool { id?.hasPrefix("<") ?? true }

    // MARK: the resource group, storage account and gallery

    /// Reads the three (the region defaults to the resource group's); with `createMissing`
    /// records which are missing, else fails naming the first one missing.
    static func checkBase(arm: ARMClient, target: AzureDeployTarget, location: String?,
                          checkRegion: (String) throws -> Void = { _ in }) throws -> (location: String, missing: [String]) {
        let n = Names(sub: arm.subscriptionPath, target: target, vm: "x")
        var missing: [String] = []
        let rg = try arm.get(n.resourceGroup, apiVersion: API.resourceGroups)
        let region: String
        if let rg {
            region = location ?? (rg["location"] as? String ?? "")
        } else {
            guard target.createMissing else {
                throw CVMError.usage("resource group '\(target.resourceGroup)' does not exist in subscription \(arm.subscription); create it (az group create) or pass --create-missing with --location")
            }
            guard let location else {
                throw CVMError.usage("resource group '\(target.resourceGroup)' does not exist: --create-missing needs --location to create it in")
            }
            region = location
            missing.append("resource_group")
        }
        try checkRegion(region)
        let sa = rg == nil ? nil : try arm.get(n.storageAccount, apiVersion: API.storage)
        if let sa {
            let saRegion = sa["location"] as? String ?? ""
            if Self.normalized(saRegion) != Self.normalized(region) {
                throw CVMError.usage("storage account '\(target.storageAccount)' is in \(saRegion) but the VM goes to \(region): a gallery image version needs its source VHD in the same region; use a storage account in \(region) or --location \(saRegion)")
            }
        } else {
            guard target.createMissing else {
                throw CVMError.usage("storage account '\(target.storageAccount)' does not exist in resource group '\(target.resourceGroup)'; create it (Standard_LRS, in \(region)) or pass --create-missing")
            }
            missing.append("storage_account")
        }
        let gallery = rg == nil ? nil : try arm.get(n.gallery, apiVersion: API.galleries)
        if let gallery, let galleryRegion = gallery["location"] as? String, normalized(galleryRegion) != normalized(region) {
            throw CVMError.usage("gallery '\(target.gallery)' is in \(galleryRegion) but the VM goes to \(region): its image definitions live in the gallery's region; use a gallery in \(region) or --location \(galleryRegion)")
        }
        if gallery == nil {
            guard target.createMissing else {
                throw CVMError.usage("gallery '\(target.gallery)' does not exist in resource group '\(target.resourceGroup)'; create it (az sig create) or pass --create-missing")
            }
            missing.append("gallery")
        }
        return (region, missing)
    }

    static func normalized(_ region: String) -> String { region.lowercased().filter { $0 != " " } }

    /// Creates what `checkBase` found missing, and notes in the artifact what this tool created
    /// (so `cleanup azure --all` removes only those).
    func createBase(_ state: DeployState, missing: [String]) throws {
        let n = names(state.request.vmName)
        let location = state.request.region
        var created = Set((state.artifact.resources["created"] ?? "").split(separator: ",").map(String.init))
        if missing.contains("resource_group") {
            try arm.put(n.resourceGroup, apiVersion: API.resourceGroups, operation: "Microsoft.Resources/resourceGroups:write",
                        body: ["location": location, "tags": ["created-by": "cvm-cli"]])
            created.insert("resource_group")
            state.log("created resource group \(target.resourceGroup) in \(location)")
        }
        if missing.contains("storage_account") {
            try arm.put(n.storageAccount, apiVersion: API.storage, operation: "Microsoft.Storage/storageAccounts:write", body: [
                "location": location, "kind": "StorageV2", "sku": ["name": "Standard_LRS"],
                "tags": ["created-by": "cvm-cli"],
                "properties": ["minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": false, "supportsHttpsTrafficOnly": true],
            ])
            created.insert("storage_account")
            state.log("created storage account \(target.storageAccount)")
        }
        if missing.contains("gallery") {
            try arm.put(n.gallery, apiVersion: API.galleries, operation: "Microsoft.Compute/galleries:write", body: [
                "location": location, "tags": ["created-by": "cvm-cli"],
                "properties": ["description": "cvm-cli confidential VM images"],
            ])
            created.insert("gallery")
            state.log("created gallery \(target.gallery)")
        }
        state.artifact.resources["resource_group"] = target.resourceGroup
        state.artifact.resources["storage_account_id"] = n.storageAccount
        state.artifact.resources["gallery_id"] = n.gallery
        if !created.isEmpty { state.artifact.resources["created"] = created.sorted().joined(separator: ",") }
    }

    // MARK: upload

    var pendingMissing: [String] = []

    /// The storage key (listKeys, never logged) and blob endpoint of the storage account.
    func storageSession(_ n: Names) throws -> AzureStorageSession? {
        guard let account = try arm.get(n.storageAccount, apiVersion: API.storage) else { return nil }
        let keys = try arm.postRead(n.storageAccount + "/listKeys", apiVersion: API.storage)
        guard let key = (keys["keys"] as? [[String: Any]])?.compactMap({ $0["value"] as? String }).first else {
            throw CVMError.io("ARM listKeys of storage account '\(target.storageAccount)' returned no key; the account may use Entra-only access (allowSharedKeyAccess false)")
        }
        let endpoints = (account["properties"] as? [String: Any])?["primaryEndpoints"] as? [String: Any]
        var blob = endpoints?["blob"] as? String
        // A connection string for this same account may point at another blob endpoint.
        if let text = environment["AZURE_STORAGE_CONNECTION_STRING"], !text.isEmpty,
           let parsed = try? AzureDiscovery.parseConnectionString(text, source: "AZURE_STORAGE_CONNECTION_STRING"),
           parsed.accountName == target.storageAccount, text.lowercased().contains("blobendpoint=") {
            blob = parsed.blobEndpoint
        }
        let credentials = try AzureStorageCredentials(accountName: target.storageAccount, accountKey: key, blobEndpoint: blob,
                                                      source: "listKeys of \(target.storageAccount)")
        return try AzureStorageSession(credentials: credentials, client: makeHTTPClient())
    }

    public func uploadDisk(_ state: DeployState) throws {
        let r = state.request
        let n = names(r.vmName)
        try createBase(state, missing: pendingMissing)
        let disk = try DiskImageFile.open(r.diskPath)
        let identity = try DiskFileIdentity(path: r.diskPath)
        let session = try storageSession(n)
        let blobURL = session?.url(container: Self.container, blob: n.blobName)
            ?? "https://\(target.storageAccount).blob.core.windows.net/\(Self.container)/\(n.blobName)"
        let a = state.artifact
        if let session, a.resources["blob_url"] == blobURL, a.hasDigest(of: identity), try session.blobExists(blobURL) {
            state.log("blob \(blobURL) of this disk exists: not uploading again")
            return
        }
        if r.dryRun {
            state.plan.add(PlannedCall(method: "PUT", endpoint: blobURL, operation: "blob:PutBlob",
                                       parameters: [("x-ms-blob-type", "PageBlob"), ("container", Self.container)], mutating: true))
            state.plan.add(PlannedCall(method: "PUT", endpoint: blobURL + "?comp=page", operation: "blob:PutPage",
                                       parameters: [("pages", "each non-zero run of 512-byte pages of \(formatBytes(disk.virtualSize)) as a fixed VHD")], mutating: true))
            state.artifact.resources["blob_url"] = blobURL
            return
        }
        guard let session else { throw CVMError.io("storage account '\(target.storageAccount)' cannot be read after creating it") }
        var options = uploadOptions
        options.resume = true
        let store = AzureUploadStateStore(environment: environment, home: home)
        let stream = try FixedVHDStream.open(r.diskPath, timestamp: options.footerTimestamp)
        let result = try PageBlobUpload(session: session, options: options, store: store)
            .run(diskPath: r.diskPath, stream: stream, destination: AzureBlobDestination(container: Self.container, blob: n.blobName))
        state.log("uploaded \(formatBytes(result.bytesSent)) in \(result.pages) pages to \(result.url)")
        state.artifact.resources["blob_url"] = result.url
        state.artifact.diskSHA256 = hexString(try Self.contentSHA256(disk))
        state.artifact.recordDisk(identity)
    }

    /// SHA-256 of the virtual disk's bytes (holes hashed as zeros without reading them).
    static func contentSHA256(_ disk: DiskReader) throws -> [UInt8] {
        var hasher = SHA256Hasher()
        let chunk = 4 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        let zeros = [UInt8](repeating: 0, count: chunk)
        var offset: UInt64 = 0
        // Stored ranges with the holes between them (and after the last) as zero runs.
        var runs: [(Range<UInt64>, Bool)] = []
        for range in try disk.storedRanges() {
            if offset < range.lowerBound { runs.append((offset..<range.lowerBound, false)) }
            runs.append((range, true))
            offset = range.upperBound
        }
        if offset < disk.virtualSize { runs.append((offset..<disk.virtualSize, false)) }
        for (range, stored) in runs {
            offset = range.lowerBound
            while offset < range.upperBound {
                let n = Int(min(UInt64(chunk), range.upperBound - offset))
                if stored {
                    try buffer.withUnsafeMutableBytes { try disk.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: offset) }
                    buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                } else {
                    zeros.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                }
                offset += UInt64(n)
            }
        }
        return hasher.finalize()
    }

    // MARK: image

    static func imageDefinitionBody(vm: String, location: String) -> [String: Any] {
        [
            "location": location,
            "tags": [vmTag: vm],
            "properties": [
                "osType": "Linux", "osState": "Specialized", "hyperVGeneration": "V2", "architecture": "x64",
                "description": "cvm-cli confidential VM image of \(vm)",
                "identifier": ["publisher": "cvm-cli", "offer": vm, "sku": "\(vm)-def"],
                "features": [["name": "SecurityType", "value": "TrustedLaunchAndConfidentialVmSupported"]],
            ] as [String: Any],
        ]
    }

    static func imageVersionBody(location: String, blobURL: String, storageAccountID: String, diskSHA256: String?,
                                 vm: String, certs: SecureBootCerts?) -> [String: Any] {
        var properties: [String: Any] = [
            "publishingProfile": [
                "targetRegions": [["name": location, "regionalReplicaCount": 1, "storageAccountType": "Standard_LRS"]],
                "replicaCount": 1, "storageAccountType": "Standard_LRS",
            ] as [String: Any],
            "storageProfile": [
                "osDiskImage": ["hostCaching": "ReadWrite", "source": ["uri": blobURL, "storageAccountId": storageAccountID]],
            ],
        ]
        if let certs {
            func key(_ ders: [[UInt8]]) -> [String: Any] { ["type": "x509", "value": ders.map(Base64.encode)] }
            properties["securityProfile"] = [
                "uefiSettings": [
                    "signatureTemplateNames": ["NoSignatureTemplate"],
                    "additionalSignatures": ["pk": key([certs.pk]), "kek": [key(certs.kek)], "db": [key(certs.db)]],
                ] as [String: Any],
            ]
        }
        var tags = [vmTag: vm]
        if let diskSHA256 { tags[sha256Tag] = diskSHA256 }
        return ["location": location, "tags": tags, "properties": properties]
    }

    public func registerImage(_ state: DeployState) throws {
        let r = state.request
        let n = names(r.vmName)
        if try arm.get(n.imageDefinition, apiVersion: API.galleries) == nil {
            try arm.put(n.imageDefinition, apiVersion: API.galleries, operation: "Microsoft.Compute/galleries/images:write",
                        body: Self.imageDefinitionBody(vm: r.vmName, location: r.region))
            state.log("created image definition \(n.imageDefinitionName)")
        }
        state.artifact.resources["image_definition_id"] = n.imageDefinition
        let versions = try listVersions(n)
        let sha = state.artifact.diskSHA256
        if let sha, let same = versions.first(where: { $0.sha == sha && $0.state == "Succeeded" }) {
            state.log("image version \(same.name) of this disk exists")
            state.artifact.resources["image_version_id"] = n.imageVersion(same.name)
            return
        }
        // A new name: the VM keeps using the old version until it is replaced (retireOld).
        let next = (versions.compactMap { v in v.name.split(separator: ".").last.flatMap { Int($0) } }.max() ?? -1) + 1
        let name = "1.0.\(next)"
        try arm.put(n.imageVersion(name), apiVersion: API.galleries, operation: "Microsoft.Compute/galleries/images/versions:write",
                    body: Self.imageVersionBody(location: r.region, blobURL: state.artifact.resources["blob_url"] ?? "<blob>",
                                                storageAccountID: n.storageAccount, diskSHA256: sha, vm: r.vmName,
                                                certs: r.secureBootCerts))
        state.log("created image version \(name)")
        state.artifact.resources["image_version_id"] = n.imageVersion(name)
    }

    func listVersions(_ n: Names) throws -> [(name: String, sha: String?, state: String?)] {
        guard let list = try arm.get(n.imageDefinition + "/versions", apiVersion: API.galleries) else { return [] }
        return (list["value"] as? [[String: Any]] ?? []).compactMap { v in
            guard let name = v["name"] as? String else { return nil }
            return (name, (v["tags"] as? [String: Any])?[Self.sha256Tag] as? String, ARMClient.provisioningState(v))
        }
    }

    // MARK: network

    static func securityRules(_ ports: [PortRange]) -> [[String: Any]] {
        func rule(_ name: String, _ proto: String, _ range: String, _ priority: Int) -> [String: Any] {
            ["name": name, "properties": [
                "protocol": proto, "sourcePortRange": "*", "destinationPortRange": range,
                "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
                "access": "Allow", "priority": priority, "direction": "Inbound",
            ] as [String: Any]]
        }
        var rules = [rule("attestation_agent", "Tcp", "8000", 100)]
        for (i, p) in ports.enumerated() {
            rules.append(rule("Workload_\(p)", "*", p.description, 200 + i))
        }
        return rules
    }

    public func prepareNetwork(_ state: DeployState) throws {
        let r = state.request
        let n = names(r.vmName)
        let tags = [Self.vmTag: r.vmName]
        let wanted = Self.securityRules(r.additionalPorts)
        let existingNSG = try arm.get(n.nsg, apiVersion: API.network)
        let have = ((existingNSG?["properties"] as? [String: Any])?["securityRules"] as? [[String: Any]] ?? []).compactMap { rule -> String? in
            guard let name = rule["name"] as? String, let p = rule["properties"] as? [String: Any] else { return nil }
            return "\(name)|\(p["destinationPortRange"] ?? "")|\(p["priority"] ?? "")|\(p["protocol"] ?? "")"
        }
        let want = wanted.map { rule -> String in
            let p = rule["properties"] as! [String: Any]
            return "\(rule["name"]!)|\(p["destinationPortRange"]!)|\(p["priority"]!)|\(p["protocol"]!)"
        }
        if existingNSG == nil || Set(have) != Set(want) {
            try arm.put(n.nsg, apiVersion: API.network, operation: "Microsoft.Network/networkSecurityGroups:write",
                        body: ["location": r.region, "tags": tags, "properties": ["securityRules": wanted]])
            state.log("network security group \(r.vmName)-nsg: \(want.count) inbound rule(s)")
        }
        state.artifact.resources["nsg_id"] = n.nsg
        if try arm.get(n.vnet, apiVersion: API.network) == nil {
            try arm.put(n.vnet, apiVersion: API.network, operation: "Microsoft.Network/virtualNetworks:write", body: [
                "location": r.region, "tags": tags,
                "properties": [
                    "addressSpace": ["addressPrefixes": ["10.0.0.0/16"]],
                    "subnets": [["name": "default", "properties": ["addressPrefix": "10.0.0.0/24"]]],
                ] as [String: Any],
            ])
        }
        state.artifact.resources["vnet_id"] = n.vnet
        if try arm.get(n.publicIP, apiVersion: API.network) == nil {
            try arm.put(n.publicIP, apiVersion: API.network, operation: "Microsoft.Network/publicIPAddresses:write", body: [
                "location": r.region, "tags": tags, "sku": ["name": "Standard", "tier": "Regional"],
                "properties": ["publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"],
            ])
        }
        state.artifact.resources["public_ip_id"] = n.publicIP
        if try arm.get(n.nic, apiVersion: API.network) == nil {
            try arm.put(n.nic, apiVersion: API.network, operation: "Microsoft.Network/networkInterfaces:write", body: [
                "location": r.region, "tags": tags,
                "properties": [
                    "networkSecurityGroup": ["id": n.nsg],
                    "ipConfigurations": [["name": "ipconfig1", "properties": [
                        "subnet": ["id": n.subnet], "privateIPAllocationMethod": "Dynamic",
                        "publicIPAddress": ["id": n.publicIP], "primary": true,
                    ] as [String: Any]]],
                ] as [String: Any],
            ])
        }
        state.artifact.resources["nic_id"] = n.nic
    }

    // MARK: VM

    static func vmBody(vm: String, location: String, size: String, imageVersionID: String, nicID: String,
                       dataDiskGiB: Int?) -> [String: Any] {
        var storage: [String: Any] = [
            "imageReference": ["id": imageVersionID],
            "osDisk": [
                "name": "\(vm)-osdisk", "createOption": "FromImage", "caching": "ReadWrite", "deleteOption": "Delete",
                "managedDisk": ["storageAccountType": "Premium_LRS", "securityProfile": ["securityEncryptionType": "VMGuestStateOnly"]],
            ] as [String: Any],
        ]
        if let gib = dataDiskGiB {
            storage["dataDisks"] = [[
                "lun": 0, "name": "\(vm)-datadisk", "createOption": "Empty", "diskSizeGB": gib, "deleteOption": "Delete",
                "managedDisk": ["storageAccountType": "Premium_LRS"],
            ] as [String: Any]]
        }
        return [
            "location": location,
            "tags": [vmTag: vm],
            "properties": [
                "hardwareProfile": ["vmSize": size],
                "storageProfile": storage,
                "networkProfile": ["networkInterfaces": [["id": nicID, "properties": ["primary": true, "deleteOption": "Detach"]]]],
                "securityProfile": [
                    "securityType": "ConfidentialVM",
                    "uefiSettings": ["secureBootEnabled": true, "vTpmEnabled": true],
                ] as [String: Any],
                "diagnosticsProfile": ["bootDiagnostics": ["enabled": true]],
            ] as [String: Any],
        ]
    }

    public func createVM(_ state: DeployState) throws {
        let r = state.request
        let n = names(r.vmName)
        let image = state.artifact.resources["image_version_id"] ?? "<image version>"
        if let vm = try arm.get(n.vmPath, apiVersion: API.compute) {
            let props = vm["properties"] as? [String: Any]
            let current = ((props?["storageProfile"] as? [String: Any])?["imageReference"] as? [String: Any])?["id"] as? String
            if current?.lowercased() == image.lowercased() {
                state.log("VM \(r.vmName) runs image version \(image)")
                state.artifact.resources["vm_id"] = n.vmPath
                return
            }
            // A specialized image's disk cannot be swapped in place: replace the VM.
            state.log("VM \(r.vmName) runs another image; replacing it")
            try arm.delete(n.vmPath, apiVersion: API.compute, operation: "Microsoft.Compute/virtualMachines:delete")
            try arm.delete(n.disk(n.osDiskName), apiVersion: API.disks, operation: "Microsoft.Compute/disks:delete")
            try arm.delete(n.disk(n.dataDiskName), apiVersion: API.disks, operation: "Microsoft.Compute/disks:delete")
        }
        try arm.put(n.vmPath, apiVersion: API.compute, operation: "Microsoft.Compute/virtualMachines:write",
                    body: Self.vmBody(vm: r.vmName, location: r.region, size: r.vmType, imageVersionID: image,
                                      nicID: n.nic, dataDiskGiB: r.dataDiskGiB))
        state.log("created VM \(r.vmName) (\(r.vmType))")
        state.artifact.resources["vm_id"] = n.vmPath
        state.artifact.resources["os_disk_id"] = n.disk(n.osDiskName)
        if r.dataDiskGiB != nil { state.artifact.resources["data_disk_id"] = n.disk(n.dataDiskName) }
    }

    /// The VM PUT waits for provisioningState Succeeded; nothing more to wait for.
    public func waitUntilRunning(_ state: DeployState) throws {}

    public func assignPublicIP(_ state: DeployState) throws {
        guard !state.request.dryRun else { return }
        let n = names(state.request.vmName)
        guard let pip = try arm.get(n.publicIP, apiVersion: API.network),
              let ip = (pip["properties"] as? [String: Any])?["ipAddress"] as? String, !ip.isEmpty else {
            throw CVMError.io("public IP \(state.request.vmName)-ip has no address yet; rerun deploy-azure")
        }
        state.artifact.publicIP = ip
    }

    /// Image versions other than the one the VM now uses.
    public func retireOld(_ state: DeployState) throws {
        let n = names(state.request.vmName)
        let keep = state.artifact.resources["image_version_id"]
        for v in try listVersions(n) where n.imageVersion(v.name) != keep {
            state.log("deleting the earlier image version \(v.name)")
            try arm.delete(n.imageVersion(v.name), apiVersion: API.galleries, operation: "Microsoft.Compute/galleries/images/versions:delete")
        }
    }
}

extension AzureStorageSession {
    /// Get Blob Properties: true when the blob exists.
    func blobExists(_ blobURL: String) throws -> Bool {
        var request = self.request("HEAD", blobURL)
        request.acceptedStatuses = Set(200..<300).union([404])
        return try send("Get Blob Properties", request).status != 404
    }

    /// Delete Blob: false when it was not there.
    func deleteBlob(_ blobURL: String) throws -> Bool {
        var request = self.request("DELETE", blobURL)
        request.acceptedStatuses = Set(200..<300).union([404])
        return try send("Delete Blob", request).status != 404
    }
}
