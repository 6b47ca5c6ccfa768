import ArgumentParser
import AWSProvider
import AzureProvider
import CVMSupport
import GCPProvider
import Foundation

struct UploadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upload",
        abstract: "Upload a disk image: an EBS snapshot, an S3 object, a GCS object or an Azure page blob.",
        discussion: """
        ebs://REGION makes an EBS snapshot with the EBS direct APIs from the virtual disk (any \
        input format; only non-zero 512 KiB blocks are sent) and prints its id. s3://BUCKET/KEY \
        uploads the file as is with a multipart upload. Credentials, region and endpoints come \
        from the environment and ~/.aws as the AWS SDKs read them (AWS_ENDPOINT_URL[_S3|_EC2|_EBS]). \
        gs://BUCKET/OBJECT stores a GCE image archive with a resumable upload: a GCP tar.gz is sent \
        as is, any other format is converted to one on the fly; credentials as Google's libraries \
        find them (GOOGLE_APPLICATION_CREDENTIALS, gcloud's application-default file), \
        STORAGE_EMULATOR_HOST overrides the endpoint. \
        az://CONTAINER/BLOB stores the disk as a fixed VHD in a page blob (a fixed VHD is sent as \
        is, anything else is converted on the fly; only non-zero 512-byte pages are sent), with \
        the key from AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY.
        """
    )

    @Argument(help: "Disk image (raw, qcow2, VHD, stream-optimized VMDK, GCP tar.gz).")
    var disk: String

    @Argument(help: "ebs://REGION, s3://BUCKET/KEY, gs://BUCKET/OBJECT or az://CONTAINER/BLOB.")
    var destination: String

    @Flag(help: "Continue an earlier upload of the same unchanged file to the same destination that failed or was interrupted; a failed run keeps its state (and an S3 upload is not aborted).")
    var resume = false

    @Option(name: .customLong("chunk-mib"), help: "gs:// only: MiB per resumable-upload request (multiple of 0.25).")
    var chunkMiB: Double = 8

    @Flag(help: "Print one JSON object with the result.")
    var json = false

    @Flag(help: "Log each request and step on stderr.")
    var verbose = false

    func run() throws {
        try runReportingErrors {
            if destination.lowercased().hasPrefix("gs://") { return try runGCS() }
            if AzureBlobDestination.matches(destination) { return try runAzure() }
            let target = try UploadDestination(parsing: destination)
            var options = AWSUploadOptions()
            let hooks = TransferHooks(label: "upload \(target)", json: json, verbose: verbose)
            defer { hooks.finish() }
            hooks.wire(&options)
            let r = try AWSUpload.run(diskPath: disk, destination: target, options: options, verbose: verbose, resume: resume)
            if json {
                try printJSON(UploadJSON(r))
                return
            }
            let what = r.snapshotID != nil ? "\(r.pieces) blocks" : "\(r.pieces) parts"
            FileHandle.standardError.write(Data("\(disk) (\(r.inputFormat), \(formatBytes(r.virtualSize)) virtual) → \(r.destination): \(formatBytes(r.bytesSent)) in \(what), \(String(format: "%.2f", r.seconds)) s\n".utf8))
            print(r.snapshotID ?? "\(r.destination) \(r.etag ?? "")")
        }
    }
}

/// What a transfer command hands its library, the same for every destination: progress (a
/// terminal line, or JSON lines with --json), cancellation by SIGINT/SIGTERM (stops the
/// transfers; S3 aborts unless --resume) and `--verbose` step lines.
struct TransferHooks {
    let progress: (@Sendable (UInt64, UInt64) -> Void)?
    let isCancelled: @Sendable () -> Bool
    let log: (@Sendable (String) -> Void)?
    private let line: LockedProgress?

    init(label: String, json: Bool, verbose: Bool) {
        let line = LockedProgress.forCommand(label: label, json: json, verbose: verbose)
        self.line = line
        if let line {
            progress = { (done: UInt64, total: UInt64) in line.update(done, total) }
        } else {
            progress = nil
        }
        let interrupt = InterruptFlag.install()
        isCancelled = { interrupt.isSet }
        if verbose {
            log = { (text: String) in FileHandle.standardError.write(Data("cvm-cli: \(text)\n".utf8)) }
        } else {
            log = nil
        }
    }

    func wire<Options: TransferObserving>(_ options: inout Options) {
        options.progress = progress
        options.isCancelled = isCancelled
        options.log = log
    }

    func finish() { line?.finish() }
}

/// ProgressReporter is driven from several upload threads: serialize it.
final class LockedProgress: @unchecked Sendable {
    private let lock = NSLock()
    private let label: String
    private let jsonLines: Bool
    private var reporter: ProgressReporter?

    init(label: String, jsonLines: Bool = false) {
        self.label = label
        self.jsonLines = jsonLines
    }

    /// A terminal line when stderr is a terminal, JSON lines with `--json`, else nothing.
    static func forCommand(label: String, json: Bool, verbose: Bool) -> LockedProgress? {
        if json { return LockedProgress(label: label, jsonLines: true) }
        return !verbose && ProgressReporter.stderrIsTerminal ? LockedProgress(label: label) : nil
    }

    func update(_ done: UInt64, _ total: UInt64) {
        lock.withLock {
            if reporter == nil {
                reporter = jsonLines ? ProgressReporter(jsonLinesLabel: label, total: total) : ProgressReporter(label: label, total: total)
            }
            reporter?.update(done)
        }
    }

    func finish() { lock.withLock { reporter?.finish() } }
}

struct UploadJSON: Encodable {
    let destination: String
    let snapshotID: String?
    let checksum: String?
    let etag: String?
    let inputFormat: String
    let virtualSize: UInt64
    let bytesSent: UInt64
    let pieces: Int
    let seconds: Double

    init(_ r: AWSUploadResult) {
        destination = r.destination
        snapshotID = r.snapshotID
        checksum = r.checksum
        etag = r.etag
        inputFormat = r.inputFormat
        virtualSize = r.virtualSize
        bytesSent = r.bytesSent
        pieces = r.pieces
        seconds = (r.seconds * 1000).rounded() / 1000
    }

    enum CodingKeys: String, CodingKey {
        case destination, checksum, etag, pieces, seconds
        case snapshotID = "snapshot_id", inputFormat = "input_format", virtualSize = "virtual_size"
        case bytesSent = "bytes_sent"
    }
}
