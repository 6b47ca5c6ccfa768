import CloudAuth
import CVMSupport
import DiskImage
import Foundation
import Logging
import Transport

/// `cvm-cli upload <disk> gs://BUCKET/OBJECT`: a GCE image archive (GCP tar.gz) in a bucket,
/// sent with a resumable upload. A `.tar.gz` disk goes as is; any other format is converted to
/// the GCP tar.gz while it is being sent (no temporary file).
public enum GCSUpload {
    /// Content type of the object (a gzip'd tar, as `gcloud compute images import` expects).
    public static let contentType = "application/gzip"

    public static func run(diskPath: String, destination: GCSObjectName,
                           environment: [String: String] = ProcessInfo.processInfo.environment,
                           home: String? = nil, options: GCSUploadOptions = GCSUploadOptions(),
                           verbose: Bool = false) throws -> GCSUploadResult {
        let start = monotonicSeconds()
        // `$HOME` first, as Google's tools expand `~` (gcloud's folder, the cache).
        let home = home ?? userHomeDirectory(environment)
        guard options.chunkSize > 0, options.chunkSize % GCSUploadOptions.chunkGranularity == 0 else {
            throw CVMError.usage("GCS chunk size \(options.chunkSize) is not a positive multiple of 256 KiB")
        }
        // Open first: a bad disk fails before any request is made.
        let file = try FileDescriptor.openForReading(diskPath)
        defer { file.close() }
        let reader = try DiskImageFile.open(diskPath)
        let configuration = try GoogleDiscovery.resolve(environment: environment, home: home)
        let absolutePath = diskPath.hasPrefix("/") ? diskPath : FileManager.default.currentDirectoryPath + "/" + diskPath

        let transport = TransportConfiguration(environment: environment, maxConcurrentTransfers: 2, isCancelled: options.isCancelled)
        let client = HTTPClient(configuration: transport, logger: .commandLog(label: "cvm.gcp", verbose: verbose))
        let tokens = GoogleAccessTokenSource(credentials: configuration.credentials, client: client,
                                             scopes: ["https://www.googleapis.com/auth/devstorage.read_write"])
        let session = GCSResumableSession(client: client, tokens: tokens, deadline: options.requestDeadline)

        let asIs = reader.format == .gcpTarGz
        let streamKind = asIs ? "as-is" : "gcp-tar.gz level=\(options.writerOptions.compressionLevel) mtime=\(options.writerOptions.timestamp)"
        let store = GCSResumeStore(environment: environment, home: home)
        let statePath = store.path(destination: destination.description, sourcePath: absolutePath)
        let identity = try GCSResumeStore.identity(of: file, path: absolutePath)

        let upload = ResumableUploadRun(
            session: session, destination: destination, endpoint: configuration.storageEndpoint,
            options: options, store: store, statePath: statePath, identity: identity, streamKind: streamKind,
            makeStream: {
                let source: GCSUploadStream.Source = asIs
                    ? .file(file)
                    : .converted(reader, options.writerOptions)
                return try GCSUploadStream(source: source, chunkSize: options.chunkSize)
            },
            progressTotal: asIs ? identity.size : reader.virtualSize)
        var result = try upload.run()
        result.inputFormat = reader.format.rawValue
        result.converted = !asIs
        result.seconds = monotonicSeconds() - start
        return result
    }
}

/// One run of the resumable protocol: start or resume the session, stream the chunks, recover
/// from failed chunks by asking the server where it is, check the final object's hashes.
struct ResumableUploadRun {
    let session: GCSResumableSession
    let destination: GCSObjectName
    let endpoint: String
    let options: GCSUploadOptions
    let store: GCSResumeStore
    let statePath: String
    let identity: GCSResumeState.SourceIdentity
    let streamKind: String
    let makeStream: () throws -> GCSUploadStream
    let progressTotal: UInt64

    /// Failed chunk requests in a row, each followed by a status query, before giving up.
    static let maximumRecoveries = 5

