import CloudAuth
import CVMCrypto
import CVMSupport
import DiskImage
import Foundation
import Transport

/// Uploads a fixed-VHD stream into a page blob: create the container if missing, create the
/// page blob of the VHD's size (or, resuming, keep it and ask which pages it holds), Put Page
/// for every run of non-zero 512-byte pages (≤ 4 MiB each, in parallel, Content-MD5 on each),
/// then set the blob's Content-MD5 to the MD5 of the whole VHD.
struct PageBlobUpload {
    let session: AzureStorageSession
    let options: AzureUploadOptions
    let store: AzureUploadStateStore

    /// `stream` is `diskPath` opened with `options.footerTimestamp`, not read yet.
    func run(diskPath: String, stream opened: FixedVHDStream, destination: AzureBlobDestination) throws -> AzureUploadResult {
        let start = monotonicSeconds()
        var stream = opened
        let blobURL = session.url(container: destination.container, blob: destination.blob)
        var state = try AzureUploadState.describing(path: diskPath, blobURL: blobURL, blobSize: stream.size,
                                                    footerTimestamp: options.footerTimestamp)
        options.log?("\(diskPath): \(stream.inputFormat.rawValue), \(stream.isPassThrough ? "fixed VHD sent as is" : "converted on the fly to a fixed VHD"), \(stream.size) bytes")

        try createContainer(destination.container)

        // Resume only the same upload of the same file, into a blob of the same size.
        var written: [Range<UInt64>]?
        if options.resume {
            if let saved = store.load(blobURL: blobURL), saved.matches(state) {
                if let (size, ranges) = try pageRanges(blobURL), size == stream.size {
                    if saved.footerTimestamp != state.footerTimestamp {
                        stream = try FixedVHDStream.open(diskPath, timestamp: saved.footerTimestamp)
                        state.footerTimestamp = saved.footerTimestamp
                    }
                    written = ranges
                    let held = ranges.reduce(UInt64(0)) { $0 + UInt64($1.count) }
                    options.log?("resume: the blob holds \(held) bytes in \(ranges.count) page ranges; sending the rest")
                } else {
                    options.log?("resume: the blob is missing or has another size; starting from the beginning")
                }
            } else {
                options.log?("resume: no saved upload of this file to this blob; starting from the beginning")
            }
        }
        if written == nil {
            try createPageBlob(blobURL, size: stream.size)
            try store.save(state)
        }

        let feeder = try PageFeeder(stream: stream, written: written ?? [], maxPageSize: options.maxPageSize)
        let (bytes, pages) = try putPages(feeder, blobURL: blobURL, total: stream.size)
        let md5 = Base64.encode(try feeder.finalizeMD5())
        options.log?("Put Page: \(pages) requests, \(bytes) bytes; \(feeder.alreadyStoredBytes) bytes were already stored")
        try setContentMD5(blobURL, md5: md5)
        options.log?("Set Blob Properties: Content-MD5 \(md5)")
        store.remove(blobURL: blobURL)

        return AzureUploadResult(destination: destination.description, container: destination.container, blob: destination.blob,
                                 url: blobURL, inputFormat: stream.inputFormat.rawValue, virtualSize: stream.inputVirtualSize,
                                 blobSize: stream.size, contentMD5: md5, sentAsIs: stream.isPassThrough,
                                 resumed: written != nil, bytesSent: bytes, pages: pages,
                                 bytesAlreadyStored: feeder.alreadyStoredBytes, seconds: monotonicSeconds() - start)
    }

    // MARK: the calls

    /// Create Container; an existing one is fine.
    func createContainer(_ container: String) throws {
        var request = session.request("PUT", session.url(container: container), query: [("restype", "container")])
        request.acceptedStatuses = [201, 409]
        let response = try session.send("Create Container \(container)", request)
        if response.status == 409 {
            let code = response.headers["x-ms-error-code"] ?? ""
            guard code == "ContainerAlreadyExists" else {
                throw CVMError.io("Create Container \(container): HTTP 409 \(code)\(code == "ContainerBeingDeleted" ? ": the container is being deleted; try again in a minute or pick another name" : "")")
            }
            options.log?("Create Container \(container): already exists")
        } else {
            options.log?("Create Container \(container): created")
        }
    }

