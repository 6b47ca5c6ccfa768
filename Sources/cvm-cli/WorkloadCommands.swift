import ArgumentParser
import CVMSupport
import Foundation
import Workload

struct WorkloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workload",
        abstract: "Check or measure a workload folder.",
        subcommands: [Check.self, Measure.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a workload folder (compose file, agent policy, image archives, symlinks).",
            discussion: "Exit status 1 when there are errors, 0 when there are only warnings."
        )

        @Argument(help: "The workload folder.")
        var folder: String = "workload"

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() throws {
            try runReportingErrors {
                let diagnostics = try WorkloadCheck.run(path: folder)
                let errors = diagnostics.filter { $0.severity == .error }.count
                let warnings = diagnostics.count - errors
                if json {
                    try printJSON(CheckJSON(ok: errors == 0, errors: errors, warnings: warnings, diagnostics: diagnostics))
                } else {
                    for d in diagnostics { FileHandle.standardError.write(Data("\(d)\n".utf8)) }
                    print(errors == 0 ? "\(folder): ok\(warnings > 0 ? " (\(warnings) warning\(warnings == 1 ? "" : "s"))" : "")"
                                      : "\(folder): \(errors) error\(errors == 1 ? "" : "s"), \(warnings) warning\(warnings == 1 ? "" : "s")")
                }
                if errors > 0 { throw ExitCode(1) }
            }
        }

        struct CheckJSON: Encodable {
            let ok: Bool
            let errors: Int
            let warnings: Int
            let diagnostics: [WorkloadDiagnostic]
        }
    }

    struct Measure: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the workload measurement (the events the agent extends into PCR 23)."
        )

        @Argument(help: "The workload folder.")
        var folder: String = "workload"

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() throws {
            try runReportingErrors {
                let m = try WorkloadMeasurement.measure(try WorkloadFolder(path: folder))
                if json {
                    try printJSON(MeasureJSON(pcr23: m.pcr23, workloadEvents: m.events))
                } else {
                    for e in m.events { print("\(e.digest)  \(e.name)") }
                    print("PCR 23: \(m.pcr23)")
                }
            }
        }

        struct MeasureJSON: Encodable {
            let pcr23: String
            let workloadEvents: [WorkloadMeasurement.Event]
            enum CodingKeys: String, CodingKey { case pcr23 = "pcr23", workloadEvents = "workload_events" }
        }
    }
}
