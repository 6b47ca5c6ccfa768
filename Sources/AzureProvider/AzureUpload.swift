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
                           home: String = userHomeDirectory(), options: AzureUploadOptions = AzureUploadOptions(),
                           verbose: Bool = false) throws -> AzureUploadResult {
        guard options.maxPageSize > 0, options.maxPageSize % 512 == 0, options.maxPageSize <= 4 << 20 else {
            throw CVMError.usage("page size \(options.maxPageSize): expected a multiple of 512 up to 4 MiB")
        }
        // Open first: a bad disk fails before any credential is looked at or request made.
        let stream = try FixedVHDStream.open(diskPath, timestamp: options.footerTimestamp)
        let credentials = try AzureDiscovery.storageCredentials(environment: environment)
        let transport = TransportConfiguration(environment: environment, maxConcurrentTransfers: options.maxConcurrentTransfers,
                                               isCancelled: options.isCancelled)
        let session = try AzureStorageSession(credentials: credentials,
                                              client: HTTPClient(configuration: transport, logger: .commandLog(label: "cvm.azure", verbose: verbose)))
        let upload = PageBlobUpload(session: session, options: options,
                                    store: AzureUploadStateStore(environment: environment, home: home))
        return try upload.run(diskPath: diskPath, stream: stream, destination: destination)
    }
}
