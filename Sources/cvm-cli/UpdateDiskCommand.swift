import ArgumentParser
import CVMSupport
import DiskImage
import DiskUpdate
import Foundation
import Workload

struct UpdateDiskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update-disk",
        abstract: "Write a workload folder into a disk image's data partition.",
        discussion: """
        Works on raw, fixed VHD, stream-optimized VMDK and GCP tar.gz, keeping the format; qcow2 \
        and dynamic VHD need --output. The data partition (GPT name or ext4 label 'data') is \
        rebuilt with /workload replaced; everything else is kept. The original is replaced only \
        when the new disk is complete and re-read. Prints the workload measurement (PCR 23).
        """
    )

    @Argument(help: "Disk image to update.")
    var disk: String

    @Option(help: "The workload folder.")
    var workload: String = "workload"

    @Option(help: "Write the result here instead of replacing the disk.")
    var output: String?

    @Option(help: "Output format with --output: raw, vhd, vmdk or tar.gz (default: from the name).")
    var format: String?

    @Option(help: "GPT index (1-based, as `inspect` shows) of the data partition.")
    var partition: Int?

    @Flag(help: "With --output: replace the file if it exists.")
    var force = false

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if let format, OutputFormat(rawValue: format.lowercased()) == nil {
            throw ValidationError("--format '\(format)' is not known; expected raw, vhd, vmdk or tar.gz")
        }
        // Without --output the disk is replaced in its own format; --format would silently
        // re-encode it under the same name.
        if let format, output == nil {
            throw ValidationError("--format \(format) needs --output PATH; without --output the disk keeps its own format")
        }
        if let partition, partition < 1 {
            throw ValidationError("--partition \(partition): GPT indexes start at 1")
        }
    }

    func run() throws {
        try runReportingErrors {
            var options = UpdateDisk.Options()
            options.workloadPath = workload
            options.outputPath = output
            options.outputFormat = format.flatMap { OutputFormat(rawValue: $0.lowercased()) }
            options.partitionIndex = partition
            options.overwriteOutput = force
            options.showProgress = !json && ProgressReporter.stderrIsTerminal
            let r = try UpdateDisk.run(disk: disk, options: options)
            if json {
                try printJSON(UpdateDiskJSON(r))
                return
            }
            for w in r.warnings { FileHandle.standardError.write(Data("\(w)\n".utf8)) }
            print("\(r.output): data partition \(r.partition.index) ('\(r.partition.name)', \(r.filesystem.type) label '\(r.filesystem.label)') "
                  + "rebuilt with \(workload)/ — \(formatBytes(r.usedBlocks * 4096)) used of \(formatBytes(r.partition.size)), "
                  + "\(r.format.rawValue), \(String(format: "%.2f", r.seconds)) s")
            print("workload measurement:")
            for e in r.measurement.events { print("  \(e.digest)  \(e.name)") }
            print("PCR 23: \(r.measurement.pcr23)")
        }
    }
}

struct UpdateDiskJSON: Encodable {
    let disk: String
    let output: String
    let format: String
    let partition: Int
    let partitionName: String
    let filesystemUUID: String
    let usedBytes: UInt64
    let partitionSize: UInt64
    let pcr23: String
    let workloadEvents: [WorkloadMeasurement.Event]
    let warnings: [WorkloadDiagnostic]
    let seconds: Double

    init(_ r: UpdateDisk.Result) {
        disk = r.disk
        output = r.output
        format = r.format.rawValue
        partition = r.partition.index
        partitionName = r.partition.name
        filesystemUUID = r.filesystem.uuid
        usedBytes = r.usedBlocks * 4096
        partitionSize = r.partition.size
        pcr23 = r.measurement.pcr23
        workloadEvents = r.measurement.events
        warnings = r.warnings
        seconds = (r.seconds * 1000).rounded() / 1000
    }

    enum CodingKeys: String, CodingKey {
        case disk, output, format, partition, warnings, seconds
        case partitionName = "partition_name", filesystemUUID = "filesystem_uuid", usedBytes = "used_bytes"
        case partitionSize = "partition_size", pcr23 = "pcr23", workloadEvents = "workload_events"
    }
}
