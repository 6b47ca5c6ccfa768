import ArgumentParser
import Attestation
import CVMCrypto
import CVMSupport
import Foundation

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify attestation collaterals against a golden measurement.",
        discussion: """
        Checks the quote's signature with its AK, the nonce, the TLS key the quote is bound to, \
        pcrDigest, the firmware event log and workload events replaying to the quoted PCRs, the \
        golden measurement's signature (--pubkey, required for a signed document), then each PCR \
        against the golden measurement (a `golden fetch` document, a `golden predict` output, or \
        either signed). Exit status 0 only on a full match; 1 with the reasons otherwise.
        """
    )

    @Argument(help: "The collaterals JSON (GET /collaterals/<nonce>, `cvm-cli collaterals`).")
    var collaterals: String

    @Argument(help: "The golden measurement JSON, plain or signed ({golden_measurement, signature}).")
    var golden: String

    @Option(help: "The publisher's PEM public key; required when the golden measurement is signed.")
    var pubkey: String?

    @Option(help: "The nonce the collaterals were requested with (hex); must be theirs.")
    var nonce: String?

    @Option(name: .customLong("tls-fingerprint"), help: "The agent certificate the quote must be bound to: sha256:<hex>.")
    var tlsFingerprint: String?

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    func run() throws {
        try runReportingErrors {
            var options = AttestationVerifier.Options()
            if let nonce {
                guard let bytes = decodeHex(nonce), !bytes.isEmpty else {
                    throw CVMError.usage("--nonce \(nonce): expected the nonce in hex")
                }
                options.nonce = bytes
            }
            if let tlsFingerprint {
                guard let bytes = parseFingerprint(tlsFingerprint) else {
                    throw CVMError.usage("--tls-fingerprint \(tlsFingerprint): expected sha256:<64 hex digits> (the agent's tls_fingerprint)")
                }
                options.tlsFingerprint = bytes
            }
            if let pubkey {
                options.publicKey = try DocumentVerifyingKey(pem: try readSmallFile(pubkey, what: "public key"), source: pubkey)
                options.publicKeySource = pubkey
            }
            options.collateralsSource = collaterals
            options.goldenSource = golden
            let evidence = try Collaterals.parse(try readSmallFile(collaterals, what: "collaterals document"), source: collaterals)
            let reference = try GoldenReference.parse(try readSmallFile(golden, what: "golden measurement"), source: golden)
            let report = try AttestationVerifier.verify(evidence, against: reference, options: options)
            if json {
                FileHandle.standardOutput.write(Data(CanonicalJSON.prettyBytes(report.json)))
            } else {
                FileHandle.standardOutput.write(Data(report.text.utf8))
            }
            if !report.passed {
                printError("verification failed: \(report.reasons.joined(separator: "; "))")
                throw ExitCode(1)
            }
        }
    }
}

/// Reads a small input file whole (JSON documents, keys), with errors naming it.
func readSmallFile(_ path: String, what: String) throws -> [UInt8] {
    let file = try FileDescriptor.openForReading(path)
    defer { file.close() }
    let size = try file.size()
    guard size <= 64 << 20 else {
        throw CVMError.invalid("\(path): \(formatBytes(size)) is too large for a \(what)")
    }
    return try file.read(count: Int(size), at: 0)
}
