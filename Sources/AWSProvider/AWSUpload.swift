import CloudAuth
import CVMSupport
import DiskImage
import Foundation
import Logging
import Transport

/// `cvm-cli upload <disk> ebs://REGION | s3://BUCKET/KEY`: the entry point the CLI calls.
public enum AWSUpload {
    /// Uploads `diskPath` to `destination` with credentials, region and endpoints resolved
    /// from `environment` and `home` as the AWS SDKs do. With `resume`, an upload of the same
    /// unchanged file that failed or was killed continues where it stopped (state in the
    /// user's cache folder, `ResumeStore`), and a failed S3 upload is kept, not aborted.
    public static func run(diskPath: String, destination: UploadDestination,
                           environment: [String: String] = ProcessInfo.processInfo.environment,
                           home: String = userHomeDirectory(), options: AWSUploadOptions = AWSUploadOptions(),
                           verbose: Bool = false, resume: Bool = false) throws -> AWSUploadResult {
        let start = monotonicSeconds()
        // Open first: a bad disk fails before any request is made.
        let disk = try DiskImageFile.open(diskPath)
        let configuration = try AWSDiscovery.resolve(environment: environment, home: home)
        let transport = TransportConfiguration(environment: environment, maxConcurrentTransfers: options.maxConcurrentTransfers,
                                               isCancelled: options.isCancelled)
        let client = HTTPClient(configuration: transport, logger: .commandLog(label: "cvm.aws", verbose: verbose))
        var options = options
        if resume { options.resumeStore = ResumeStore(environment: environment, home: home) }

        switch destination {
        case .ebsSnapshot(let region):
            let session = try AWSSession(configuration: configuration, region: region, client: client)
            let upload = EBSSnapshotUpload(session: session, options: options)
            let (id, blocks, bytes, checksum) = try upload.upload(disk, name: diskPath)
            return AWSUploadResult(destination: destination.description, snapshotID: id, checksum: checksum, etag: nil,
                                   inputFormat: disk.format.rawValue, virtualSize: disk.virtualSize,
                                   bytesSent: bytes, pieces: blocks, seconds: monotonicSeconds() - start)
        case .s3Object(let bucket, let key):
            let session = try AWSSession(configuration: configuration, client: client)
            let upload = S3MultipartUpload(session: session, options: options)
            let (etag, parts, bytes) = try upload.upload(path: diskPath, bucket: bucket, key: key)
            return AWSUploadResult(destination: destination.description, snapshotID: nil, checksum: nil, etag: etag,
                                   inputFormat: disk.format.rawValue, virtualSize: disk.virtualSize,
                                   bytesSent: bytes, pieces: parts, seconds: monotonicSeconds() - start)
        }
    }
}