    func run() throws -> GCSUploadResult {
        let log = options.log ?? { _ in }
        let stream = try makeStream()
        let total = stream.knownLength

        // A run without --resume never uses a saved state; it cancels the old session instead.
        var saved = store.load(statePath)
        if !options.resume, let old = saved {
            session.cancel(sessionURI: old.sessionURI)
            store.remove(statePath)
            log("discarded the upload state of an earlier run (use --resume to continue one)")
            saved = nil
        }
        if let old = saved, let problem = mismatch(old, total: total) {
            log("not resuming: \(problem); starting a new upload")
            session.cancel(sessionURI: old.sessionURI)
            store.remove(statePath)
            saved = nil
        }

        var sessionURI: String
        var confirmed: UInt64 = 0
        var finishedObject: [String: Any]?
        var storedCRCs: [UInt32] = []
        if let old = saved {
            sessionURI = old.sessionURI
            switch try session.status(sessionURI: old.sessionURI, total: total) {
            case nil:
                log("the saved upload session has expired; starting a new upload")
                sessionURI = try startSession(total: total)
            case .incomplete(let at)?:
                confirmed = at
                storedCRCs = old.blockCRC32C
                log("resuming at byte \(at) (\(formatBytes(at)) already stored)")
            case .finished(let object)?:
                finishedObject = object
                storedCRCs = old.blockCRC32C
                log("the saved upload session had already finished; checking the object")
            }
        } else {
            if options.resume { log("no saved upload of this disk to \(destination); starting one") }
            sessionURI = try startSession(total: total)
        }
        let resumedFrom = confirmed

        if let report = options.progress, stream.knownLength == nil {
            let total = progressTotal
            stream.onSourceProgress = { done in report(done, total) }
        }
        stream.start()
        defer { stream.cancel() }

        var state = GCSResumeState(destination: destination.description, storageEndpoint: endpoint,
                                   sessionURI: sessionURI, source: identity, streamKind: streamKind,
                                   chunkSize: UInt64(options.chunkSize), totalLength: total,
                                   confirmed: confirmed, blockCRC32C: storedCRCs)
        try store.save(state, to: statePath)

        let sent = ByteCounter()
        do {
            var window = ByteWindow()     // stream bytes [windowStart, windowStart + window.count)
            var windowStart = confirmed   // == bytes the server confirmed
            var produced: UInt64 = 0
            var ended = false
            var prefixChecked = storedCRCs.isEmpty

            /// Pulls one chunk; bytes the server already holds are hashed by the stream, not kept.
            func pull() throws {
                guard let chunk = try stream.next() else { ended = true; return }
                let chunkStart = produced
                produced += UInt64(chunk.count)
                if produced <= windowStart { return }
                let keepFrom = Int(windowStart > chunkStart ? windowStart - chunkStart : 0)
                window.append(chunk[keepFrom...])
            }

            /// The regenerated stream must equal what was uploaded before (deterministic writer,
            /// unchanged source): compare the per-block CRCs of the part the server holds.
            func checkPrefix() throws {
                guard !prefixChecked, produced >= windowStart || ended else { return }
                let made = stream.verificationCRCs
                let comparable = min(storedCRCs.count, made.count)
                if Array(made.prefix(comparable)) != Array(storedCRCs.prefix(comparable)) {
                    throw CVMError.io("\(identity.path): the data made for --resume differs from what was uploaded before to \(destination); run again without --resume to start over")
                }
                prefixChecked = true
            }

            var recoveries = 0
            while finishedObject == nil {
                while (window.count < options.chunkSize || produced < windowStart) && !ended { try pull() }
                // A known length tells when the last byte is in: confirm the end (the request that
                // carries it also carries the hashes). An unknown length that ends on a chunk
                // boundary is finished by an empty request with the total.
                if let total, !ended, windowStart + UInt64(window.count) >= total { try pull() }
                try checkPrefix()
                if ended && produced < windowStart {
                    throw CVMError.io("\(identity.path): the stream is \(produced) bytes but the server holds \(windowStart); run again without --resume to start over")
                }
                let isLast = ended && window.count <= options.chunkSize
                let count = isLast ? window.count : options.chunkSize
                let body = window.prefix(count)
                let streamTotal: UInt64? = isLast ? produced : total
                let hashes = isLast ? { let d = stream.digests; return (d.md5, d.crc32c) }() : nil
                let answer: GCSResumableSession.Answer
                let attempts = AttemptBytes()
                defer { sent.add(attempts.total) }
                do {
                    answer = try session.put(sessionURI: sessionURI, chunk: body, at: windowStart, total: streamTotal,
                                             hashes: hashes, progress: { done, _ in attempts.update(done) })
                } catch let error as CVMError where error.kind != .interrupted {
                    // The request may have reached the server or not: ask where it is.
                    recoveries += 1
                    guard recoveries <= Self.maximumRecoveries,
                          let status = try? session.status(sessionURI: sessionURI, total: streamTotal) else { throw error }
                    switch status {
                    case .finished(let object):
                        finishedObject = object
                        continue
                    case .incomplete(let at):
                        guard at >= windowStart, at <= windowStart + UInt64(window.count) else { throw error }
                        log("chunk at byte \(windowStart) failed (\(error.message)); the server holds \(at) bytes, continuing from there")
                        window.removeFirst(Int(at - windowStart))
                        windowStart = at
                        continue
                    }
                }
                switch answer {
                case .finished(let object):
                    finishedObject = object
                    windowStart += body.size
                    window.removeAll()
                case .incomplete(let at):
                    guard at >= windowStart, at <= windowStart + body.size else {
                        throw CVMError.io("GCS upload of \(destination): the server reports \(at) bytes stored after a chunk \(windowStart)…\(windowStart + body.size); the session is inconsistent, run again without --resume")
                    }
                    if at > windowStart { recoveries = 0 }
                    window.removeFirst(Int(at - windowStart))
                    windowStart = at
                    state.confirmed = at
                    state.blockCRC32C = Array(stream.verificationCRCs.prefix(Int(at / GCSUploadStream.verificationBlockSize)))
                    if state.blockCRC32C.count < storedCRCs.count { state.blockCRC32C = storedCRCs }
                    try store.save(state, to: statePath)
                    if stream.knownLength != nil { options.progress?(at, progressTotal) }
                }
            }
            // Drain the stream (a resume that found the object finished still needs its hashes).
            while !ended { try pull() }
            try checkPrefix()
            let digests = stream.digests
            let result = try verify(finishedObject!, digests: digests)
            store.remove(statePath)
            options.progress?(progressTotal, progressTotal)
            log("finished \(destination): \(digests.length) bytes, md5 \(digests.md5), crc32c \(digests.crc32c)")
            return GCSUploadResult(bucket: destination.bucket, object: destination.object, size: digests.length,
                                   md5: digests.md5, crc32c: digests.crc32c, bytesSent: sent.value,
                                   resumedFrom: resumedFrom, inputFormat: "", converted: false,
                                   generation: result, seconds: 0)
        } catch {
            if options.resume {
                if let e = error as? CVMError {
                    throw CVMError(e.kind, "\(e.message) (the upload state is kept: run the same command with --resume to continue)")
                }
                throw error
            }
            session.cancel(sessionURI: sessionURI)
            store.remove(statePath)
            throw error
        }
    }

