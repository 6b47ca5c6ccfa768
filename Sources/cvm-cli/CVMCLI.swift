import ArgumentParser
import CVMCrypto
import CVMSupport
import Foundation

@main
enum CVMCLIMain {
    /// Parses and runs; every failure ends as one `cvm-cli: error:` line and its exit status
    /// (64 for usage errors), help and version as ArgumentParser prints them.
    static func main() {
        OpenSSLRuntime.keepStateUntilExit()
        do {
            var command = try CVMCLI.parseAsRoot(movingLeadingGlobalFlags(Array(CommandLine.arguments.dropFirst())))
            try command.run()
        } catch let code as ExitCode {
            exit(code.rawValue)            // the command already reported
        } catch {
            let status = CVMCLI.exitCode(for: error)
            if status == .success {
                CVMCLI.exit(withError: error)   // --help, --version
            }
            let message = CVMCLI.message(for: error)
                .split(whereSeparator: \.isNewline).map(String.init).joined(separator: " ")
            printError(message + " (see 'cvm-cli help')")
            exit(status.rawValue)
        }
    }
}

/// `--verbose` and `--json` are accepted anywhere on the command line, as users type them
/// (`cvm-cli --json inspect disk.vmdk`): written before the subcommand they are moved after it,
/// where the subcommand's own flag takes them (or ArgumentParser reports that it has none).
func movingLeadingGlobalFlags(_ arguments: [String]) -> [String] {
    let global: Set<String> = ["--verbose", "--json"]
    guard let first = arguments.firstIndex(where: { !global.contains($0) }), first > 0,
          !arguments[first].hasPrefix("-") else { return arguments }
    var moved = Array(arguments[first...])
    // Before a `--` terminator, so they stay options.
    let end = moved.firstIndex(of: "--") ?? moved.endIndex
    moved.insert(contentsOf: arguments[..<first], at: end)
    return moved
}

struct CVMCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cvm-cli",
        abstract: "Ship confidential-VM disk images and workloads to Azure, GCP, AWS or a local QEMU.",
        version: CVMVersion.string,
        subcommands: [Convert.self, Inspect.self, UpdateDiskCommand.self, WorkloadCommand.self, UploadCommand.self,
                      MatrixCommand.self, DeployAWSCommand.self, DeployGCPCommand.self, DeployAzureCommand.self,
                      ImageCommand.self, DeployLocalCommand.self, CleanupCommand.self, GoldenCommand.self,
                      APITokenCommand.self, CollateralsCommand.self, UpdateWorkloadCommand.self, VerifyCommand.self]
    )
}

enum CVMVersion {
    static let string = "0.1.0"
}

/// Runs a command body and turns a `CVMError` into one line on stderr and its exit status
/// (64 usage, 1 failure, 130 interrupted) — never a trap or a stack trace.
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as CVMError {
        printError(error.message)
        throw ExitCode(error.exitStatus)
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("cvm-cli: error: \(message)\n".utf8))
}

/// Prints an Encodable value as one JSON object on stdout.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    FileHandle.standardOutput.write(data + Data("\n".utf8))
}
