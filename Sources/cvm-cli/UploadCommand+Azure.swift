import ArgumentParser
import AzureProvider
import CVMSupport
import Foundation

extension UploadCommand {
    /// `az://CONTAINER/BLOB`: page blob upload through AzureProvider.
    func runAzure() throws {
        let target = try AzureBlobDestination(parsing: destination)
        var options = AzureUploadOptions()
        options.resume = resume
        let hooks = TransferHooks(label: "upload \(target)", json: json, verbose: verbose)
        defer { hooks.finish() }
        hooks.wire(&options)
        let r = try AzureUpload.run(diskPath: disk, destination: target, options: options, verbose: verbose)
        if json {
            try printJSON(AzureUploadJSON(r))
            return
        }
        FileHandle.standardError.write(Data("\(disk) (\(r.inputFormat), \(formatBytes(r.virtualSize)) virtual) → \(r.destination): \(formatBytes(r.bytesSent)) in \(r.pages) pages\(r.resumed ? " (resumed)" : ""), \(String(format: "%.2f", r.seconds)) s\n".utf8))
        print("\(r.url) \(r.contentMD5)")
    }
}

struct AzureUploadJSON: Encodable {
    let destination: String
    let container: String
    let blob: String
    let url: String
    let inputFormat: String
    let virtualSize: UInt64
    let size: UInt64
    let md5: String
    let sentAsIs: Bool
    let resumed: Bool
    let bytesSent: UInt64
    let pages: Int
    let bytesAlreadyStored: UInt64
    let seconds: Double

    init(_ r: AzureUploadResult) {
        destination = r.destination
        container = r.container
        blob = r.blob
        url = r.url
        inputFormat = r.inputFormat
        virtualSize = r.virtualSize
        size = r.blobSize
        md5 = r.contentMD5
        sentAsIs = r.sentAsIs
        resumed = r.resumed
        bytesSent = r.bytesSent
        pages = r.pages
        bytesAlreadyStored = r.bytesAlreadyStored
        seconds = (r.seconds * 1000).rounded() / 1000
    }

    enum CodingKeys: String, CodingKey {
        case destination, container, blob, url, size, md5, resumed, pages, seconds
        case inputFormat = "input_format", virtualSize = "virtual_size", sentAsIs = "sent_as_is"
        case bytesSent = "bytes_sent", bytesAlreadyStored = "bytes_already_stored"
    }
}
