import Dispatch
import CVMSupport

/// Compresses the chunks of one gzip member on worker threads while the caller prepares the
/// next ones, and appends the results to the output in submission order.
///
/// Every chunk is copied into a slot, so the caller may reuse its buffer at once; the number
/// of slots bounds memory. The caller only waits when all slots are busy, which keeps both
/// cores compressing while the converter reads the next piece (no barrier per piece).
/// All-zero chunks are compressed once and the bytes reused.
final class GzipChunkPipeline {
    /// One chunk in flight: its input copy, compressed output and compressor.
    private final class Slot: @unchecked Sendable {
        let input: UnsafeMutableRawBufferPointer
        let output: UnsafeMutableRawBufferPointer
        let deflater: RawDeflater
        var inputCount = 0
        var outputCount = 0
        var crc: UInt32 = 0
        var error: Error?
        let done = DispatchSemaphore(value: 0)

        init(chunkSize: Int, level: Int) throws {
            deflater = try RawDeflater(level: level)
            input = .allocate(byteCount: chunkSize, alignment: 64)
            output = .allocate(byteCount: GzipFraming.outputCapacity(forChunkOf: chunkSize), alignment: 64)
        }

        deinit {
            input.deallocate()
            output.deallocate()
        }

        /// Runs on a worker; the submitting thread reads the results after `done`.
        func compress() {
            let data = UnsafeRawBufferPointer(rebasing: input[0..<inputCount])
            do {
                outputCount = try deflater.compress(data, into: output)
                crc = crc32(data)
            } catch {
                self.error = error
            }
            done.signal()
        }
    }

    private enum Pending {
        case chunk(Slot)
        case zeroChunks(UInt64)
        /// Already compressed bytes to copy from a file (see `GzipReusableChunks`).
        case copy(ByteSource, Range<UInt64>, crc: UInt32)
    }

    let chunkSize: Int
    private let level: Int
    private let parallel: Bool
    private let sink: SequentialOutput
    private let maxSlots: Int
    private var slotsMade = 0
    private var freeSlots: [Slot] = []
    /// Chunks submitted but not yet written, oldest first.
    private var pending: [Pending] = []
    private var zeroChunk: (bytes: [UInt8], crc: UInt32)?
    private var copyBuffer: UnsafeMutableRawBufferPointer?
    /// CRC-32 and length of everything written so far.
    private(set) var checksum = GzipChecksum()

    /// - Parameter threads: 1 compresses on the caller's thread; more uses the global queue.
    /// - Parameter slots: chunks in flight (memory: 2 × chunkSize each); nil picks 4 + 2 × threads.
    init(sink: SequentialOutput, chunkSize: Int, level: Int, threads: Int, slots: Int? = nil) {
        self.sink = sink
        self.chunkSize = chunkSize
        self.level = level
        parallel = threads > 1
        // Enough for one 8 MiB piece compressing while the next is submitted.
        maxSlots = parallel ? max(threads + 1, slots ?? 4 + 2 * threads) : 1
    }

    deinit { copyBuffer?.deallocate() }

    /// Compresses `data` (at most `chunkSize` bytes) followed by zeros up to `paddedLength`.
    func submit(_ data: UnsafeRawBufferPointer, paddedTo paddedLength: Int? = nil) throws {
        let length = max(paddedLength ?? data.count, data.count)
        guard length <= chunkSize else {
            throw CVMError.io("internal error: a gzip chunk of \(length) bytes exceeds \(chunkSize)")
        }
        try writeFinishedChunks()
        let slot = try takeSlot()
        if let base = data.baseAddress, data.count > 0 {
            slot.input.baseAddress!.copyMemory(from: base, byteCount: data.count)
        }
        if length > data.count {
            UnsafeMutableRawBufferPointer(rebasing: slot.input[data.count..<length]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        slot.inputCount = length
        slot.error = nil
        pending.append(.chunk(slot))
        if parallel {
            DispatchQueue.global(qos: .userInitiated).async { slot.compress() }
        } else {
            slot.compress()
        }
    }

    /// Appends `count` chunks of `chunkSize` zero bytes.
    func submitZeroChunks(_ count: UInt64) throws {
        guard count > 0 else { return }
        if case .zeroChunks(let n)? = pending.last {
            pending[pending.count - 1] = .zeroChunks(n + count)
        } else {
            pending.append(.zeroChunks(count))
        }
        try writeFinishedChunks()
    }

    /// Appends one chunk of `chunkSize` bytes whose independent, sync-flushed compressed form
    /// is `range` of `source` (its decompressed CRC-32 is `crc`).
    func submitCompressed(from source: ByteSource, range: Range<UInt64>, crc: UInt32) throws {
        pending.append(.copy(source, range, crc: crc))
        try writeFinishedChunks()
        // Copies queue behind a chunk still compressing; they are cheap, but bound them.
        while pending.count > 64 { try writeOldest() }
    }

    /// Waits for every submitted chunk and writes it.
    func drain() throws {
        while !pending.isEmpty { try writeOldest() }
    }

    /// A free slot, made on demand up to `maxSlots`; else waits for the oldest chunk.
    private func takeSlot() throws -> Slot {
        while freeSlots.isEmpty {
            if slotsMade < maxSlots {
                slotsMade += 1
                return try Slot(chunkSize: chunkSize, level: level)
            }
            try writeOldest()
        }
        return freeSlots.removeLast()
    }

    /// Writes chunks from the front of the queue that are already compressed, without waiting.
    private func writeFinishedChunks() throws {
        while let first = pending.first {
            if case .chunk(let slot) = first {
                guard slot.done.wait(timeout: .now()) == .success else { return }
                try writeOldest(alreadySignalled: true)
            } else {
                try writeOldest()
            }
        }
    }

    private func writeOldest(alreadySignalled: Bool = false) throws {
        guard !pending.isEmpty else { return }
        switch pending.removeFirst() {
        case .chunk(let slot):
            if !alreadySignalled { slot.done.wait() }
            if let error = slot.error { throw error }
            try sink.append(UnsafeRawBufferPointer(rebasing: slot.output[0..<slot.outputCount]))
            checksum.append(crc: slot.crc, length: UInt64(slot.inputCount))
            freeSlots.append(slot)
        case .copy(let source, let range, let crc):
            // In small pieces: the sink buffers them anyway (memory stays flat).
            let buffer = copyBuffer ?? UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 64)
            copyBuffer = buffer
            var at = range.lowerBound
            while at < range.upperBound {
                let bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(UInt64(buffer.count), range.upperBound - at))])
                try source.read(into: bytes, at: at)
                try sink.append(UnsafeRawBufferPointer(bytes))
                at += UInt64(bytes.count)
            }
            checksum.append(crc: crc, length: UInt64(chunkSize))
        case .zeroChunks(let count):
            let zero = try compressedZeroChunk()
            for _ in 0..<count {
                try sink.append(zero.bytes)
                checksum.append(crc: zero.crc, length: UInt64(chunkSize))
            }
        }
    }

    private func compressedZeroChunk() throws -> (bytes: [UInt8], crc: UInt32) {
        if let zeroChunk { return zeroChunk }
        let zeros = [UInt8](repeating: 0, count: chunkSize)
        var out = [UInt8](repeating: 0, count: GzipFraming.outputCapacity(forChunkOf: chunkSize))
        let deflater = try RawDeflater(level: level)
        let n = try zeros.withUnsafeBytes { z in try out.withUnsafeMutableBytes { try deflater.compress(z, into: $0) } }
        let made = (Array(out.prefix(n)), crc32(zeros))
        zeroChunk = made
        return made
    }
}
