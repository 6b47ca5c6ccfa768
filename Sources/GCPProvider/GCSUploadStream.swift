import CVMCrypto
import CVMSupport
import DiskImage
import Foundation

/// The bytes that become the GCS object, made on a producer thread and handed over in pieces
/// of at most 1 MiB through a queue bounded in bytes. The uploader keeps the pieces of the
/// chunk in flight until the server confirms them, so memory is one chunk plus the queue
/// (`fileQueueBytes` for a file, `convertedQueueBytes` plus the converter's pipeline for a
/// conversion), whatever the disk size.
///
/// A `.tar.gz` input is read as is; any other disk is converted on the fly by `GCPTarGzWriter`,
/// whose output is byte-identical for the same input and options, so a resumed upload can make
/// the stream again and skip what the server already holds. The producer hashes everything it
/// emits: MD5 and CRC-32C of the whole stream, and a CRC-32C per `verificationBlockSize` block
/// so a resume can prove that the regenerated prefix equals the one uploaded before.
final class GCSUploadStream: @unchecked Sendable {
    static let verificationBlockSize: UInt64 = 4 << 20
    /// Largest piece handed over: the producer keeps running while a chunk is sent, and the
    /// memory it may run ahead by is counted in pieces.
    static let maximumPieceSize = 1 << 20
    /// Bytes a converting producer may run ahead of the uploader (made while a chunk is in
    /// flight).
    static let convertedQueueBytes = 4 << 20
    /// Bytes a file reader may run ahead: a whole default chunk, so the next request can start
    /// as soon as the server confirms one; the rest of a larger chunk is read at disk speed.
    static let fileQueueBytes = 8 << 20
    /// Memory of a converting producer: the converter reads 1 MiB batches and keeps one chunk
    /// per core compressing plus one waiting to be written (2 MiB each: input and output).
    static let converterBatchSize = 1 << 20

    enum Source {
        /// A GCP image archive, uploaded byte for byte.
        case file(FileDescriptor)
        /// Any other disk, converted to the GCP tar.gz while uploading.
        case converted(DiskReader, WriterOptions)
    }

    /// Exact length when known in advance (the file case); nil for a converted stream.
    let knownLength: UInt64?
    private let source: Source
    private let pieceSize: Int
    private let lock = NSCondition()
    private var queue: [[UInt8]] = []
    private let capacity: Int
    private var ended = false
    private var failure: Error?
    private var cancelled = false
    private var producerDone = DispatchSemaphore(value: 0)
    private var started = false

    // Written by the producer only; read by others under `lock` or after the end.
    private var md5 = Box(MD5Hasher())
    /// CRC-32C of the complete verification blocks, combined (the stream is hashed once).
    private var blocksCRC: UInt32 = 0
    private var blockCRC = CRC32C()
    private var blockFill: UInt64 = 0
    private var blockCRCs: [UInt32] = []
    private var produced: UInt64 = 0
    private var finalMD5: [UInt8]?
    /// Virtual-disk position the converter has passed (progress of a converted stream).
    private(set) var sourcePosition: UInt64 = 0
    var onSourceProgress: (@Sendable (UInt64) -> Void)?

    /// - Parameter chunkSize: the uploader's request size; pieces divide it.
    init(source: Source, chunkSize: Int) throws {
        self.source = source
        // A divisor of the chunk size (a multiple of 256 KiB), at most 1 MiB.
        var piece = min(chunkSize, Self.maximumPieceSize)
        while chunkSize % piece != 0 { piece -= GCSUploadOptions.chunkGranularity }
        pieceSize = piece
        switch source {
        case .file: capacity = max(1, min(chunkSize, Self.fileQueueBytes) / piece)
        case .converted: capacity = max(1, Self.convertedQueueBytes / piece)
        }
        switch source {
        case .file(let file): knownLength = try file.size()
        case .converted: knownLength = nil
        }
    }

