import CVMCrypto
import CVMSupport
import DiskImage

/// The PCR values a disk will show when deploy-local boots it (QEMU q35 + OVMF + swtpm, one
/// virtio disk, Secure Boot off), computed without booting from the disk and the firmware
/// files: the events each boot component measures, replayed. What cannot be known from those
/// files is listed with the reason. See docs/boot-measurements.md.
public struct BootPrediction: Sendable {
    /// The OVMF files deploy-local boots with: the CODE volume and the VARS template it copies.
    public struct Firmware: Sendable {
        public let code: String
        public let vars: String
        /// The option ROM QEMU attaches to deploy-local's virtio-net-pci device (efi-virtio.rom).
        public let networkROM: String?
        public init(code: String, vars: String, networkROM: String? = nil) {
            self.code = code
            self.vars = vars
            self.networkROM = networkROM
        }
    }

    /// Measured events in the order the boot makes them (per PCR, the order of extension).
    public var events: [PredictedEvent] = []
    /// SHA-256 bank values of the predicted PCRs.
    public var pcrs: [Int: [UInt8]] = [:]
    /// PCR → why it cannot be predicted from the disk and firmware files.
    public var unpredictable: [Int: String] = [:]
    /// What the prediction read: the UKI's path and Authenticode digest, stub and kernel versions.
    public var facts: [String: String] = [:]

    /// The file the firmware boots from the ESP: the removable-media path, as OVMF's
    /// auto-created boot option for the disk has no file path of its own.
    public static let bootFile = "EFI/BOOT/BOOTX64.EFI"
    static let espType = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    static let networkROMName = "efi-virtio.rom"

