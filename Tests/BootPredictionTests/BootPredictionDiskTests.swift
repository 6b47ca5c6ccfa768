import BootPrediction
import CVMCrypto
import CVMSupport
import Foundation
import XCTest

/// `BootPrediction.predict` on small GPT disks made by sgdisk, mkfs.fat and mtools, with a UKI
/// objcopy builds from Debian's systemd-stub: PCR 11 against systemd-measure (systemd 252's own
/// calculation), PCR 4's images against pesign, and the errors a broken disk gets.
final class BootPredictionDiskTests: XCTestCase {
    struct Disk { let path: String; let uki: String; let kernel: String; let parts: [String: String] }

    /// A 48 MiB GPT disk: p1 ESP (FAT32) holding `ukiPath` (when given), p2 a Linux partition.
    func makeDisk(_ dir: String, ukiPath: String?, bootFile: String = "EFI/BOOT/BOOTX64.EFI", espType: String = "ef00") throws -> String {
        let disk = dir + "/disk.img", esp = dir + "/esp.img"
        try? FileManager.default.removeItem(atPath: esp)
        try Data().write(to: URL(fileURLWithPath: disk))
        let truncate = try BootTestSupport.tool("truncate", package: "coreutils")
        try truncate.run(["-s", "48M", disk])
        try BootTestSupport.tool("sgdisk", package: "gdisk").run(["-o", "-n", "1:2048:+40M", "-t", "1:\(espType)", "-n", "2:0:0", "-t", "2:8300", disk])
        try BootTestSupport.tool("mkfs.fat", package: "dosfstools").run(["-F", "32", "-S", "512", "-s", "1", "-C", esp, "40960"])
        let env = ["MTOOLS_SKIP_CHECK": "1", "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
        try BootTestSupport.tool("mmd", package: "mtools").run(["-i", esp, "::EFI", "::EFI/BOOT"], environment: env)
        if let ukiPath { try BootTestSupport.tool("mcopy", package: "mtools").run(["-i", esp, ukiPath, "::" + bootFile], environment: env) }
        try BootTestSupport.tool("dd", package: "coreutils").run(["if=\(esp)", "of=\(disk)", "bs=512", "seek=2048", "conv=notrunc", "status=none"])
        return disk
    }

    /// systemd-stub + sections; the "kernel" is systemd-boot's PE (any PE image will do for
    /// LoadImage and Authenticode).
    func makeUKI(_ dir: String) throws -> (uki: String, parts: [String: String]) {
        let stub = try BootTestSupport.packageFile(PEImageTests.stub, package: "systemd-boot-efi")
        let parts = ["linux": try BootTestSupport.packageFile(PEImageTests.bootManager, package: "systemd-boot-efi"),
                     "osrel": dir + "/osrel", "cmdline": dir + "/cmdline", "initrd": dir + "/initrd"]
        try Data("ID=test\nVERSION_ID=1\n".utf8).write(to: URL(fileURLWithPath: parts["osrel"]!))
        try Data("console=ttyS0 root=/dev/vda2\n".utf8).write(to: URL(fileURLWithPath: parts["cmdline"]!))
        try Data(BootTestSupport.pseudoRandom(123_457, seed: 11)).write(to: URL(fileURLWithPath: parts["initrd"]!))
        let uki = dir + "/uki.efi"
        try BootTestSupport.tool("objcopy", package: "binutils").run([
            "--add-section", ".osrel=\(parts["osrel"]!)", "--change-section-vma", ".osrel=0x20000",
            "--add-section", ".cmdline=\(parts["cmdline"]!)", "--change-section-vma", ".cmdline=0x30000",
            "--add-section", ".linux=\(parts["linux"]!)", "--change-section-vma", ".linux=0x2000000",
            "--add-section", ".initrd=\(parts["initrd"]!)", "--change-section-vma", ".initrd=0x3000000", stub, uki])
        return (uki, parts)
    }

    func pesign(_ path: String) throws -> String {
        let out = try BootTestSupport.tool("pesign", package: "pesign").run(["-h", "-i", path])
        return String(out.split(separator: " ").last ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func testPredictsTheUKIMeasurements() throws {
        let dir = try BootTestSupport.temporaryDirectory("predict-disk")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (uki, parts) = try makeUKI(dir)
        let disk = try makeDisk(dir, ukiPath: uki)
        let p = try BootPrediction.predict(disk: disk, firmware: nil)

        // PCR 11: systemd-measure computes it from the same sections, then extends the boot
        // phase "enter-initrd" (SHA-256 of the word) on top.
        let measure = try BootTestSupport.packageFile("/usr/lib/systemd/systemd-measure", package: "systemd")
        let out = try ExternalTool(name: "systemd-measure", package: "systemd", path: measure).run(
            ["calculate", "--linux=\(parts["linux"]!)", "--osrel=\(parts["osrel"]!)", "--cmdline=\(parts["cmdline"]!)",
             "--initrd=\(parts["initrd"]!)", "--bank=sha256", "--phase=enter-initrd", "--json=short"])
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        let expected = try XCTUnwrap(((json["sha256"] as? [[String: Any]])?.first)?["hash"] as? String)
        let pcr11 = try XCTUnwrap(p.pcrs[11])
        XCTAssertEqual(hexString(SHA256.hash(pcr11 + SHA256.hash("enter-initrd"))), expected)

        // PCR 4: the UKI, then the kernel it LoadImages, by pesign's digests.
        let apps = p.events.filter { $0.pcr == 4 && $0.type == TCGEventType.efiBootServicesApplication }.map { hexString($0.digest) }
        XCTAssertEqual(apps, [try pesign(uki), try pesign(parts["linux"]!)])
        XCTAssertEqual(p.events.filter { $0.pcr == 4 }.map(\.typeName),
                       ["EV_EFI_ACTION", "EV_SEPARATOR", "EV_EFI_BOOT_SERVICES_APPLICATION", "EV_EFI_BOOT_SERVICES_APPLICATION"])
        var pcr4 = [UInt8](repeating: 0, count: 32)
        for e in p.events where e.pcr == 4 { pcr4 = SHA256.hash(pcr4 + e.digest) }
        XCTAssertEqual(p.pcrs[4], pcr4)
        XCTAssertEqual(p.facts["systemd_stub"]?.hasPrefix("252"), true)

        // The "kernel" is no bzImage: PCR 9 is not guessed. Without firmware, its PCRs neither.
        XCTAssertNil(p.pcrs[9])
        XCTAssertNotNil(p.unpredictable[9])
        for pcr in [1, 2, 3, 6, 7] { XCTAssertNotNil(p.unpredictable[pcr], "PCR \(pcr)") }
        XCTAssertNotNil(p.pcrs[5])
        XCTAssertEqual(Set(p.pcrs.keys).intersection(p.unpredictable.keys), [])
    }

    /// A boot file that is not a systemd-stub UKI (here systemd-boot, a boot menu that loads
    /// whatever it finds): what it measures is not guessed.
    func testOtherBootFilesLeaveTheirPCRsUnpredicted() throws {
        let dir = try BootTestSupport.temporaryDirectory("predict-other")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let disk = try makeDisk(dir, ukiPath: try BootTestSupport.packageFile(PEImageTests.bootManager, package: "systemd-boot-efi"))
        let p = try BootPrediction.predict(disk: disk, firmware: nil)
        for pcr in [4, 8, 9, 11, 12, 13, 14] {
            XCTAssertNil(p.pcrs[pcr], "PCR \(pcr)")
            XCTAssertTrue(p.unpredictable[pcr]?.contains("not a systemd-stub UKI") == true, "PCR \(pcr): \(p.unpredictable[pcr] ?? "")")
        }
        XCTAssertNotNil(p.pcrs[5], "the GPT is measured whatever boots")
        XCTAssertEqual(p.facts["boot_file_authenticode_sha256"], try pesign(PEImageTests.bootManager))
    }

    func testBrokenDisksAreNamedErrors() throws {
        let dir = try BootTestSupport.temporaryDirectory("predict-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (uki, _) = try makeUKI(dir)

        let noFile = try makeDisk(dir, ukiPath: nil)
        XCTAssertThrowsError(try BootPrediction.predict(disk: noFile, firmware: nil)) { error in
            XCTAssertTrue("\(error)".contains("has no \\EFI\\BOOT\\BOOTX64.EFI"), "\(error)")
        }
        let noESP = try makeDisk(dir, ukiPath: uki, espType: "0700")
        XCTAssertThrowsError(try BootPrediction.predict(disk: noESP, firmware: nil)) { error in
            XCTAssertTrue("\(error)".contains("has no EFI system partition"), "\(error)")
        }
        try Data(count: 1 << 20).write(to: URL(fileURLWithPath: dir + "/blank.img"))
        XCTAssertThrowsError(try BootPrediction.predict(disk: dir + "/blank.img", firmware: nil)) { error in
            XCTAssertTrue("\(error)".contains("blank.img"), "\(error)")
        }
        // A VARS file that is not one: the firmware file is named.
        let disk = try makeDisk(dir, ukiPath: uki)
        let firmware = BootPrediction.Firmware(code: try BootTestSupport.packageFile(OVMFFirmwareTests.code, package: "ovmf"), vars: dir + "/blank.img")
        XCTAssertThrowsError(try BootPrediction.predict(disk: disk, firmware: firmware)) { error in
            XCTAssertTrue("\(error)".contains("blank.img: not an OVMF VARS file"), "\(error)")
        }
    }
}