    /// Put Blob of an empty page blob of `size` bytes (replaces any blob of that name).
    func createPageBlob(_ blobURL: String, size: UInt64) throws {
        var headers = HTTPHeaders()
        headers.add("x-ms-blob-type", "PageBlob")
        headers.add("x-ms-blob-content-length", String(size))
        headers.add("x-ms-blob-sequence-number", "0")
        let request = session.request("PUT", blobURL, headers: headers)
        _ = try session.send("Put Blob (page blob of \(size) bytes)", request)
        options.log?("Put Blob: page blob of \(size) bytes created")
    }

    /// The blob's size and the page ranges it holds, or nil when there is no such blob.
    func pageRanges(_ blobURL: String) throws -> (UInt64, [Range<UInt64>])? {
        var ranges = [Range<UInt64>]()
        var marker: String?
        var size: UInt64 = 0
        repeat {
            var query = [("comp", "pagelist")]
            if let marker { query.append(("marker", marker)) }
            var request = session.request("GET", blobURL, query: query)
            request.acceptedStatuses = Set(200..<300).union([404])
            let response = try session.send("Get Page Ranges", request)
            if response.status == 404 { return nil }
            guard let length = response.headers["x-ms-blob-content-length"].flatMap(UInt64.init) else {
                throw CVMError.io("Get Page Ranges: the answer has no x-ms-blob-content-length header")
            }
            size = length
            let list = try PageList(xml: response.bodyText)
            ranges += list.ranges
            marker = list.nextMarker
        } while marker != nil
        return (size, normalizeRanges(ranges))
    }

    /// Set Blob Properties with the MD5 of the whole VHD.
    func setContentMD5(_ blobURL: String, md5: String) throws {
        var headers = HTTPHeaders()
        headers.add("x-ms-blob-content-md5", md5)
        let request = session.request("PUT", blobURL, query: [("comp", "properties")], headers: headers)
        _ = try session.send("Set Blob Properties", request)
    }

    /// Sends every page the feeder hands out, `maxConcurrentTransfers` at a time (the client's
    /// limiter lowers that on 503 ServerBusy). Returns the bytes and requests sent.
    private func putPages(_ feeder: PageFeeder, blobURL: String, total: UInt64) throws -> (UInt64, Int) {
        let counter = SentCounter()
        let progress = options.progress
        progress?(0, total)
        let threads = max(1, options.maxConcurrentTransfers)
        try session.client.forEachConcurrently(threads) { _ in
            do {
                while let page = try feeder.next() {
                    try putPage(page, blobURL: blobURL)
                    feeder.recycle(page)
                    counter.add(UInt64(page.length))
                    progress?(feeder.position, total)
                }
            } catch {
                feeder.fail()
                throw error
            }
        }
        progress?(total, total)
        return counter.value
    }

    private func putPage(_ page: PageFeeder.Page, blobURL: String) throws {
        var headers = HTTPHeaders()
        headers.add("x-ms-page-write", "update")
        headers.add("x-ms-range", "bytes=\(page.range.lowerBound)-\(page.range.upperBound - 1)")
        headers.add("Content-MD5", Base64.encode(MD5.hash(page.bytes)))
        let request = session.request("PUT", blobURL, query: [("comp", "page")], headers: headers, body: PageBody(page: page))
        _ = try session.send("Put Page \(page.range.lowerBound)-\(page.range.upperBound - 1)", request)
    }
}

/// Bytes and requests sent, from several threads.
private final class SentCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes: UInt64 = 0
    private var pages = 0
    func add(_ n: UInt64) { lock.withLock { bytes += n; pages += 1 } }
    var value: (UInt64, Int) { lock.withLock { (bytes, pages) } }
}