    public static func predict(disk path: String, firmware: Firmware?) throws -> BootPrediction {
        var p = BootPrediction()
        let reader = try DiskImageFile.open(path)
        guard !reader.isSequential else {
            throw CVMError.unsupported("\(path): a \(reader.format.rawValue) disk is read sequentially only; convert it to raw first (cvm-cli convert)")
        }
        let gpt = try GPT.read(from: reader, name: path)
        guard let esp = gpt.partitions.first(where: { $0.typeGUID == espType }) else {
            throw CVMError.invalid("\(path): has no EFI system partition (GPT type \(espType)); the firmware cannot boot it")
        }
        let fat = try FATFileSystem(disk: reader, offset: esp.offset, size: esp.size, name: "\(path) partition \(esp.index) (ESP)")
        guard let bootEntry = try fat.lookup(bootFile), !bootEntry.isDirectory else {
            throw CVMError.invalid("\(path): the ESP (partition \(esp.index)) has no \\\(bootFile.replacingSlashes()); the firmware would find nothing to boot")
        }
        let uki = try PEImage(try fat.read(bootEntry), name: "\(path): \\\(bootFile.replacingSlashes())")
        let ukiDigest = uki.authenticodeSHA256()
        p.facts["boot_file"] = "\\" + bootFile.replacingSlashes()
        p.facts["boot_file_authenticode_sha256"] = hexString(ukiDigest)

        // What systemd-stub will find besides the UKI: credentials and system extensions next to
        // it are measured (PCR 12/13) and join the initrd (PCR 9).
        var extras: [String] = []
        for dir in [bootFile + ".extra.d", "loader/credentials"] where try fat.lookup(dir) != nil { extras.append("\\" + dir.replacingSlashes()) }

        let stub = SystemdStub(uki)
        if let version = stub.version { p.facts["systemd_stub"] = version }
        let kernelImage = try uki.mappedSection(".linux").map { try PEImage($0, name: "\(path): the UKI's .linux section") }
        let kernelVersion = uki.mappedSection(".linux").flatMap(Self.linuxVersion)
        if let kernelVersion { p.facts["kernel"] = kernelVersion }

        // PCR 4: the boot manager's action, the separator, the UKI (LoadImage from the ESP), and
        // the kernel systemd-stub 252 starts through LoadImage from its .linux section.
        // PCR 11: systemd-stub's sections (name, then content) in its own order.
        // PCR 9: the kernel's EFI stub measures the command line it was given and the initrd.
        // Any other boot file may load and measure anything (GRUB: 8/9, shim: 14): not guessed.
        if stub.isModelled, let kernelImage {
            p.add([UEFIEvent.action(pcr: 4, "Calling EFI Application from Boot Option"), UEFIEvent.separator(pcr: 4),
                   PredictedEvent(pcr: 4, type: TCGEventType.efiBootServicesApplication,
                                  description: "\\" + bootFile.replacingSlashes() + " (Authenticode)", digest: ukiDigest),
                   PredictedEvent(pcr: 4, type: TCGEventType.efiBootServicesApplication,
                                  description: ".linux section (kernel, Authenticode)", digest: kernelImage.authenticodeSHA256())])
            p.add(stub.sectionEvents())
            if !extras.isEmpty {
                p.unpredictable[9] = "systemd-stub adds \(extras.joined(separator: ", ")) from the ESP to the initrd the kernel measures"
            } else if let kernelVersion, kernelVersion.hasPrefix("6.1.") {
                p.add(stub.kernelStubEvents())
            } else {
                p.unpredictable[9] = "kernel \(kernelVersion ?? "of unknown version (no bzImage header)"): its EFI stub's PCR 9 measurements (LoadOptions, initrd) are modelled for Linux 6.1 (Debian 12) only"
            }
        } else {
            let reason = stub.version == nil
                ? "\\\(bootFile.replacingSlashes()) is not a systemd-stub UKI (no .sdmagic): what it loads and measures is unknown"
                : stub.isModelled ? "the UKI has no .linux section: what systemd-stub does without a kernel is not modelled"
                : stub.notModelled(what: "what it loads and measures")
            for pcr in [4, 8, 9, 11, 12, 13, 14] { p.unpredictable[pcr] = reason }
        }

        // PCR 5: separator, the GPT of the boot disk, ExitBootServices.
        p.add([UEFIEvent.separator(pcr: 5),
               PredictedEvent(pcr: 5, type: TCGEventType.efiGPTEvent, description: "GPT header and used partition entries",
                              digest: SHA256.hash(try Self.gptEventData(reader, name: path))),
               UEFIEvent.action(pcr: 5, "Exit Boot Services Invocation"),
               UEFIEvent.action(pcr: 5, "Exit Boot Services Returned with Success")])

        // Never extended by this boot chain: the reset values.
        let zero = [UInt8](repeating: 0, count: 32)
        for pcr in [8, 14, 15, 16] where p.unpredictable[pcr] == nil { p.pcrs[pcr] = zero }
        if extras.isEmpty {
            for pcr in [12, 13] where p.unpredictable[pcr] == nil { p.pcrs[pcr] = zero }
        } else if p.unpredictable[12] == nil {
            p.unpredictable[12] = "systemd-stub measures the credentials in \(extras.joined(separator: ", ")) into PCR 12"
            p.unpredictable[13] = "systemd-stub measures the system extensions in \(extras.joined(separator: ", ")) into PCR 13"
        }
        for pcr in 17...22 { p.pcrs[pcr] = [UInt8](repeating: 0xFF, count: 32) }

        // The firmware's own PCRs.
        if let firmware {
            try p.predictFirmware(firmware)
        } else {
            for pcr in [1, 2, 3, 6, 7] { p.unpredictable[pcr] = "no OVMF firmware file given (--firmware) and none installed" }
        }
        p.unpredictable[0] = "OVMF hashes its PEI volume (EV_EFI_PLATFORM_FIRMWARE_BLOB at 0x820000, 0xE0000 bytes) from RAM after PlatformPei has written its global variables into it — values QEMU's configuration decides (memory size, CPU count: deploy-local's --memory/--cpus); only the DXE volume and the CRTM version follow from the firmware file"
        p.unpredictable[10] = "the kernel's IMA boot_aggregate hashes PCRs 0–9, and PCR 0 is unpredictable"
        return p
    }

    mutating func add(_ list: [PredictedEvent]) {
        for e in list {
            events.append(e)
            pcrs[e.pcr] = SHA256.hash((pcrs[e.pcr] ?? [UInt8](repeating: 0, count: 32)) + e.digest)
        }
    }