    private func startSession(total: UInt64?) throws -> String {
        let uri = try session.start(endpoint: endpoint, object: destination, contentType: GCSUpload.contentType, length: total)
        options.log?("started a resumable upload session for \(destination)")
        return uri
    }

    /// Why a saved state cannot continue this upload, or nil when it can.
    private func mismatch(_ old: GCSResumeState, total: UInt64?) -> String? {
        if old.source != identity { return "\(identity.path) changed since the interrupted upload" }
        if old.destination != destination.description || old.storageEndpoint != endpoint { return "the destination differs" }
        if old.streamKind != streamKind { return "the saved upload used other conversion options" }
        if old.totalLength != total { return "the stream length differs" }
        return nil
    }

    /// The finished object's size, MD5 and CRC-32C must be what we streamed.
    private func verify(_ object: [String: Any], digests: (md5: String, crc32c: String, length: UInt64)) throws -> String? {
        let size = (object["size"] as? String).flatMap(UInt64.init) ?? (object["size"] as? NSNumber)?.uint64Value
        guard size == digests.length else {
            throw CVMError.io("GCS upload of \(destination): the stored object has \(size.map(String.init) ?? "no") bytes, expected \(digests.length); it is incomplete or was replaced")
        }
        guard let crc = object["crc32c"] as? String, crc == digests.crc32c else {
            throw CVMError.io("GCS upload of \(destination): the stored object's crc32c \(object["crc32c"] as? String ?? "(missing)") differs from the uploaded data's \(digests.crc32c)")
        }
        // GCS omits md5Hash only for composite objects, which a resumable upload does not make.
        guard let md5 = object["md5Hash"] as? String, md5 == digests.md5 else {
            throw CVMError.io("GCS upload of \(destination): the stored object's md5Hash \(object["md5Hash"] as? String ?? "(missing)") differs from the uploaded data's \(digests.md5)")
        }
        return object["generation"] as? String
    }
}

/// Body bytes of one request over its attempts (each retry reports from 0 again).
final class AttemptBytes: @unchecked Sendable {
    private let lock = NSLock()
    private var finished: UInt64 = 0
    private var current: UInt64 = 0
    func update(_ done: UInt64) {
        lock.withLock {
            if done < current { finished += current }
            current = done
        }
    }
    var total: UInt64 { lock.withLock { finished + current } }
}

/// Bytes sent, counted from the uploading thread.
final class ByteCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var total: UInt64 = 0
    func add(_ n: UInt64) { lock.withLock { total += n } }
    var value: UInt64 { lock.withLock { total } }
}
