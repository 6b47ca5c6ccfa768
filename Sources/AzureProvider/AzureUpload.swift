import CloudAuth
import CVMSupport
import DiskImage
import Foundation
import Logging
import Transport

/// `cvm-cli upload <disk> az://CONTAINER/BLOB`: the entry point the CLI calls.
public enum AzureUpload {
    /// Uploads `diskPath` as a page blob holding a fixed VHD, with the storage key and endpoint
    /// from `environment` (AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT +
    /// AZURE_STORAGE_KEY) and the resume state under `home`'s cache folder.
    public static func run(diskPath: String, destination: AzureBlobDestination,
                           environment: [String: String] = ProcessInfo.processInfo.environment,
                           home: String = NSHomeDirectory(), options: AzureUploadOptions = AzureUploadOptions(),
                           verbose: Bool = false) throws -> AzureUploadResult {
        // Open first: a bad disk fails before any credential is looked at or request made.
        _ = try FixedVHDStream.open(diskPath, timestamp: options.footerTimestamp)
        let credentials = try AzureDiscovery.storageCredentials(environment: environment)
        var transport = TransportConfiguration()
        transport.environment = environment
        transport.maxConcurrentTransfers = max(1, options.maxConcurrentTransfers)
        transport.isCancelled = options.isCancelled
        var logger = Logger(label: "cvm.azure", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = verbose ? .debug : .warning
        let session = try AzureStorageSession(credentials: credentials,
                                              client: HTTPClient(configuration: transport, logger: logger))
        let upload = PageBlobUpload(session: session, options: options,
                                    store: AzureUploadStateStore(environment: environment, home: home))
        return try upload.run(diskPath: diskPath, destination: destination)
    }
}