    mutating func predictFirmware(_ firmware: Firmware) throws {
        let codeFile = try FileDescriptor.openForReading(firmware.code)
        let codeBytes = try codeFile.read(count: Int(min(try codeFile.size(), 64 << 20)), at: 0)
        codeFile.close()
        guard codeBytes.ascii(40, 4) == "_FVH" else {
            throw CVMError.usage("--firmware \(firmware.code): not an OVMF CODE file (no firmware volume at its start)")
        }
        let ovmf = try OVMFFirmware(code: codeBytes, name: firmware.code)
        let varsBytes: [UInt8]
        do {
            let vars = try FileDescriptor.openForReading(firmware.vars)
            defer { vars.close() }
            varsBytes = try vars.read(count: Int(try vars.size()), at: 0)
        } catch {
            throw CVMError.usage("\(firmware.vars): cannot read the OVMF VARS file that goes with \(firmware.code) (\(error))")
        }
        let store = try OVMFVariableStore(varsBytes, name: firmware.vars)
        facts["firmware"] = firmware.code
        facts["firmware_vars"] = firmware.vars

        // PCR 3 and 6: nothing but the separator on this machine (no platform-specific events).
        add([UEFIEvent.separator(pcr: 3), UEFIEvent.separator(pcr: 6)])

        // PCR 2: the UEFI driver of the virtio-net option ROM (the only device with a ROM), by its
        // Authenticode digest, then the separator.
        if let rom = firmware.networkROM {
            do {
                let romFile = try FileDescriptor.openForReading(rom)
                defer { romFile.close() }
                let driver = try PEImage(try PCIOptionROM.uefiDriver(try romFile.read(count: Int(try romFile.size()), at: 0), name: rom), name: rom)
                facts["network_option_rom"] = rom
                add([PredictedEvent(pcr: 2, type: TCGEventType.efiBootServicesDriver, description: "virtio-net option ROM driver (Authenticode)",
                                    digest: driver.authenticodeSHA256()),
                     UEFIEvent.separator(pcr: 2)])
            } catch let error as CVMError {
                unpredictable[2] = "QEMU's virtio-net option ROM is measured as an EV_EFI_BOOT_SERVICES_DRIVER, but \(error.message)"
            }
        } else {
            unpredictable[2] = "QEMU's virtio-net option ROM (\(Self.networkROMName), measured as an EV_EFI_BOOT_SERVICES_DRIVER) was not found in QEMU's data directories"
        }

        // PCR 1: the boot options OVMF's boot manager leaves for deploy-local's machine.
        if let reason = predictBootVariables(ovmf) { unpredictable[1] = reason }

        // PCR 7: the Secure Boot state and databases as the VARS file holds them, then the
        // separator. Enrolled keys would also measure the db entry that verified each image.
        let global = UEFIEvent.globalVariableGUID, security = UEFIEvent.imageSecurityDatabaseGUID
        if store.value("PK", vendor: global) != nil {
            unpredictable[7] = "\(firmware.vars) enrolls a platform key: Secure Boot is on and PCR 7 also measures the db entries that verify each image (EV_EFI_VARIABLE_AUTHORITY), not modelled"
            return
        }
        var pcr7: [PredictedEvent] = []
        // SecureBoot is the firmware's view (0: no PK), one byte.
        for (name, vendor, data) in [("SecureBoot", global, [UInt8(0)]), ("PK", global, []), ("KEK", global, store.value("KEK", vendor: global) ?? []),
                                     ("db", security, store.value("db", vendor: security) ?? []), ("dbx", security, store.value("dbx", vendor: security) ?? [])] {
            pcr7.append(PredictedEvent(pcr: 7, type: TCGEventType.efiVariableDriverConfig, description: "\(name) (\(data.count) bytes)",
                                       digest: SHA256.hash(UEFIEvent.variableData(vendor: vendor, name: name, data: data))))
        }
        pcr7.append(UEFIEvent.separator(pcr: 7))
        add(pcr7)
    }

    /// UEFI_GPT_DATA: the primary GPT header (92 bytes), the number of used entries (UINT64) and
    /// those entries in table order — what the firmware measures when it boots from the disk.
    static func gptEventData(_ reader: DiskReader, name: String) throws -> [UInt8] {
        let header = try reader.bytes(count: 512, at: GPT.sectorSize)
        let entriesLBA = header.le64(72), count = Int(header.le32(80)), size = Int(header.le32(84))
        guard count > 0, count <= 1024, size >= 128, size <= 1024 else {
            throw CVMError.invalid("\(name): GPT header has \(count) entries of \(size) bytes")
        }
        let entries = try reader.bytes(count: count * size, at: entriesLBA * GPT.sectorSize)
        var used: [UInt8] = []
        var n: UInt64 = 0
        for i in 0..<count where entries[i * size..<i * size + 16].contains(where: { $0 != 0 }) {
            used += entries[i * size..<(i + 1) * size]
            n += 1
        }
        return Array(header.prefix(92)) + UEFIEvent.le64(n) + used
    }

    /// The kernel release in a bzImage's setup header ("6.1.0-56-cloud-amd64").
    static func linuxVersion(_ kernel: [UInt8]) -> String? {
        guard kernel.count > 0x210, kernel.ascii(0x202, 4) == "HdrS" else { return nil }
        let offset = Int(kernel.le16(0x20E)) + 0x200
        guard offset < kernel.count else { return nil }
        let text = kernel[offset..<min(kernel.count, offset + 256)].prefix { $0 != 0 && $0 != 0x20 }
        return text.isEmpty ? nil : String(decoding: text, as: UTF8.self)
    }
}

extension String {
    func replacingSlashes() -> String { String(map { $0 == "/" ? "\\" : $0 }) }
}
