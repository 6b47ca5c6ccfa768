import CVMSupport
import Foundation

/// Knobs of a page blob upload; the defaults suit real Azure.
public struct AzureUploadOptions: Sendable, TransferObserving {
    /// Continue the upload recorded in the cache folder (pages the blob holds are not resent).
    /// Without it the blob is created afresh.
    public var resume = false
    /// Put Page requests in flight at once (the transport halves it on 503 ServerBusy).
    public var maxConcurrentTransfers = 8
    /// Largest Put Page body: a multiple of 512 up to 4 MiB (the service's limit). Memory is about
    /// this times `maxConcurrentTransfers`; 2 MiB keeps 8 transfers within 16 MiB.
    public var maxPageSize = 2 << 20
    /// Timestamp in a generated VHD footer (seconds since 1970; a resumed upload keeps its own).
    public var footerTimestamp: UInt64 = SystemInfo.sourceDateEpoch
    /// Called with (bytes done, bytes total) of the VHD as the upload advances, from any thread.
    public var progress: (@Sendable (UInt64, UInt64) -> Void)?
    /// Polled during transfers; true stops the upload with an `interrupted` error.
    public var isCancelled: (@Sendable () -> Bool)?
    /// One line per step (container, blob, resume decision, pages, MD5) for `--verbose`.
    public var log: (@Sendable (String) -> Void)?

    public init() {}
}

/// What a page blob upload produced.
public struct AzureUploadResult: Sendable, Equatable {
    public var destination: String
    public var container: String
    public var blob: String
    /// The blob's URL (no credentials in it).
    public var url: String
    public var inputFormat: String
    /// The input's virtual size; the blob holds it padded to a MiB, plus the VHD footer.
    public var virtualSize: UInt64
    public var blobSize: UInt64
    /// Base64 MD5 of the whole VHD, set as the blob's Content-MD5.
    public var contentMD5: String
    /// True when the input was a MiB-aligned fixed VHD sent as is (else converted on the fly).
    public var sentAsIs: Bool
    /// True when pages already in the blob were kept (`--resume`).
    public var resumed: Bool
    /// Page bytes sent in this run, and the Put Page requests that carried them.
    public var bytesSent: UInt64
    public var pages: Int
    /// Non-zero bytes not sent because the blob already held them (resume).
    public var bytesAlreadyStored: UInt64
    public var seconds: Double
}
