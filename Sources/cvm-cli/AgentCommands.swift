import AgentClient
import ArgumentParser
import CVMSupport
import Foundation

/// Options shared by the commands that talk to the in-guest agent over pinned TLS.
struct AgentConnectionOptions: ParsableArguments {
    @Argument(help: "The VM's name (looked up in _artifacts/) or its address (ip or ip:port).")
    var target: String

    @Option(help: "The agent's HTTPS port in the guest (default 8000; a local VM maps it to its forwarded port).")
    var port: Int?

    @Option(help: "Pin the agent's certificate: sha256:<hex of the leaf certificate DER> (its tls_fingerprint).")
    var pin: String?

    @Flag(help: "Do NOT verify the agent's TLS certificate (loud; nothing is recorded).")
    var insecure = false

    @Option(help: "The artifacts folder.")
    var artifacts = "_artifacts"

    func client() throws -> AgentClient {
        if let port, !(1...65535).contains(port) { throw CVMError.usage("--port \(port): expected 1–65535") }
        let trust: AgentClient.TrustMode
        switch (pin, insecure) {
        case (.some, true): throw CVMError.usage("--pin and --insecure contradict each other; give one")
        case (.some(let p), false): trust = .pin(try AgentClient.parsePin(p, source: "--pin"))
        case (nil, true): trust = .insecure
        case (nil, false): trust = .recordedOrFirstUse
        }
        let resolved = try AgentTarget.resolve(target, port: port, defaultPort: 8000, artifactsDirectory: artifacts)
        return AgentClient(target: resolved, trust: trust, note: { message in
            FileHandle.standardError.write(Data("cvm-cli: \(message)\n".utf8))
        })
    }
}

extension GoldenCommand {
    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fetch the golden measurement from a VM's agent over pinned TLS.",
            discussion: """
            GET https://HOST:PORT/golden-measurement. The agent's certificate is checked during the \
            TLS handshake against --pin, else the fingerprint recorded on first use (in the VM's \
            artifact, or _artifacts/known_agents.json for a bare address); the first fetch records \
            it. The document's tls_fingerprint must be the certificate seen.
            """
        )

        @OptionGroup var connection: AgentConnectionOptions

        @Option(name: [.short, .customLong("output")], help: "Write the document here (default: standard output).")
        var output: String?

        @Flag(help: "Overwrite --output if it exists.")
        var force = false

        func run() throws {
            try runReportingErrors {
                let client = try connection.client()
                let fetched = try client.fetchGoldenMeasurement()
                try writeOutput(fetched.document, to: output, force: force)
                if let output {
                    FileHandle.standardError.write(Data("\(client.target.url("/golden-measurement")) (certificate sha256:\(fetched.certificateSHA256)) → \(output)\n".utf8))
                    if let workload = AgentClient.workloadSummary(fetched.document) {
                        FileHandle.standardError.write(Data("\(workload)\n".utf8))
                    }
                }
            }
        }
    }
}

struct APITokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api-token",
        abstract: "Retrieve a VM's once-only API token and store it (mode 0600).",
        discussion: """
        GET https://HOST:PORT/api-token over pinned TLS (as `golden fetch`). The token goes to \
        _artifacts/<vm>/api-token (or _artifacts/agent_<ip>_<port>/api-token), never to the \
        terminal unless --show. The agent answers once: a later call exits 0 when a copy is \
        stored here, else fails with the agent's answer.
        """
    )

    @OptionGroup var connection: AgentConnectionOptions

    @Flag(help: "Also print the token on standard output.")
    var show = false

    func run() throws {
        try runReportingErrors {
            let client = try connection.client()
            switch try client.retrieveAPIToken() {
            case .stored(let path, let token):
                FileHandle.standardError.write(Data("cvm-cli: API token stored in \(path) (mode 0600)\n".utf8))
                if show { print(token) }
            case .alreadyStored(let path):
                FileHandle.standardError.write(Data("cvm-cli: the agent already issued its API token; it is stored in \(path)\n".utf8))
                if show {
                    let text = try String(contentsOfFile: path, encoding: .utf8)
                    print(text.trimmingCharacters(in: .whitespacesAndNewlines))
                }
            }
        }
    }
}
