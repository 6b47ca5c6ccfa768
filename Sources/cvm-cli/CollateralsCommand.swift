import AgentClient
import ArgumentParser
import CVMSupport
import Foundation

struct CollateralsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collaterals",
        abstract: "Fetch attestation collaterals (a TPM quote over a nonce) from a VM's agent.",
        discussion: """
        GET http://HOST:PORT/collaterals/<nonce> on the agent's plain-HTTP port (7999; a local VM \
        maps it to its forwarded port). The document's tls_fingerprint must be the agent \
        certificate pinned for this VM (by `golden fetch`/`api-token`, or --pin). The nonce is \
        printed on stderr; check the result with `cvm-cli verify`.
        """
    )

    @Argument(help: "The VM's name (looked up in _artifacts/) or its address (ip or ip:port).")
    var target: String

    @Option(help: "The agent's plain-HTTP port in the guest.")
    var port: Int?

    @Option(help: "The nonce, 8–64 bytes in hex (default: 32 random bytes).")
    var nonce: String?

    @Option(name: [.short, .customLong("output")], help: "Write the collaterals here (default: standard output).")
    var output: String?

    @Flag(help: "Overwrite --output if it exists.")
    var force = false

    @Option(help: "The agent certificate the collaterals must name: sha256:<hex> (default: the recorded one).")
    var pin: String?

    @Option(help: "The artifacts folder.")
    var artifacts = "_artifacts"

    func run() throws {
        try runReportingErrors {
            if let port, !(1...65535).contains(port) { throw CVMError.usage("--port \(port): expected 1–65535") }
            let chosen = try nonce.map(AgentClient.parseNonce) ?? AgentClient.randomNonce()
            let trust: AgentClient.TrustMode = try pin.map { .pin(try AgentClient.parsePin($0, source: "--pin")) } ?? .recordedOrFirstUse
            let resolved = try AgentTarget.resolve(target, port: port, defaultPort: 7999, artifactsDirectory: artifacts)
            let client = AgentClient(target: resolved, trust: trust, note: { message in
                FileHandle.standardError.write(Data("cvm-cli: \(message)\n".utf8))
            })
            if trust == .recordedOrFirstUse, try client.recordedPin() == nil {
                FileHandle.standardError.write(Data("cvm-cli: no agent certificate is recorded for \(target) (run `cvm-cli golden fetch` first): the collaterals' tls_fingerprint is not checked\n".utf8))
            }
            let body = try client.fetchCollaterals(nonce: chosen)
            if let output {
                let out = try AtomicOutputFile(path: output, overwrite: force)
                do {
                    try out.descriptor.write(body, at: 0)
                    try out.commit()
                } catch {
                    out.discard()
                    throw error
                }
            } else {
                FileHandle.standardOutput.write(Data(body))
            }
            FileHandle.standardError.write(Data("cvm-cli: collaterals for nonce \(chosen)\(output.map { " → \($0)" } ?? "")\n".utf8))
        }
    }
}
