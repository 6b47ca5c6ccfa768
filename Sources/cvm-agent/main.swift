#if canImport(Glibc)
import Glibc
#endif
import CVMCrypto
import CVMSupport
import Foundation
import TPM2
import Workload

/// cvm-agent: runs inside the guest. Measures the workload into PCR 23 (the same code as
/// `cvm-cli update-disk` on the host) and serves the golden measurement (docs/agent-api.md).
enum AgentVersion { static let string = "0.1.0" }

struct AgentOptions {
    var workload = "/data/workload"
    var httpPort: UInt16 = 7999
    var httpsPort: UInt16 = 8000
    var tpmDevices = ["/dev/tpmrm0", "/dev/tpm0"]
    var eventLog = "/sys/kernel/security/tpm0/binary_bios_measurements"

    static func parse(_ args: [String]) -> AgentOptions {
        var o = AgentOptions()
        var i = 0
        func value() -> String {
            i += 1
            guard i < args.count else { fail("\(args[i - 1]) needs a value") }
            return args[i]
        }
        while i < args.count {
            switch args[i] {
            case "--workload": o.workload = value()
            case "--http-port": o.httpPort = UInt16(value()) ?? { fail("--http-port: expected a port number") }()
            case "--https-port": o.httpsPort = UInt16(value()) ?? { fail("--https-port: expected a port number") }()
            case "--tpm": o.tpmDevices = [value()]
            case "--event-log": o.eventLog = value()
            case "--version": print(AgentVersion.string); exit(0)
            default: fail("unknown argument \(args[i]); usage: cvm-agent [firewall] [--workload DIR] [--http-port N] [--https-port N] [--tpm DEV] [--event-log FILE]")
            }
            i += 1
        }
        return o
    }
}

func log(_ message: String) {
    FileHandle.standardError.write(Data("cvm-agent: \(message)\n".utf8))
}

func fail(_ message: String) -> Never {
    log("error: \(message)")
    exit(1)
}

OpenSSLRuntime.keepStateUntilExit()
let arguments = Array(CommandLine.arguments.dropFirst())
// `cvm-agent firewall`: apply the policy's firewall again (as at start) and print the report.
if arguments.first == "firewall" {
    let options = AgentOptions.parse(Array(arguments.dropFirst()))
    let report = AgentFirewall.apply(policy: AgentPolicy.load(workload: options.workload), options: options)
    let data = (try? JSONSerialization.data(withJSONObject: report, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) ?? Data()
    FileHandle.standardOutput.write(data + Data("\n".utf8))
    exit(report["applied"] as? Bool == true ? 0 : 1)
}
let options = AgentOptions.parse(arguments)
let agent: Agent
do {
    agent = try Agent(options: options)
    try agent.measureWorkload()
    try agent.serve()
    agent.startWorkload()
} catch let error as CVMError {
    fail(error.message)
} catch {
    fail("\(error)")
}
while true { sleep(3600) }
