import AgentClient
import ArgumentParser
import CVMSupport
import Foundation
import Workload

struct UpdateWorkloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update-workload",
        abstract: "Replace the workload on a running VM and check its new PCR 23.",
        discussion: """
        Checks the folder (as `workload check`: any error and nothing is sent), packs it \
        reproducibly and POSTs it to https://HOST:PORT/update-workload over pinned TLS (as \
        `golden fetch`) with the API token: the argument, else the one `cvm-cli api-token` \
        stored for this VM, else $CVM_API_TOKEN. Then waits until GET /golden-measurement \
        reports the new workload and compares its PCR 23 with the host's prediction (the PCR 23 \
        before the update extended by the folder's measurement). Exit status 0 only on a match.
        """
    )

    @OptionGroup var connection: AgentConnectionOptions

    @Argument(help: "The API token (default: the stored one, then $CVM_API_TOKEN). Visible to other local users in the process list; prefer the stored token.")
    var token: String?

    @Option(help: "The new workload folder.")
    var workload = "workload"

    @Option(name: [.short, .customLong("output")], help: "Write the new golden measurement here (only on a match).")
    var output: String?

    @Flag(help: "Overwrite --output if it exists.")
    var force = false

    @Option(help: "Seconds to wait for the upload and for the agent to report the new workload.")
    var timeout: Double = 300

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        try runReportingErrors {
            guard timeout > 0 else { throw CVMError.usage("--timeout \(timeout): expected a number of seconds > 0") }
            if let output, !force, FileManager.default.fileExists(atPath: output) {
                throw CVMError.usage("\(output): already exists; pass --force to replace it")
            }
            let client = try connection.client()
            let packed: PackedWorkload
            do {
                packed = try PackedWorkload.make(path: workload)
            } catch let failed as PackedWorkload.CheckFailed {
                for d in failed.diagnostics { FileHandle.standardError.write(Data("\(d)\n".utf8)) }
                throw failed.error
            }
            let token = try client.resolveAPIToken(argument: token)
            for d in packed.warnings { FileHandle.standardError.write(Data("\(d)\n".utf8)) }
            FileHandle.standardError.write(Data("cvm-cli: \(workload): \(packed.measurement.events.count) measured files, archive \(formatBytes(UInt64(packed.archive.count))) (sha256:\(packed.archiveSHA256)) → \(client.target.url("/update-workload")) with the token from \(token.source)\n".utf8))

            // Bytes, rate and ETA on a terminal only.
            let reporter = ProgressReporter(label: "update-workload", total: UInt64(packed.archive.count))
            let outcome = try client.updateWorkload(packed, token: token, timeout: timeout,
                                                    progress: { sent, _ in reporter.update(sent) })
            reporter.finish()
            if outcome.matches, let output {
                try writeOutput(outcome.goldenMeasurement, to: output, force: force)
            }
            if json {
                try printJSON(UpdateJSON(match: outcome.matches, pcr23Before: outcome.pcr23Before,
                                         pcr23Predicted: outcome.predictedPCR23, pcr23: outcome.pcr23,
                                         workloadPCR23Base: outcome.reportedBase, workloadEvents: packed.measurement.events,
                                         archiveBytes: packed.archive.count, archiveSHA256: packed.archiveSHA256,
                                         goldenMeasurement: outcome.matches ? output : nil, mismatch: outcome.mismatchReason))
            } else {
                print("PCR 23 before:    \(outcome.pcr23Before)")
                print("PCR 23 predicted: \(outcome.predictedPCR23)")
                print("PCR 23 new:       \(outcome.pcr23)  \(outcome.matches ? "MATCH" : "MISMATCH")")
                if outcome.matches, let output { FileHandle.standardError.write(Data("cvm-cli: new golden measurement → \(output)\n".utf8)) }
            }
            if !outcome.matches {
                throw CVMError.invalid("the agent's new PCR 23 is not the predicted one: \(outcome.mismatchReason ?? "unknown")\(output != nil ? "; \(output!) not written" : "")")
            }
        }
    }

    struct UpdateJSON: Encodable {
        let match: Bool
        let pcr23Before: String
        let pcr23Predicted: String
        let pcr23: String
        let workloadPCR23Base: String?
        let workloadEvents: [WorkloadMeasurement.Event]
        let archiveBytes: Int
        let archiveSHA256: String
        let goldenMeasurement: String?
        let mismatch: String?
        enum CodingKeys: String, CodingKey {
            case match, pcr23, mismatch
            case pcr23Before = "pcr23_before", pcr23Predicted = "pcr23_predicted"
            case workloadPCR23Base = "workload_pcr23_base", workloadEvents = "workload_events"
            case archiveBytes = "archive_bytes", archiveSHA256 = "archive_sha256", goldenMeasurement = "golden_measurement"
        }
    }
}