    /// Starts the producer thread.
    func start() {
        precondition(!started)
        started = true
        let thread = Thread { [self] in
            do {
                try produce()
                lock.withLock { ended = true; lock.broadcast() }
            } catch {
                lock.withLock { failure = failure ?? error; ended = true; lock.broadcast() }
            }
            producerDone.signal()
        }
        thread.name = "gcs-upload-producer"
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// The next chunk of the stream, or nil at its end. Rethrows the producer's error.
    func next() throws -> [UInt8]? {
        lock.lock()
        defer { lock.unlock() }
        while queue.isEmpty && !ended { lock.wait() }
        if !queue.isEmpty {
            let chunk = queue.removeFirst()
            lock.broadcast()
            return chunk
        }
        if let failure { throw failure }
        return nil
    }

    /// Stops the producer (it fails its next hand-over) and waits for it.
    func cancel() {
        lock.withLock { cancelled = true; queue.removeAll(); lock.broadcast() }
        if started { producerDone.wait(); producerDone.signal() }
    }

    /// Base64 MD5 and CRC-32C of the whole stream and its length; only after `next()` returned nil.
    var digests: (md5: String, crc32c: String, length: UInt64) {
        lock.withLock {
            precondition(ended && failure == nil, "digests before the end of the stream")
            if finalMD5 == nil { finalMD5 = md5.value.finalizeCopy() }
            let crc = CRC32C.combine(blocksCRC, blockCRC.value, secondLength: blockFill)
            let bigEndian = [UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8(crc & 0xFF)]
            return (Base64.encode(finalMD5!), Base64.encode(bigEndian), produced)
        }
    }

    /// CRC-32C of each complete verification block made so far.
    var verificationCRCs: [UInt32] { lock.withLock { blockCRCs } }

    // MARK: producer side

    private func produce() throws {
        switch source {
        case .file(let file):
            let size = try file.size()
            var offset: UInt64 = 0
            while offset < size {
                let n = Int(min(UInt64(pieceSize), size - offset))
                var chunk = [UInt8](repeating: 0, count: n)
                try chunk.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
                offset += UInt64(n)
                try emit(chunk)
                sourcePosition = offset
                onSourceProgress?(offset)
            }
        case .converted(let reader, let options):
            let chunker = Chunker(stream: self)
            var options = options
            options.compressionSlots = options.threads + 1
            let writer = try GCPTarGzWriter(stream: chunker, inputVirtualSize: reader.virtualSize, options: options)
            var converter = DiskConverter()
            converter.batchSize = Self.converterBatchSize
            try converter.convert(from: reader, to: writer) { [self] position in
                sourcePosition = position
                onSourceProgress?(position)
            }
            try chunker.flush()
        }
    }

    /// Hashes `chunk` and queues it, waiting while the queue is full.
    fileprivate func emit(_ chunk: [UInt8]) throws {
        guard !chunk.isEmpty else { return }
        chunk.withUnsafeBytes { bytes in
            md5.value.update(bytes)
            var o = 0
            while o < bytes.count {
                let take = Int(min(UInt64(bytes.count - o), Self.verificationBlockSize - blockFill))
                blockCRC.update(UnsafeRawBufferPointer(rebasing: bytes[o..<(o + take)]))
                blockFill += UInt64(take)
                o += take
                if blockFill == Self.verificationBlockSize {
                    let value = blockCRC.value
                    blocksCRC = CRC32C.combine(blocksCRC, value, secondLength: Self.verificationBlockSize)
                    lock.withLock { blockCRCs.append(value) }
                    blockCRC = CRC32C()
                    blockFill = 0
                }
            }
        }
        lock.lock()
        defer { lock.unlock() }
        while queue.count >= capacity && !cancelled { lock.wait() }
        if cancelled { throw CVMError(.interrupted, "the upload stream was stopped") }
        produced += UInt64(chunk.count)
        queue.append(chunk)
        lock.broadcast()
    }

    /// Cuts the writer's output into pieces.
    private final class Chunker: StreamingOutput {
        unowned let stream: GCSUploadStream
        var buffer: [UInt8] = []

        init(stream: GCSUploadStream) {
            self.stream = stream
            buffer.reserveCapacity(stream.pieceSize)
        }

        func append(_ bytes: UnsafeRawBufferPointer) throws {
            var o = 0
            while o < bytes.count {
                let take = min(bytes.count - o, stream.pieceSize - buffer.count)
                buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[o..<(o + take)]))
                o += take
                if buffer.count == stream.pieceSize { try flush() }
            }
        }

        func flush() throws {
            guard !buffer.isEmpty else { return }
            let full = buffer
            buffer = []
            buffer.reserveCapacity(stream.pieceSize)
            try stream.emit(full)
        }
    }
}

/// Holds a non-copyable hasher in a class so it can live in a property that closures touch.
final class Box<T: ~Copyable> {
    var value: T
    init(_ value: consuming T) { self.value = value }
}

extension MD5Hasher {
    /// The digest so far, consuming the hasher (called once, at the end).
    mutating func finalizeCopy() -> [UInt8] {
        let done = consume self
        let digest = done.finalize()
        self = MD5Hasher()
        return digest
    }
}
