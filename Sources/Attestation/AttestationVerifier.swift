import CVMCrypto
import CVMSupport
import Golden
import TPM2

/// Checks attestation collaterals (docs/agent-api.md) and compares their quoted PCRs with a
/// golden measurement. Used by `cvm-cli verify` and, inside the guest, by the agent's
/// `POST /offchain-verify`, so both give the same verdict on the same documents.
public enum AttestationVerifier {
    public struct Options: Sendable {
        /// The verifier's nonce; must be the collaterals' nonce (default: the collaterals' own).
        public var nonce: [UInt8]?
        /// The TLS certificate the verifier expects the quote to be bound to.
        public var tlsFingerprint: [UInt8]?
        /// The publisher's key: required for a signed golden measurement.
        public var publicKey: DocumentVerifyingKey?
        /// How the key is named in messages (a file, or the request member).
        public var publicKeySource = "the public key"
        /// How a caller passes the key, for the "signed but no key" error.
        public var publicKeyHint = "pass --pubkey PUBLIC.pem"
        public var collateralsSource = "collaterals"
        public var goldenSource = "golden measurement"

        public init() {}
    }

    /// Runs every check; throws only for a usage problem (a signed golden without a key, no
    /// nonce anywhere). Everything the documents claim that does not hold is a failed check or
    /// PCR in the report.
    public static func verify(_ collaterals: Collaterals, against golden: GoldenReference, options: Options) throws -> AttestationReport {
        if golden.signed != nil && options.publicKey == nil {
            throw CVMError.usage("\(options.goldenSource) is a signed golden measurement: \(options.publicKeyHint) (the publisher's public key) to check its signature")
        }
        guard let nonce = options.nonce ?? collaterals.nonce else {
            throw CVMError.usage("\(options.collateralsSource) carry no nonce: pass the nonce the quote was requested with (--nonce HEX)")
        }
        var checks: [AttestationReport.Check] = []
        func check(_ name: String, _ status: AttestationReport.Status, _ detail: String) {
            checks.append(.init(name: name, status: status, detail: detail))
        }

        // 1. The signature over the TPMS_ATTEST, with the AK.
        switch signatureOutcome(collaterals) {
        case .pass: check("signature", .pass, "TPMT_SIGNATURE over the quote verifies with ak_public")
        case .fail(let reason): check("signature", .fail, reason)
        }

        // 2. The quote's structure.
        let info: TPM2.QuoteInfo?
        do {
            info = try TPM2.QuoteInfo(collaterals.quote)
            check("quote", .pass, "TPMS_ATTEST: TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE, \(info!.selection.count) PCR selection(s)")
        } catch let error as CVMError {
            info = nil
            check("quote", .fail, error.message)
        }

        // 3. Freshness: the verifier's nonce is the collaterals' nonce.
        if let wanted = options.nonce {
            if let reported = collaterals.nonce, reported != wanted {
                check("nonce", .fail, "the collaterals are for nonce \(hexString(reported)), not \(hexString(wanted)) (a replayed or another request's quote)")
            } else {
                check("nonce", .pass, "the collaterals answer nonce \(hexString(wanted))")
            }
        } else {
            check("nonce", .pass, "nonce \(hexString(nonce)) from the collaterals (pass --nonce to check it is yours)")
        }

        // 4. The TLS key the quote is bound to, when someone expects one.
        var expected: [(String, [UInt8])] = []
        if let f = options.tlsFingerprint { expected.append(("the expected", f)) }
        if let f = golden.tlsFingerprint { expected.append(("the golden measurement's", f)) }
        let reportedFingerprint = collaterals.tlsFingerprint.map { "sha256:" + hexString($0) } ?? "none (the agent serves no TLS)"
        if expected.isEmpty {
            check("tls_fingerprint", .skipped, "no expected TLS fingerprint (golden measurement has none, none given); the collaterals name \(reportedFingerprint)")
        } else if let (who, f) = expected.first(where: { $0.1 != collaterals.tlsFingerprint }) {
            check("tls_fingerprint", .fail, "the collaterals name \(reportedFingerprint), \(who) is sha256:\(hexString(f)) (another TLS key: another VM, or the VM restarted since)")
        } else {
            check("tls_fingerprint", .pass, "the quote is bound to \(reportedFingerprint)")
        }

        // 5. extraData = SHA-256(nonce || tls fingerprint bytes).
        let qualifying = PCRAttestation.qualifyingData(nonce: nonce, tlsFingerprint: collaterals.tlsFingerprint ?? [])
        if let info {
            if info.extraData != qualifying {
                check("extra_data", .fail, "the quote's extraData \(hexString(info.extraData)) is not SHA-256(nonce || tls fingerprint) = \(hexString(qualifying))")
            } else if let field = collaterals.qualifyingData, field != info.extraData {
                check("extra_data", .fail, "qualifying_data \(hexString(field)) differs from the quote's extraData \(hexString(info.extraData))")
            } else {
                check("extra_data", .pass, "extraData = SHA-256(nonce || tls fingerprint)")
            }
        } else {
            check("extra_data", .fail, "the quote could not be read")
        }

        // 6. pcrDigest over the reported values, in selection order.
        var quoted: Set<UInt32> = []
        if let info {
            var values: [UInt8] = []
            var problems: [String] = []
            for (algorithm, pcrs) in info.selection {
                guard algorithm == TPM2.algSHA256 else {
                    if !pcrs.isEmpty { problems.append("the quote selects PCRs of bank 0x\(String(algorithm, radix: 16)), not reported") }
                    continue
                }
                for pcr in pcrs {
                    quoted.insert(pcr)
                    if let v = collaterals.pcrs[pcr] { values += v } else { problems.append("PCR \(pcr) is quoted but not reported") }
                }
            }
            let unquoted = collaterals.pcrs.keys.filter { !quoted.contains($0) }.sorted()
            if !unquoted.isEmpty { problems.append("PCRs \(unquoted.map(String.init).joined(separator: ", ")) are reported but not quoted") }
            if problems.isEmpty && SHA256.hash(values) != info.pcrDigest {
                problems.append("the quote's pcrDigest \(hexString(info.pcrDigest)) is not SHA-256 of the reported PCR values \(hexString(SHA256.hash(values))): a reported value is not the quoted one")
            }
            if problems.isEmpty {
                check("pcr_digest", .pass, "pcrDigest = SHA-256 of the \(quoted.count) reported PCR values")
            } else {
                check("pcr_digest", .fail, problems.joined(separator: "; "))
            }
        } else {
            check("pcr_digest", .fail, "the quote could not be read")
        }

        // 7. The firmware event log replays to the reported PCRs it mentions.
        if collaterals.eventLog.isEmpty {
            check("event_log", .skipped, "no firmware event log in the collaterals")
        } else {
            do {
                let log = try TCGEventLog(collaterals.eventLog)
                let replayed = log.replay { SHA256.hash($0) }
                let wrong = replayed.keys.sorted().filter { collaterals.pcrs[$0] != replayed[$0] }
                if wrong.isEmpty {
                    check("event_log", .pass, "\(log.events.count) events replay to PCRs \(replayed.keys.sorted().map(String.init).joined(separator: ", "))")
                } else {
                    let details = wrong.map { "PCR \($0) replays to \(hexString(replayed[$0]!)) but is \(collaterals.pcrs[$0].map(hexString) ?? "not reported")" }
                    check("event_log", .fail, details.joined(separator: "; "))
                }
            } catch let error as CVMError {
                check("event_log", .fail, error.message)
            }
        }

        // 8. The workload events replay from workload_pcr23_base to PCR 23.
        var pcr23 = collaterals.workloadPCR23Base
        var misnamed: [String] = []
        for event in collaterals.workloadEvents {
            if let content = event.contentSHA256, SHA256.hash(Array(event.name.utf8) + [0] + content) != event.digest {
                misnamed.append(event.name)
            }
            pcr23 = SHA256.hash(pcr23 + event.digest)
        }
        let base = collaterals.workloadPCR23Base == [UInt8](repeating: 0, count: 32) ? "zeros" : "workload_pcr23_base \(hexString(collaterals.workloadPCR23Base)) (after an update-workload)"
        if !collaterals.reportsWorkloadEvents {
            check("workload_events", .skipped, "no workload_events in the collaterals")
        } else if !misnamed.isEmpty {
            check("workload_events", .fail, "digest is not SHA-256(name || 0 || content_sha256) for: \(misnamed.joined(separator: ", "))")
        } else if collaterals.pcrs[23] == nil {
            check("workload_events", .skipped, "PCR 23 is not reported")
        } else if collaterals.pcrs[23] != pcr23 {
            check("workload_events", .fail, "\(collaterals.workloadEvents.count) workload events replayed from \(base) give \(hexString(pcr23)), but PCR 23 is \(hexString(collaterals.pcrs[23]!))")
        } else {
            check("workload_events", .pass, "\(collaterals.workloadEvents.count) workload events replayed from \(base) give PCR 23")
        }

        // 9. The golden measurement's own signature.
        if let signed = golden.signed, let key = options.publicKey {
            do {
                try signed.verify(with: key, source: options.goldenSource, keySource: options.publicKeySource)
                check("golden_signature", .pass, "\(signed.algorithm.rawValue) signature by key \(signed.keyID) verifies")
            } catch let error as CVMError {
                check("golden_signature", .fail, error.message)
            }
        } else if options.publicKey != nil {
            check("golden_signature", .fail, "\(options.publicKeySource) was given but \(options.goldenSource) is not signed (expected {golden_measurement, signature} from `cvm-cli golden sign`)")
        } else {
            check("golden_signature", .skipped, "unsigned \(golden.form.rawValue)")
        }

        // 10. Each PCR against the golden measurement.
        var results: [AttestationReport.PCR] = []
        for index in Set(collaterals.pcrs.keys).union(golden.pcrs.keys).sorted() {
            let value = collaterals.pcrs[index]
            if let want = golden.pcrs[index] {
                guard let value, quoted.contains(index) || info == nil else {
                    results.append(.init(index: index, status: .notQuoted, quoted: value, golden: want,
                                         reason: "the golden measurement has PCR \(index) but the quote does not cover it"))
                    continue
                }
                if value == want {
                    results.append(.init(index: index, status: .match, quoted: value, golden: want, reason: nil))
                } else {
                    results.append(.init(index: index, status: .mismatch, quoted: value, golden: want,
                                         reason: index == 23 ? pcr23Hint(collaterals, golden) : nil))
                }
            } else if let reason = golden.unpredictable[index] {
                results.append(.init(index: index, status: .unpredictable, quoted: value, golden: nil, reason: reason))
            } else {
                results.append(.init(index: index, status: .notInGolden, quoted: value, golden: nil, reason: nil))
            }
        }
        return AttestationReport(checks: checks, pcrs: results, nonce: nonce, goldenForm: golden.form)
    }

