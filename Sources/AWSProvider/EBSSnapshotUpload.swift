import CloudAuth
import CVMCrypto
import CVMSupport
import DiskImage
import Foundation
import Transport

/// Uploads a virtual disk as an EBS snapshot with the EBS direct APIs: StartSnapshot, one
/// PutSnapshotBlock per non-zero 512 KiB block, CompleteSnapshot with the linear aggregate
/// checksum, then waits for EC2 to report the snapshot `completed`.
public struct EBSSnapshotUpload: Sendable {
    public static let blockSize = 512 * 1024

    let session: AWSSession
    let options: AWSUploadOptions

    public init(session: AWSSession, options: AWSUploadOptions) {
        self.session = session
        self.options = options
    }

    /// Uploads `disk` and returns the completed snapshot's id.
    public func upload(_ disk: DiskReader, name: String) throws -> (snapshotID: String, blocks: Int, bytes: UInt64, checksum: String) {
        let virtualSize = disk.virtualSize
        guard virtualSize > 0 else {
            throw CVMError.invalid("\(name): the virtual disk is empty; nothing to upload")
        }
        let gib: UInt64 = 1 << 30
        let volumeGiB = virtualSize / gib + (virtualSize % gib == 0 ? 0 : 1)
        guard volumeGiB <= 65536 else {
            throw CVMError.unsupported("\(name): virtual size \(formatBytes(virtualSize)) exceeds the 64 TiB EBS snapshot limit")
        }
        let ebs = try session.endpoint("ebs")
        let resume = try options.resumeStore.map { store in
            EBSResumeJournal(store: store, key: "ebs://\(session.region) <- \(name)",
                             source: try SourceFileIdentity(path: name), volumeGiB: volumeGiB)
        }
        // With --resume, a pending snapshot this file started earlier gets only the blocks it
        // does not hold yet. EBS cannot list a pending snapshot's blocks, so the journal of
        // acknowledged blocks is ours; a block acknowledged after the last save is sent again,
        // which EBS allows while the snapshot is pending.
        if let resume, let earlier = resume.earlierSnapshot() {
            options.log?("resuming snapshot \(earlier.snapshotID): \(earlier.stored.count) blocks already stored")
            do {
                return try upload(disk, ebs: ebs, snapshotID: earlier.snapshotID, skipping: earlier.stored, journal: resume)
            } catch let error as CVMError where Self.snapshotIsGone(error) {
                options.log?("snapshot \(earlier.snapshotID) can no longer be written (\(error.message)); starting a new one")
                resume.forget()
            }
        }
        let snapshotID = try startSnapshot(ebs: ebs, volumeGiB: volumeGiB)
        options.log?("StartSnapshot: \(snapshotID), \(volumeGiB) GiB")
        resume?.started(snapshotID)
        return try upload(disk, ebs: ebs, snapshotID: snapshotID, skipping: [], journal: resume)
    }

    private func upload(_ disk: DiskReader, ebs: String, snapshotID: String, skipping stored: Set<UInt64>,
                        journal: EBSResumeJournal?) throws -> (snapshotID: String, blocks: Int, bytes: UInt64, checksum: String) {
        do {
            let (blocks, bytes, aggregate) = try putBlocks(disk, ebs: ebs, snapshotID: snapshotID, skipping: stored, journal: journal)
            options.log?("PutSnapshotBlock: \(blocks) non-zero blocks, \(bytes / UInt64(Self.blockSize)) sent in this run")
            try completeSnapshot(ebs: ebs, snapshotID: snapshotID, changedBlocks: blocks, aggregate: aggregate)
            journal?.forget()
            try EC2SnapshotWaiter(session: session, options: options).waitUntilCompleted(snapshotID)
            return (snapshotID, blocks, bytes, Base64.encode(aggregate))
        } catch {
            journal?.save()
            throw error
        }
    }

    /// EBS refuses writes to a snapshot that expired (its Timeout passed), failed or completed.
    static func snapshotIsGone(_ error: CVMError) -> Bool {
        ["ResourceNotFoundException", "ValidationException", "ConflictException"].contains { error.message.contains($0) }
    }

