import ArgumentParser
import CVMSupport
import Foundation
import GCPProvider

extension UploadCommand {
    func runGCS() throws {
        let target = try GCSObjectName(parsing: destination)
        var options = GCSUploadOptions()
        let chunk = chunkMiB * 1_048_576
        guard chunk >= 262_144, chunk <= 4_294_967_296, chunk.truncatingRemainder(dividingBy: 262_144) == 0 else {
            throw CVMError.usage("--chunk-mib \(chunkMiB): expected a multiple of 0.25 between 0.25 and 4096")
        }
        options.chunkSize = Int(chunk)
        options.resume = resume
        let hooks = TransferHooks(label: "upload \(target)", json: json, verbose: verbose)
        defer { hooks.finish() }
        hooks.wire(&options)
        let r = try GCSUpload.run(diskPath: disk, destination: target, options: options, verbose: verbose)
        if json {
            try printJSON(GCSUploadJSON(r))
            return
        }
        let how = r.converted ? "converted to GCP tar.gz on the fly" : "sent as is"
        let resumed = r.resumedFrom > 0 ? ", resumed at \(formatBytes(r.resumedFrom))" : ""
        FileHandle.standardError.write(Data("\(disk) (\(r.inputFormat), \(how)) → \(r.destination): \(formatBytes(r.size)), \(formatBytes(r.bytesSent)) sent\(resumed), md5 \(r.md5), crc32c \(r.crc32c), \(String(format: "%.2f", r.seconds)) s\n".utf8))
        print(r.destination)
    }
}

struct GCSUploadJSON: Encodable {
    let destination: String
    let bucket: String
    let object: String
    let size: UInt64
    let md5: String
    let crc32c: String
    let bytesSent: UInt64
    let resumedFrom: UInt64
    let inputFormat: String
    let converted: Bool
    let generation: String?
    let seconds: Double

    init(_ r: GCSUploadResult) {
        destination = r.destination
        bucket = r.bucket
        object = r.object
        size = r.size
        md5 = r.md5
        crc32c = r.crc32c
        bytesSent = r.bytesSent
        resumedFrom = r.resumedFrom
        inputFormat = r.inputFormat
        converted = r.converted
        generation = r.generation
        seconds = (r.seconds * 1000).rounded() / 1000
    }

    enum CodingKeys: String, CodingKey {
        case destination, bucket, object, size, md5, crc32c, converted, generation, seconds
        case bytesSent = "bytes_sent", resumedFrom = "resumed_from", inputFormat = "input_format"
    }
}
