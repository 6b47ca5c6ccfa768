import CVMSupport
import Foundation

/// Files QEMU loads from its data directories (`qemu-system-x86_64 -L help`), such as the PCI
/// option ROM of deploy-local's virtio-net-pci device, which the firmware measures into PCR 2.
public enum QEMUDataFiles {
    /// The ROM QEMU gives virtio-net-pci by default (its `romfile` property).
    public static let virtioNetROM = "efi-virtio.rom"

    /// The path of `name` in QEMU's data directories, nil when QEMU or the file is missing.
    public static func find(_ name: String) -> String? {
        guard let qemu = try? ExternalTool.find("qemu-system-x86_64", package: "qemu-system-x86", purpose: "deploy-local"),
              let dirs = try? qemu.run(["-L", "help"]) else { return nil }
        for dir in dirs.split(whereSeparator: \.isNewline) {
            let path = URL(fileURLWithPath: String(dir)).appendingPathComponent(name).resolvingSymlinksInPath().path
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        return nil
    }
}
