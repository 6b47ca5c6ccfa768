import CVMSupport
import Foundation

/// Knobs of an AWS upload; the defaults suit real AWS.
public struct AWSUploadOptions: Sendable, TransferObserving {
    /// Idempotency token of StartSnapshot (a retried start returns the same snapshot).
    public var clientToken: String = UUID().uuidString
    public var description: String = "uploaded by cvm-cli"
    /// Minutes AWS keeps an unfinished snapshot before cancelling it (10…4320).
    public var snapshotTimeoutMinutes: Int = 60
    /// Wall-clock budget for the snapshot to become `completed` after CompleteSnapshot.
    public var completionDeadline: Double = 3600
    /// First and longest pause between DescribeSnapshots polls.
    public var pollInterval: (first: Double, maximum: Double) = (1, 15)
    /// S3 part size; nil picks the smallest multiple of 1 MiB ≥ 5 MiB that keeps ≤ 10,000 parts.
    public var s3PartSize: UInt64?
    /// Blocks or parts in flight at once (the transport may lower it when throttled).
    public var maxConcurrentTransfers: Int = 8
    /// Called with (bytes done, bytes total) as the upload advances, from any thread.
    public var progress: (@Sendable (UInt64, UInt64) -> Void)?
    /// Polled during transfers; true stops the upload with an `interrupted` error (an S3
    /// multipart upload is still aborted).
    public var isCancelled: (@Sendable () -> Bool)?
    /// Called with one line per step (start, complete, polling) for `--verbose`.
    public var log: (@Sendable (String) -> Void)?
    /// Set by `--resume`: an interrupted upload's state is kept here and an earlier one
    /// continues (S3 parts or EBS blocks already stored are not sent again).
    public var resumeStore: ResumeStore?

    /// Extra tags on the snapshot (StartSnapshot), besides `created-by=cvm-cli`, sorted by key.
    public var tags: [String: String] = [:]
    /// When set, the virtual disk's SHA-256 (holes as zeros) is computed while the blocks are
    /// read and handed here once all are sent.
    public var contentDigest: (@Sendable ([UInt8]) -> Void)?

    public init() {}
}

/// What an upload produced.
public struct AWSUploadResult: Sendable, Equatable {
    public var destination: String
    /// The EBS snapshot id (`snap-…`), for ebs:// destinations.
    public var snapshotID: String?
    /// Base64 LINEAR aggregate SHA-256 sent with CompleteSnapshot, for ebs:// destinations.
    public var checksum: String?
    /// The S3 object's ETag, for s3:// destinations.
    public var etag: String?
    public var inputFormat: String
    public var virtualSize: UInt64
    /// Bytes sent as block or part bodies.
    public var bytesSent: UInt64
    /// Blocks (EBS) or parts (S3) sent.
    public var pieces: Int
    public var seconds: Double
}
