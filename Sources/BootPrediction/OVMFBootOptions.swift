import CVMCrypto
import CVMSupport

/// PCR 1 under deploy-local: the BootOrder and Boot#### variables OVMF's boot manager (BDS)
/// ends up with on a fresh VARS copy, measured as EV_EFI_VARIABLE_BOOT (the digest covers the
/// variable's data only, as EDK2 measures it), then the separator.
///
/// OVMF's PlatformBootManagerLib (2022.11): UiApp is registered first, then the boot manager
/// creates one option per bootable device it connected (with a QEMU bootorder, only those
/// devices: deploy-local's disk), then the UEFI Shell; FvFile options whose file is not in the
/// volume are removed; BootOrder puts the options QEMU's bootorder names first, then the
/// remaining FvFile options in creation order.
extension BootPrediction {
    /// deploy-local's q35 machine: with -nodefaults the virtio disk is the first PCI device
    /// added, so it sits at 00:01.0 (LocalDeploy's command line; the boot test checks it).
    static let bootDiskPCIDevice: UInt8 = 1

    static let uiAppFile = UEFIEvent.guid(0x462C_AA21, 0x7614, 0x4503, [0x83, 0x6E, 0x8A, 0xB6, 0xF4, 0x66, 0x23, 0x31])
    static let shellFile = UEFIEvent.guid(0x7C04_A583, 0x9E3E, 0x4F1C, [0xAD, 0x65, 0xE0, 0x52, 0x68, 0xD0, 0xB4, 0xD1])
    static let bdsDxeFile = UEFIEvent.guid(0x6D33_944A, 0xEC75, 0x4855, [0xA5, 0x4D, 0x80, 0x9C, 0x75, 0x24, 0x1F, 0x6C])
    /// MdeModulePkg's mBmAutoCreateBootOptionGuid: the optional data of auto-created options.
    static let autoCreatedOption = UEFIEvent.guid(0x8108_AC4E, 0x9F11, 0x4D59, [0x85, 0x0E, 0xE2, 0x1A, 0x52, 0x2C, 0x59, 0xB2])

    static let loadOptionActive: UInt32 = 0x1, loadOptionHidden: UInt32 = 0x8, loadOptionCategoryApp: UInt32 = 0x100

    /// Adds PCR 1's events, or returns why it cannot.
    mutating func predictBootVariables(_ ovmf: OVMFFirmware) -> String? {
        // FvFile options point into the volume BdsDxe runs from.
        guard let bdsVolume = ovmf.volume(containing: Self.bdsDxeFile), let volumeName = bdsVolume.name else {
            return "the firmware's DXE volume has no BdsDxe or no name GUID: its boot options cannot be derived"
        }
        struct Option { let number: UInt16; let data: [UInt8] }
        var created: [(option: Option, fromQemuBootOrder: Bool)] = []
        var next: UInt16 = 0
        func create(_ data: [UInt8], qemu: Bool) { created.append((Option(number: next, data: data), qemu)); next += 1 }
        let end: [UInt8] = [0x7F, 0xFF, 0x04, 0x00]
        func fvFile(_ file: [UInt8]) -> [UInt8] { [0x04, 0x07, 0x14, 0x00] + volumeName + [0x04, 0x06, 0x14, 0x00] + file + end }
        if bdsVolume.fileNames.contains(Self.uiAppFile) {
            create(Self.loadOption(attributes: Self.loadOptionActive | Self.loadOptionHidden | Self.loadOptionCategoryApp,
                                description: "UiApp", path: fvFile(Self.uiAppFile)), qemu: false)
        }
        // PciRoot(0x0)/Pci(device,0x0): ACPI PNP0A03 UID 0, then the PCI node.
        let disk: [UInt8] = [0x02, 0x01, 0x0C, 0x00, 0xD0, 0x41, 0x03, 0x0A, 0, 0, 0, 0, 0x01, 0x01, 0x06, 0x00, 0x00, Self.bootDiskPCIDevice] + end
        create(Self.loadOption(attributes: Self.loadOptionActive, description: "UEFI Misc Device", path: disk, optionalData: Self.autoCreatedOption), qemu: true)
        if bdsVolume.fileNames.contains(Self.shellFile) {
            create(Self.loadOption(attributes: Self.loadOptionActive, description: "EFI Internal Shell", path: fvFile(Self.shellFile)), qemu: false)
        }
        let order = created.filter(\.fromQemuBootOrder).map(\.option) + created.filter { !$0.fromQemuBootOrder }.map(\.option)
        var bootOrder: [UInt8] = []
        for option in order { bootOrder += [UInt8(option.number & 0xFF), UInt8(option.number >> 8)] }
        var events = [PredictedEvent(pcr: 1, type: TCGEventType.efiVariableBoot, description: "BootOrder", digest: SHA256.hash(bootOrder))]
        for option in order {
            let name = "Boot" + String(repeating: "0", count: 4 - String(option.number, radix: 16).count) + String(option.number, radix: 16).uppercased()
            events.append(PredictedEvent(pcr: 1, type: TCGEventType.efiVariableBoot, description: name, digest: SHA256.hash(option.data)))
        }
        events.append(UEFIEvent.separator(pcr: 1))
        add(events)
        return nil
    }

    /// EFI_LOAD_OPTION: Attributes, FilePathListLength, NUL-terminated UTF-16 description,
    /// the device path, optional data.
    static func loadOption(attributes: UInt32, description: String, path: [UInt8], optionalData: [UInt8] = []) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 6)
        out.putLE32(attributes, at: 0)
        out.putLE16(UInt16(path.count), at: 4)
        for u in Array(description.utf16) + [0] { out += [UInt8(u & 0xFF), UInt8(u >> 8)] }
        return out + path + optionalData
    }
}
