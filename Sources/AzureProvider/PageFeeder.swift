import CVMCrypto
import CVMSupport
import DiskImage
import Foundation
import Transport

/// Walks a fixed-VHD stream front to back in windows of the page size and hands upload threads
/// the runs of non-zero 512-byte pages, one at a time, while it computes the MD5 of the whole VHD
/// (zeros included) on the way. Pages the blob already holds (a resumed upload) are read and
/// hashed but not handed out.
///
/// The stream is only touched under the lock and in ascending order; memory is one window plus
/// one page buffer per upload thread (8 × 2 MiB by default), whatever the disk size.
final class PageFeeder: @unchecked Sendable {
    /// A run of pages in a buffer of the feeder's pool; give it back with `recycle`.
    struct Page: @unchecked Sendable {
        let offset: UInt64
        let buffer: PageBuffer
        let length: Int
        var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: buffer.memory[0..<length]) }
        var range: Range<UInt64> { offset..<(offset + UInt64(length)) }
    }

    static let pageSize = 512
    /// The largest Put Page body the service accepts.
    static let maxPageLimit = 4 << 20
    /// Largest run handed out (a multiple of 512, ≤ 4 MiB).
    let maxPageSize: Int
    /// Read granularity: the page size rounded up to 64 KiB (the stream's read unit).
    let windowSize: Int

    private let lock = NSLock()
    private let stream: FixedVHDStream
    private let written: [Range<UInt64>]
    private var windows: StoredChunkIndices
    /// Runs of the current window still to hand out (reversed: popLast), and where it starts.
    private var pending: [Range<UInt64>] = []
    private var windowStart: UInt64 = 0
    /// Page buffers handed back; each upload thread holds at most one, so this stays small.
    private var pool: [PageBuffer] = []
    private var md5: MD5Hasher? = MD5Hasher()
    private var hashed: UInt64 = 0
    private var window: [UInt8]
    private let zeros = [UInt8](repeating: 0, count: 64 << 10)
    private var failed = false
    private var skipped: UInt64 = 0

    /// Stream bytes looked at (and hashed) so far.
    var position: UInt64 { lock.withLock { hashed } }
    /// Non-zero bytes not handed out because the blob already holds them.
    var alreadyStoredBytes: UInt64 { lock.withLock { skipped } }

    /// - Parameter written: ranges the blob already holds (normalized), skipped.
    init(stream: FixedVHDStream, written: [Range<UInt64>] = [], maxPageSize: Int = 2 << 20) throws {
        precondition(maxPageSize > 0 && maxPageSize % Self.pageSize == 0 && maxPageSize <= Self.maxPageLimit)
        self.maxPageSize = maxPageSize
        windowSize = (maxPageSize + 65535) / 65536 * 65536
        guard stream.size % UInt64(Self.pageSize) == 0 else {
            throw CVMError.invalid("the VHD is \(stream.size) bytes, not a multiple of 512; a page blob cannot hold it")
        }
        self.stream = stream
        self.written = normalizeRanges(written)
        windows = StoredChunkIndices(ranges: try stream.storedRanges(), chunkSize: UInt64(windowSize), limit: stream.size)
        window = [UInt8](repeating: 0, count: windowSize)
    }

    /// The next run of non-zero pages to send, or nil when none is left (or another thread failed).
    func next() throws -> Page? {
        try lock.withLock {
            while !failed {
                if let run = pending.popLast() { return page(run) }
                guard let index = windows.next() else {
                    hashZeros(upTo: stream.size)
                    return nil
                }
                try load(window: index)
            }
            return nil
        }
    }

    /// Takes back the buffer of a page that was sent.
    func recycle(_ page: Page) { lock.withLock { pool.append(page.buffer) } }

    /// Stops handing out pages (an upload thread failed).
    func fail() { lock.withLock { failed = true } }

    /// The MD5 of the whole VHD; call once, after `next()` returned nil.
    func finalizeMD5() throws -> [UInt8] {
        try lock.withLock {
            guard hashed == stream.size, !failed, let hasher = md5.take() else {
                throw CVMError.io("page blob upload: MD5 requested before the whole VHD was read (internal error)")
            }
            return hasher.finalize()
        }
    }

    // MARK: under the lock

    private func load(window index: UInt64) throws {
        let start = index * UInt64(windowSize)
        let length = Int(min(UInt64(windowSize), stream.size - start))
        hashZeros(upTo: start)
        try window.withUnsafeMutableBytes { buffer in
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length])
            try stream.read(into: part, at: start)
            md5?.update(UnsafeRawBufferPointer(part))
        }
        hashed = start + UInt64(length)
        // Runs of non-zero pages, minus what the blob already holds, cut at `maxPageSize`.
        windowStart = start
        var runs = [Range<UInt64>]()
        window.withUnsafeBytes { buffer in
            var page = 0
            let pages = length / Self.pageSize
            while page < pages {
                if isZero(buffer, page: page) { page += 1; continue }
                var end = page + 1
                while end < pages, !isZero(buffer, page: end) { end += 1 }
                let run = (start + UInt64(page * Self.pageSize))..<(start + UInt64(end * Self.pageSize))
                let toSend = subtracting(written, from: run)
                skipped += UInt64(run.count) - toSend.reduce(0) { $0 + UInt64($1.count) }
                for r in toSend {
                    var lo = r.lowerBound
                    while lo < r.upperBound {
                        let hi = min(r.upperBound, lo + UInt64(maxPageSize))
                        runs.append(lo..<hi)
                        lo = hi
                    }
                }
                page = end
            }
        }
        pending = runs.reversed()
    }

    /// Copies `run` of the current window into a pooled buffer.
    private func page(_ run: Range<UInt64>) -> Page {
        let buffer = pool.popLast() ?? PageBuffer(capacity: maxPageSize)
        let length = Int(run.count)
        let from = Int(run.lowerBound - windowStart)
        window.withUnsafeBytes { w in
            buffer.memory.baseAddress!.copyMemory(from: w.baseAddress! + from, byteCount: length)
        }
        return Page(offset: run.lowerBound, buffer: buffer, length: length)
    }

    private func isZero(_ buffer: UnsafeRawBufferPointer, page: Int) -> Bool {
        isAllZero(UnsafeRawBufferPointer(rebasing: buffer[(page * Self.pageSize)..<((page + 1) * Self.pageSize)]))
    }

    /// Feeds the zeros between what was hashed and `offset` (holes, skipped windows).
    private func hashZeros(upTo offset: UInt64) {
        zeros.withUnsafeBytes { z in
            while hashed < offset {
                let n = Int(min(UInt64(z.count), offset - hashed))
                md5?.update(UnsafeRawBufferPointer(rebasing: z[0..<n]))
                hashed += UInt64(n)
            }
        }
    }
}

/// Memory for one page run, allocated once and reused: steady memory, no allocator churn across
/// upload threads (which otherwise leaves freed 2–4 MiB blocks parked in per-thread arenas).
final class PageBuffer: @unchecked Sendable {
    let memory: UnsafeMutableRawBufferPointer

    init(capacity: Int) {
        memory = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit { memory.deallocate() }
}

/// A page run as a request body (replayed from the pooled buffer on each retry).
struct PageBody: RequestBody {
    let page: PageFeeder.Page

    var size: UInt64 { UInt64(page.length) }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < size else { return 0 }
        let n = min(buffer.count, page.length - Int(offset))
        buffer.baseAddress!.copyMemory(from: page.buffer.memory.baseAddress! + Int(offset), byteCount: n)
        return n
    }
}
