import ArgumentParser
import AWSProvider
import CVMSupport
import Deploy
import Foundation

struct CleanupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleanup",
        abstract: "Delete what a deploy created for a VM (from its artifact, or its tags when that is gone); stop a local VM.",
        subcommands: [CleanupAWSCommand.self, CleanupGCPCommand.self, CleanupAzureCommand.self, CleanupLocalCommand.self]
    )
}

struct CleanupAWSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aws",
        abstract: "Delete the Elastic IP, instance, image, snapshots, security group and volumes of a deploy-aws VM."
    )

    @OptionGroup var cleanup: CleanupOptions

    @Option(help: "Region (default: the artifact's, else AWS_REGION / the profile's).")
    var region: String?

    func run() throws {
        try runReportingErrors {
            try cleanup.report(AWSDeploy.cleanup(vmName: cleanup.vmName, region: region, dryRun: cleanup.dryRun,
                                                 verbose: cleanup.verbose, log: cleanup.logLine))
        }
    }
}

/// The options and the report every `cleanup <cloud>` shares.
struct CleanupOptions: ParsableArguments {
    @Option(name: [.customLong("vm_name"), .customLong("vm-name")], help: "The VM's name.")
    var vmName = "cvm-test"

    @Flag(name: [.customLong("dry-run"), .customLong("dry_run")], help: "List what would be deleted; delete nothing.")
    var dryRun = false

    @Flag(help: "Print one JSON object.")
    var json = false

    @Flag(help: "Log each step and request on stderr.")
    var verbose = false

    /// The provider's step log: on stderr with --verbose, else dropped.
    var logLine: @Sendable (String) -> Void {
        let verbose = self.verbose
        return { line in if verbose { FileHandle.standardError.write(Data("cvm-cli: \(line)\n".utf8)) } }
    }

    func report(_ outcome: CleanupOutcome) throws {
        if json {
            try printJSON(CleanupJSON(removed: outcome.removed, alreadyGone: outcome.alreadyGone, region: outcome.region,
                                      dryRun: outcome.dryRun, plan: outcome.dryRun ? outcome.plan.filter(\.mutating) : nil))
            return
        }
        if outcome.removed.isEmpty {
            print("nothing of \(vmName) left" + (outcome.region.isEmpty ? "" : " in \(outcome.region)"))
        }
        for line in outcome.removed { print((dryRun ? "would delete " : "deleted ") + line) }
        if dryRun {
            for call in outcome.plan where call.mutating { print("  would " + call.line) }
        }
    }
}

struct CleanupJSON: Encodable {
    let removed: [String]
    let alreadyGone: [String]
    let region: String
    let dryRun: Bool
    let plan: [PlannedCall]?

    enum CodingKeys: String, CodingKey {
        case removed, region, plan
        case alreadyGone = "already_gone", dryRun = "dry_run"
    }
}
