import ArgumentParser
import BootPrediction
import CVMCrypto
import CVMSupport
import DiskUpdate
import Foundation
import LocalVM
import Workload

extension GoldenCommand {
    struct Predict: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Predict, without booting, the PCR values a disk shows under deploy-local.",
            discussion: """
            Writes the shape of /golden-measurement's pcrs plus "unpredictable": {"<pcr>": \
            "<reason>"} and the predicted "boot_events". PCR 4 (boot chain, UKI and kernel \
            Authenticode), 5 (GPT), 9 (kernel command line, initrd), 11 (UKI sections) and 23 \
            (workload) come from the disk; 1 (boot options), 3, 6 and 7 (Secure Boot variables) \
            from the firmware files; 2 from QEMU's virtio-net ROM; PCRs nothing extends keep \
            their reset values. See docs/boot-measurements.md.
            """
        )

        @Argument(help: "The disk image (any readable format; tar.gz must be converted first).")
        var disk: String

        @Option(help: "The OVMF CODE file the VM boots with (default: the one deploy-local uses).")
        var firmware: String?

        @Option(name: .customLong("firmware-vars"), help: "The OVMF VARS template that goes with --firmware (default: its OVMF_VARS sibling).")
        var firmwareVars: String?

        @Option(help: "The data partition's number when it has no 'data' name or label.")
        var partition: Int?

        @Option(name: [.short, .customLong("output")], help: "Write the prediction here (default: standard output).")
        var output: String?

        @Flag(help: "Overwrite --output if it exists.")
        var force = false

        func run() throws {
            try runReportingErrors {
                let firmwareFiles = try resolveFirmware()
                let boot = try BootPrediction.predict(disk: disk, firmware: firmwareFiles)
                let measurement = try DiskWorkloadMeasurement.measure(disk: disk, partitionIndex: partition)
                var pcrs: [String: JSONValue] = ["23": .string(measurement.pcr23)]
                for (pcr, value) in boot.pcrs { pcrs[String(pcr)] = .string(hexString(value)) }
                var unpredictable: [String: JSONValue] = [:]
                for (pcr, reason) in boot.unpredictable { unpredictable[String(pcr)] = .string(reason) }
                let events: [JSONValue] = measurement.events.map {
                    .object(["name": .string($0.name), "content_sha256": .string($0.contentSHA256), "digest": .string($0.digest)])
                }
                let bootEvents: [JSONValue] = boot.events.map {
                    .object(["pcr": .number(Double($0.pcr)), "type": .string($0.typeName), "what": .string($0.description), "digest": .string(hexString($0.digest))])
                }
                var inputs: [String: JSONValue] = [:]
                for (k, v) in boot.facts { inputs[k] = .string(v) }
                let document = JSONValue.object([
                    "pcrs": .object(["sha256": .object(pcrs)]),
                    "workload_events": .array(events),
                    "boot_events": .array(bootEvents),
                    "inputs": .object(inputs),
                    "unpredictable": .object(unpredictable),
                ])
                let bytes = CanonicalJSON.prettyBytes(document)
                try writeOutput(bytes, to: output, force: force)
                if let output {
                    let listed = boot.unpredictable.keys.sorted().map(String.init).joined(separator: ", ")
                    FileHandle.standardError.write(Data("\(disk): \(pcrs.count) PCRs predicted → \(output); not predictable: \(listed) (see \"unpredictable\")\n".utf8))
                }
            }
        }

        /// --firmware (+ its VARS sibling or --firmware-vars), else deploy-local's own files, else none.
        func resolveFirmware() throws -> BootPrediction.Firmware? {
            guard let firmware else {
                if let firmwareVars { throw CVMError.usage("--firmware-vars \(firmwareVars): give --firmware too") }
                guard let found = try? LocalDeploy.Firmware.find() else { return nil }
                return BootPrediction.Firmware(code: found.code, vars: found.vars, networkROM: QEMUDataFiles.find(QEMUDataFiles.virtioNetROM))
            }
            guard FileManager.default.fileExists(atPath: firmware) else {
                throw CVMError.usage("--firmware \(firmware): no such file (the OVMF CODE file deploy-local boots with)")
            }
            if let firmwareVars {
                guard FileManager.default.fileExists(atPath: firmwareVars) else {
                    throw CVMError.usage("--firmware-vars \(firmwareVars): no such file (the OVMF VARS template)")
                }
                return BootPrediction.Firmware(code: firmware, vars: firmwareVars, networkROM: QEMUDataFiles.find(QEMUDataFiles.virtioNetROM))
            }
            let url = URL(fileURLWithPath: firmware)
            let sibling = url.deletingLastPathComponent().appendingPathComponent(url.lastPathComponent.replacingOccurrences(of: "CODE", with: "VARS")).path
            guard sibling != url.path, FileManager.default.fileExists(atPath: sibling) else {
                throw CVMError.usage("--firmware \(firmware): no OVMF VARS file next to it (\(sibling)); give it with --firmware-vars")
            }
            return BootPrediction.Firmware(code: firmware, vars: sibling, networkROM: QEMUDataFiles.find(QEMUDataFiles.virtioNetROM))
        }
    }
}