    /// Why PCR 23 may differ although the workload is the expected one.
    static func pcr23Hint(_ collaterals: Collaterals, _ golden: GoldenReference) -> String? {
        guard !golden.workloadEvents.isEmpty,
              golden.workloadEvents.map(\.digest) == collaterals.workloadEvents.map(\.digest),
              collaterals.workloadPCR23Base != [UInt8](repeating: 0, count: 32) else { return nil }
        return "the workload is the golden one, but it was installed by update-workload on top of PCR 23 = \(hexString(collaterals.workloadPCR23Base)); PCR 23 cannot be reset, so a value measured from zeros matches only after the next boot"
    }

    enum SignatureOutcome { case pass, fail(String) }

    static func signatureOutcome(_ c: Collaterals) -> SignatureOutcome {
        let key: DocumentVerifyingKey
        do {
            key = try DocumentVerifyingKey(pem: Array(c.akPublicPEM.utf8), source: "ak_public")
        } catch let error as CVMError {
            return .fail(error.message)
        } catch {
            return .fail("ak_public: \(error)")
        }
        let signature: TPM2.Signature
        do { signature = try TPM2.Signature(c.signature) } catch let error as CVMError {
            return .fail(error.message)
        } catch {
            return .fail("TPMT_SIGNATURE: \(error)")
        }
        let algorithm: SignatureAlgorithm
        switch signature {
        case .ecdsaSHA256: algorithm = .es256
        case .rsassaSHA256: algorithm = .rs256
        }
        guard key.allows(algorithm) else {
            return .fail("ak_public cannot check a \(algorithm == .es256 ? "ECDSA" : "RSASSA") signature (it is another kind of key)")
        }
        guard (try? key.verify(signature.x509Encoding, of: c.quote, algorithm: algorithm)) == true else {
            return .fail("the TPMT_SIGNATURE does not verify over the quote with ak_public: the quote or the signature was changed, or another key signed it")
        }
        return .pass
    }
}