    // MARK: request parts (checked against botocore's service model in the tests)

    static func startSnapshotBody(volumeGiB: UInt64, options: AWSUploadOptions) throws -> [UInt8] {
        let body: [String: Any] = [
            "VolumeSize": volumeGiB,
            "Timeout": options.snapshotTimeoutMinutes,
            "ClientToken": options.clientToken,
            "Description": options.description,
            "Tags": [["Key": "created-by", "Value": "cvm-cli"]] + options.tags.sorted { $0.key < $1.key }.map { ["Key": $0.key, "Value": $0.value] },
        ]
        return Array(try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys]))
    }

    static func putBlockHeaders(length: Int, digest: [UInt8]) -> HTTPHeaders {
        var headers = HTTPHeaders()
        headers.add("x-amz-Data-Length", String(length))
        headers.add("x-amz-Checksum", Base64.encode(digest))
        headers.add("x-amz-Checksum-Algorithm", "SHA256")
        return headers
    }

    static func completeHeaders(changedBlocks: Int, aggregate: [UInt8]) -> HTTPHeaders {
        var headers = HTTPHeaders()
        headers.add("x-amz-ChangedBlocksCount", String(changedBlocks))
        headers.add("x-amz-Checksum", Base64.encode(aggregate))
        headers.add("x-amz-Checksum-Algorithm", "SHA256")
        headers.add("x-amz-Checksum-Aggregation-Method", "LINEAR")
        return headers
    }

    // MARK: the three EBS calls

    private func startSnapshot(ebs: String, volumeGiB: UInt64) throws -> String {
        let json = try Self.startSnapshotBody(volumeGiB: volumeGiB, options: options)
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/json")
        let request = session.request("ebs", method: "POST", url: "\(ebs)/snapshots", headers: headers,
                                      body: BytesBody(json), payloadSHA256: sha256Hex(json))
        let response = try session.send("EBS StartSnapshot", request)
        guard let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
              let id = object["SnapshotId"] as? String, !id.isEmpty else {
            throw CVMError.io("EBS StartSnapshot: the answer has no SnapshotId: \(String(decoding: response.body.prefix(200), as: UTF8.self))")
        }
        if let status = object["Status"] as? String, status == "error" {
            throw CVMError.io("EBS StartSnapshot: snapshot \(id) is in state 'error'")
        }
        return id
    }

    private func putBlock(ebs: String, snapshotID: String, index: UInt64, block: [UInt8], digest: [UInt8]) throws {
        let headers = Self.putBlockHeaders(length: block.count, digest: digest)
        var request = session.request("ebs", method: "PUT", url: "\(ebs)/snapshots/\(snapshotID)/blocks/\(index)",
                                      headers: headers, body: BytesBody(block), payloadSHA256: hexString(digest))
        // A snapshot can answer "does not exist" for a short while after StartSnapshot.
        var classifier = session.client.configuration.classifier
        classifier.retryableCodes.insert("ResourceNotFoundException")
        classifier.throttlingCodes.insert("ConcurrentLimitExceededException")
        request.retryClassifier = classifier
        _ = try session.send("EBS PutSnapshotBlock \(index) of \(snapshotID)", request)
    }

    private func completeSnapshot(ebs: String, snapshotID: String, changedBlocks: Int, aggregate: [UInt8]) throws {
        let headers = Self.completeHeaders(changedBlocks: changedBlocks, aggregate: aggregate)
        let request = session.request("ebs", method: "POST", url: "\(ebs)/snapshots/completion/\(snapshotID)", headers: headers)
        let response = try session.send("EBS CompleteSnapshot \(snapshotID)", request)
        if let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
           let status = object["Status"] as? String {
            options.log?("CompleteSnapshot: \(snapshotID) \(status)")
            if status == "error" { throw CVMError.io("EBS CompleteSnapshot: snapshot \(snapshotID) is in state 'error'") }
        }
    }

    // MARK: blocks

    /// Sends every non-zero block not in `stored`, `maxConcurrentTransfers` at a time with no
    /// batch barrier; returns the non-zero block count, bytes sent and the LINEAR aggregate
    /// (SHA-256 over the per-block digests in block order, stored blocks included).
    private func putBlocks(_ disk: DiskReader, ebs: String, snapshotID: String, skipping stored: Set<UInt64>,
                           journal: EBSResumeJournal?) throws -> (Int, UInt64, [UInt8]) {
        let feeder = try EBSBlockFeeder(disk: disk, blockSize: Self.blockSize, hashContent: options.contentDigest != nil)
        let total = max(try disk.allocatedBytes(), 1)
        let progress = options.progress
        let sent = ProgressTotal()
        progress?(0, total)
        let threads = session.client.configuration.maxConcurrentTransfers
        try session.client.forEachConcurrently(threads) { _ in
            do {
                while let block = try feeder.next() {
                    let digest = SHA256.hash(block.bytes)
                    if !stored.contains(block.index) {
                        try putBlock(ebs: ebs, snapshotID: snapshotID, index: block.index, block: block.bytes, digest: digest)
                        _ = sent.add(UInt64(block.bytes.count))
                        journal?.stored(block.index)
                    }
                    feeder.finished(block.sequence, digest: digest)
                    progress?(min(feeder.scannedBytes, total), total)
                }
            } catch {
                feeder.fail()
                throw error
            }
        }
        progress?(total, total)
        if let digest = feeder.finalizeContentDigest() { options.contentDigest?(digest) }
        return (feeder.completed, sent.add(0), try feeder.finalizeAggregate())
    }
}

