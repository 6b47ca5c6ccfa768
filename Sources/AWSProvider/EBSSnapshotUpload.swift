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
        let snapshotID = try startSnapshot(ebs: ebs, volumeGiB: volumeGiB)
        options.log?("StartSnapshot: \(snapshotID), \(volumeGiB) GiB")

        let (blocks, bytes, aggregate) = try putBlocks(disk, ebs: ebs, snapshotID: snapshotID)
        options.log?("PutSnapshotBlock: \(blocks) non-zero blocks sent")
        try completeSnapshot(ebs: ebs, snapshotID: snapshotID, changedBlocks: blocks, aggregate: aggregate)
        try EC2SnapshotWaiter(session: session, options: options).waitUntilCompleted(snapshotID)
        return (snapshotID, blocks, bytes, Base64.encode(aggregate))
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

    /// Sends every non-zero block, `maxConcurrentTransfers` at a time with no batch barrier;
    /// returns the block count, bytes sent and the LINEAR aggregate (SHA-256 over the per-block
    /// digests in block order).
    private func putBlocks(_ disk: DiskReader, ebs: String, snapshotID: String) throws -> (Int, UInt64, [UInt8]) {
        let feeder = try EBSBlockFeeder(disk: disk, blockSize: Self.blockSize, hashContent: options.contentDigest != nil)
        let total = max(try disk.allocatedBytes(), 1)
        let progress = options.progress
        progress?(0, total)
        let threads = session.client.configuration.maxConcurrentTransfers
        try session.client.forEachConcurrently(threads) { _ in
            do {
                while let block = try feeder.next() {
                    let digest = SHA256.hash(block.bytes)
                    try putBlock(ebs: ebs, snapshotID: snapshotID, index: block.index, block: block.bytes, digest: digest)
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
        let count = feeder.completed
        return (count, UInt64(count) * UInt64(Self.blockSize), try feeder.finalizeAggregate())
    }
}

/// Block indices that intersect the stored ranges, ascending, each once.
struct StoredBlockIterator {
    private let ranges: [Range<UInt64>]
    private let blockSize: UInt64
    private let limit: UInt64
    private var rangeIndex = 0
    private var nextBlock: UInt64 = 0

    init(ranges: [Range<UInt64>], blockSize: UInt64, limit: UInt64) {
        self.ranges = normalizeRanges(ranges.map { $0.clamped(to: 0..<limit) })
        self.blockSize = blockSize
        self.limit = limit
    }

    mutating func next() -> UInt64? {
        while rangeIndex < ranges.count {
            let range = ranges[rangeIndex]
            let first = max(nextBlock, range.lowerBound / blockSize)
            let end = (range.upperBound + blockSize - 1) / blockSize
            if first < end {
                nextBlock = first + 1
                return first
            }
            rangeIndex += 1
        }
        return nil
    }
}

/// True when every byte is zero (word-wise).
func isAllZero(_ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { raw in
        let words = raw.count / 8
        let wordsPtr = raw.baseAddress!.assumingMemoryBound(to: UInt64.self)
        for i in 0..<words where wordsPtr[i] != 0 { return false }
        for i in (words * 8)..<raw.count where raw[i] != 0 { return false }
        return true
    }
}
