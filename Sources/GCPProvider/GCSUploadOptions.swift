import CVMSupport
import DiskImage
import Foundation

/// Knobs of a GCS upload; the defaults suit real GCS.
public struct GCSUploadOptions: Sendable, TransferObserving {
    /// Bytes per resumable-upload request: a multiple of 256 KiB (GCS's rule for every chunk
    /// but the last). Larger chunks mean fewer round trips; memory is about three chunks.
    public var chunkSize: Int = 8 << 20
    /// Continue the upload saved for this disk and destination, if any (else start one and
    /// keep its state on failure so a later `--resume` can continue).
    public var resume = false
    /// Compression of a disk converted on the fly. Part of the saved state: a resume
    /// regenerates the same stream only with the same options.
    public var writerOptions = WriterOptions(compressionLevel: 6, timestamp: 0)
    /// Called with (bytes done, bytes total) as the upload advances. For a converted disk the
    /// numbers are virtual-disk bytes converted, else stream bytes confirmed.
    public var progress: (@Sendable (UInt64, UInt64) -> Void)?
    /// Polled during transfers; true stops the upload with an `interrupted` error.
    public var isCancelled: (@Sendable () -> Bool)?
    /// One line per step (session started, resumed at, recovered, finished) for `--verbose`.
    /// Never given the session URI or a token.
    public var log: (@Sendable (String) -> Void)?
    /// Wall-clock budget of one request with its retries.
    public var requestDeadline: Double = 600

    public static let chunkGranularity = 256 << 10

    public init() {}
}

/// What a GCS upload produced.
public struct GCSUploadResult: Sendable, Equatable {
    public var bucket: String
    public var object: String
    /// Object size in bytes (the tar.gz stream).
    public var size: UInt64
    /// Base64 MD5 and CRC-32C (big-endian) of the object, computed while streaming and equal
    /// to what GCS reported for the finished object.
    public var md5: String
    public var crc32c: String
    /// Bytes sent as chunk bodies in this run (retries and re-sends included).
    public var bytesSent: UInt64
    /// Stream offset this run started from (0 unless resumed).
    public var resumedFrom: UInt64
    public var inputFormat: String
    /// True when the disk was converted to the GCP tar.gz on the fly.
    public var converted: Bool
    public var generation: String?
    public var seconds: Double

    public var destination: String { "gs://\(bucket)/\(object)" }
}