/// The `--resume` record of an EBS snapshot upload: which snapshot, for which unchanged file,
/// and which blocks EBS acknowledged. Saved every 8 acknowledged blocks (4 MiB) or second, and on
/// failure, so a killed run re-sends at most those plus the blocks that were in flight.
final class EBSResumeJournal: @unchecked Sendable {
    struct State: Codable {
        let source: SourceFileIdentity
        let volumeGiB: UInt64
        let blockSize: Int
        var snapshotID: String
        var stored: [UInt64]
    }

    private let lock = NSLock()
    private let store: ResumeStore
    private let key: String
    private let source: SourceFileIdentity
    private let volumeGiB: UInt64
    private var snapshotID: String?
    private var storedBlocks = Set<UInt64>()
    private var lastSave = 0.0
    private var unsaved = 0

    init(store: ResumeStore, key: String, source: SourceFileIdentity, volumeGiB: UInt64) {
        self.store = store
        self.key = key
        self.source = source
        self.volumeGiB = volumeGiB
    }

    /// The snapshot an earlier run of the same file left pending, with its acknowledged blocks.
    func earlierSnapshot() -> (snapshotID: String, stored: Set<UInt64>)? {
        guard let state = store.load(State.self, key: key), state.source == source, state.volumeGiB == volumeGiB,
              state.blockSize == EBSSnapshotUpload.blockSize, state.snapshotID.hasPrefix("snap-") else { return nil }
        lock.withLock {
            snapshotID = state.snapshotID
            storedBlocks = Set(state.stored)
        }
        return (state.snapshotID, Set(state.stored))
    }

    func started(_ id: String) {
        lock.withLock {
            snapshotID = id
            storedBlocks = []
        }
        save()
    }

    func stored(_ index: UInt64) {
        let due = lock.withLock { () -> Bool in
            storedBlocks.insert(index)
            unsaved += 1
            return unsaved >= 8 || monotonicSeconds() - lastSave >= 1
        }
        if due { save() }
    }

    /// Best effort: a lost save only means blocks are sent again. Under the lock, so two
    /// threads never write the state file at once.
    func save() {
        lock.withLock {
            lastSave = monotonicSeconds()
            unsaved = 0
            guard let snapshotID else { return }
            let state = State(source: source, volumeGiB: volumeGiB, blockSize: EBSSnapshotUpload.blockSize,
                              snapshotID: snapshotID, stored: storedBlocks.sorted())
            try? store.save(state, key: key)
        }
    }

    func forget() {
        lock.withLock { snapshotID = nil }
        store.remove(key: key)
    }
}
