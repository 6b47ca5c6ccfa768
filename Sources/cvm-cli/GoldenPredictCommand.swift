import ArgumentParser
import CVMSupport
import DiskUpdate
import Foundation
import Workload

extension GoldenCommand {
    struct Predict: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Predict, without booting, the PCR values a disk will show.",
            discussion: """
            Writes the shape of /golden-measurement's pcrs plus "unpredictable": {"<pcr>": \
            "<reason>"}. PCR 23 comes from the workload on the disk's data partition (the events \
            the agent extends). PCRs 4 and 11 (UKI Authenticode hash and sections) and the \
            firmware PCRs (--firmware) are not predicted yet and are listed with the reason.
            """
        )

        @Argument(help: "The disk image (any readable format; tar.gz must be converted first).")
        var disk: String

        @Option(help: "The OVMF CODE file the VM boots with (firmware PCRs: not predicted yet).")
        var firmware: String?

        @Option(help: "The data partition's number when it has no 'data' name or label.")
        var partition: Int?

        @Option(name: [.short, .customLong("output")], help: "Write the prediction here (default: standard output).")
        var output: String?

        @Flag(help: "Overwrite --output if it exists.")
        var force = false

        func run() throws {
            try runReportingErrors {
                if let firmware, !FileManager.default.fileExists(atPath: firmware) {
                    throw CVMError.usage("--firmware \(firmware): no such file (the OVMF CODE file deploy-local boots with)")
                }
                let measurement = try DiskWorkloadMeasurement.measure(disk: disk, partitionIndex: partition)
                var unpredictable: [String: JSONValue] = [:]
                let firmwareReason = "firmware measurements (OVMF, its configuration and Secure Boot variables): not predicted by this version" + (firmware == nil ? "" : " even with --firmware")
                for pcr in [0, 1, 2, 3, 5, 6, 7] { unpredictable[String(pcr)] = .string(firmwareReason) }
                unpredictable["4"] = .string("boot chain (the UKI's Authenticode hash and the firmware's boot-manager events): not predicted by this version")
                unpredictable["11"] = .string("UKI sections (systemd-stub measurements): not predicted by this version")
                for pcr in [8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22] {
                    unpredictable[String(pcr)] = .string("not measured by this image's boot chain or runtime-dependent; not compared")
                }
                let events: [JSONValue] = measurement.events.map {
                    .object(["name": .string($0.name), "content_sha256": .string($0.contentSHA256), "digest": .string($0.digest)])
                }
                let document = JSONValue.object([
                    "pcrs": .object(["sha256": .object(["23": .string(measurement.pcr23)])]),
                    "workload_events": .array(events),
                    "unpredictable": .object(unpredictable),
                ])
                let bytes = CanonicalJSON.prettyBytes(document)
                if let output {
                    let out = try AtomicOutputFile(path: output, overwrite: force)
                    do {
                        try out.descriptor.write(bytes, at: 0)
                        try out.commit()
                    } catch {
                        out.discard()
                        throw error
                    }
                    FileHandle.standardError.write(Data("\(disk): PCR 23 \(measurement.pcr23) (\(measurement.events.count) workload events) → \(output); \(unpredictable.count) PCRs not predicted (see \"unpredictable\")\n".utf8))
                } else {
                    FileHandle.standardOutput.write(Data(bytes))
                }
            }
        }
    }
}
