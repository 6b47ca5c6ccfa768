import CVMCrypto
import CVMMatrix
import CVMSupport
import Deploy
import Foundation

/// The names deploy-gcp gives things and the JSON bodies it sends (pure functions, so the
/// tests can look at them without a server).
public enum GCPNames {
    /// Label on every resource deploy-gcp makes: the VM it belongs to.
    public static let vmLabel = "cvm-cli-vm"
    /// Label with the first 12 hex digits of the disk's SHA-256 (image and instance).
    public static let diskLabel = "cvm-disk-sha256"

    public static func image(vm: String) -> String { "\(vm)-image" }
    public static func firewall(vm: String) -> String { "\(vm)-ingress" }
    public static func dataDisk(vm: String) -> String { "\(vm)-data" }
    /// `<vm>-<sha256[:12]>.tar.gz` (a dry run's `<placeholder>` is kept whole).
    public static func object(vm: String, diskSHA256 hex: String) -> String {
        "\(vm)-\(hex.hasPrefix("<") ? hex : String(hex.prefix(12))).tar.gz"
    }

    /// `asia-southeast1-b` → `asia-southeast1`.
    public static func region(ofZone zone: String) -> String {
        guard let dash = zone.lastIndex(of: "-") else { return zone }
        return String(zone[..<dash])
    }

    /// GCE names: `[a-z]([-a-z0-9]*[a-z0-9])?`, and `<vm>-ingress` must fit in 63.
    public static func checkVMName(_ vm: String) throws {
        let ok = (1...55).contains(vm.count) && vm.first!.isLowercase
            && vm.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" } && vm.last != "-"
        guard ok else {
            throw CVMError.usage("--vm_name '\(vm)': on GCP expected 1–55 lowercase letters, digits and '-', starting with a letter (it names the instance, `\(vm)-image` and `\(vm)-ingress`)")
        }
    }
}

public enum GCPComputeBodies {
    /// Guest OS features of a confidential image that boots on SEV, SEV-SNP and TDX machines.
    public static let guestOsFeatures = [
        "UEFI_COMPATIBLE", "GVNIC", "VIRTIO_SCSI_MULTIQUEUE", "SEV_SNP_CAPABLE", "TDX_CAPABLE", "SEV_CAPABLE",
        "SEV_LIVE_MIGRATABLE_V2",
    ]

    /// images.insert: the uploaded archive as raw disk, Secure Boot keys as initial state.
    public static func image(name: String, vm: String, bucket: String, object: String, diskSHA256: String,
                             region: String, certs: SecureBootCerts?) -> [String: Any] {
        var body: [String: Any] = [
            "name": name,
            "description": "cvm-cli confidential VM image of \(vm); disk sha256 \(diskSHA256)",
            "rawDisk": ["source": "https://storage.googleapis.com/\(bucket)/\(object)", "containerType": "TAR"],
            "guestOsFeatures": guestOsFeatures.map { ["type": $0] },
            "storageLocations": [region],
            "architecture": "X86_64",
            "labels": [GCPNames.vmLabel: vm, GCPNames.diskLabel: String(diskSHA256.prefix(12))],
        ]
        if let certs {
            func buffer(_ der: [UInt8]) -> [String: Any] { ["content": Base64.encode(der), "fileType": "X509"] }
            body["shieldedInstanceInitialState"] = [
                "pk": buffer(certs.pk), "keks": certs.kek.map(buffer), "dbs": certs.db.map(buffer),
            ]
        }
        return body
    }

    /// firewalls.insert/patch: tcp 8000 and the additional ports, to instances tagged `vm`.
    public static func firewall(name: String, vm: String, ports: [PortRange]) -> [String: Any] {
        [
            "name": name,
            "description": "cvm-cli: agent port 8000 and --additional_ports of \(vm)",
            "network": "global/networks/default",
            "direction": "INGRESS",
            "priority": 1000,
            "sourceRanges": ["0.0.0.0/0"],
            "targetTags": [vm],
            "allowed": [["IPProtocol": "tcp", "ports": firewallPorts(ports)]],
        ]
    }

    public static func firewallPorts(_ ports: [PortRange]) -> [String] {
        var out = ["8000"]
        for p in ports where !out.contains(p.description) { out.append(p.description) }
        return out
    }

    /// instances.insert: SEV-SNP (n2d, AMD Milan) or TDX (c3), Shielded VM, boot disk from the
    /// image, optional pd-balanced data disk, serial port, network tag, external IP.
    public static func instance(vm: String, zone: String, project: String, vmType: String, tee: TEE, image: String,
                                diskSHA256: String, dataDiskGiB: Int?) -> [String: Any] {
        var disks: [[String: Any]] = [[
            "boot": true, "autoDelete": true, "type": "PERSISTENT", "mode": "READ_WRITE", "deviceName": "boot",
            "initializeParams": [
                "sourceImage": "projects/\(project)/global/images/\(image)",
                "diskType": "zones/\(zone)/diskTypes/pd-balanced",
            ],
        ]]
        if let gib = dataDiskGiB {
            disks.append([
                "boot": false, "autoDelete": true, "type": "PERSISTENT", "mode": "READ_WRITE", "deviceName": "data",
                "initializeParams": [
                    "diskName": GCPNames.dataDisk(vm: vm), "diskSizeGb": String(gib),
                    "diskType": "zones/\(zone)/diskTypes/pd-balanced",
                ],
            ])
        }
        var body: [String: Any] = [
            "name": vm,
            "description": "cvm-cli confidential VM \(vm)",
            "machineType": "zones/\(zone)/machineTypes/\(vmType)",
            "confidentialInstanceConfig": ["confidentialInstanceType": tee == .tdx ? "TDX" : "SEV_SNP"],
            "scheduling": ["onHostMaintenance": "TERMINATE", "automaticRestart": true],
            "shieldedInstanceConfig": ["enableSecureBoot": true, "enableVtpm": true, "enableIntegrityMonitoring": true],
            "disks": disks,
            "networkInterfaces": [[
                "network": "global/networks/default",
                "nicType": "GVNIC",
                "accessConfigs": [["name": "External NAT", "type": "ONE_TO_ONE_NAT", "networkTier": "PREMIUM"]],
            ]],
            "metadata": ["items": [["key": "serial-port-enable", "value": "TRUE"]]],
            "tags": ["items": [vm]],
            "labels": [GCPNames.vmLabel: vm, GCPNames.diskLabel: String(diskSHA256.prefix(12))],
        ]
        if tee != .tdx { body["minCpuPlatform"] = "AMD Milan" }
        return body
    }
}
