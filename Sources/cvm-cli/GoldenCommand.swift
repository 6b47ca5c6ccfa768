import ArgumentParser
import CVMCrypto
import CVMSupport
import Foundation
import Golden

struct GoldenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "golden",
        abstract: "Fetch, predict, sign and verify golden measurements.",
        subcommands: [Fetch.self, Predict.self, Sign.self, Verify.self]
    )

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign a golden measurement with a private key (ECDSA P-256 or RSA ≥ 2048).",
            discussion: """
            The signature covers the RFC 8785 canonical JSON of the measurement, so the signed \
            document verifies whatever its whitespace or member order. Keys: PEM SEC1, PKCS#8 or \
            PKCS#1, unencrypted. Default algorithm: ES256 for EC keys, RS256 for RSA.
            """
        )

        @Argument(help: "The golden measurement JSON (as fetched from the agent).")
        var golden: String

        @Argument(help: "The PEM private key.")
        var privateKey: String

        @Option(name: [.short, .customLong("output")], help: "Write the signed document here (default: standard output).")
        var output: String?

        @Option(help: "ES256, RS256 or PS256 (RSA-PSS, MGF1-SHA256, 32-byte salt).")
        var alg: String?

        @Flag(help: "Overwrite --output if it exists.")
        var force = false

        func run() throws {
            try runReportingErrors {
                let algorithm = try alg.map { name -> SignatureAlgorithm in
                    guard let a = SignatureAlgorithm(rawValue: name.uppercased()) else {
                        throw CVMError.usage("--alg \(name): expected ES256, RS256 or PS256")
                    }
                    return a
                }
                let key = try DocumentSigningKey(pem: try readSmallFile(privateKey, what: "private key"), source: privateKey)
                let signed = try SignedGoldenMeasurement.sign(document: try readSmallFile(golden, what: "golden measurement"),
                                                              source: golden, key: key, algorithm: algorithm)
                try writeOutput(signed.documentBytes, to: output, force: force)
                if output != nil {
                    FileHandle.standardError.write(Data("\(golden): signed with \(signed.algorithm.rawValue) by key \(signed.keyID) → \(output!)\n".utf8))
                }
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify a signed golden measurement with the publisher's public key.",
            discussion: "Exit status 0 only when the signature holds; 1 with the reason otherwise."
        )

        @Argument(help: "The signed golden measurement JSON.")
        var signed: String

        @Argument(help: "The publisher's PEM public key (SubjectPublicKeyInfo or PKCS#1 RSA).")
        var publicKey: String

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() throws {
            try runReportingErrors {
                let key = try DocumentVerifyingKey(pem: try readSmallFile(publicKey, what: "public key"), source: publicKey)
                let document = try SignedGoldenMeasurement.parse(try readSmallFile(signed, what: "signed golden measurement"), source: signed)
                try document.verify(with: key, source: signed, keySource: publicKey)
                if json {
                    try printJSON(["verified": "true", "alg": document.algorithm.rawValue, "key_id": document.keyID])
                } else {
                    print("\(signed): signature OK (\(document.algorithm.rawValue), key \(document.keyID))")
                }
            }
        }
    }
}

/// Writes to `path` atomically, or to stdout when `path` is nil.
func writeOutput(_ bytes: [UInt8], to path: String?, force: Bool) throws {
    guard let path else {
        FileHandle.standardOutput.write(Data(bytes))
        return
    }
    let out = try AtomicOutputFile(path: path, overwrite: force)
    do {
        try out.descriptor.write(bytes, at: 0)
        try out.commit()
    } catch {
        out.discard()
        throw error
    }
}
