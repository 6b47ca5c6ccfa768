import CVMCrypto
import CVMSupport
import DiskImage
import Foundation

/// Walks a fixed-VHD stream front to back in 4 MiB windows and hands upload threads the runs of
/// non-zero 512-byte pages, one at a time, while it computes the MD5 of the whole VHD (zeros
/// included) on the way. Pages the blob already holds (a resumed upload) are read and hashed but
/// not handed out.
///
/// The stream is only touched under the lock and in ascending order; memory is one window plus
/// one page per upload thread, whatever the disk size.
final class PageFeeder: @unchecked Sendable {
    struct Page {
        let offset: UInt64
        let bytes: [UInt8]
        var range: Range<UInt64> { offset..<(offset + UInt64(bytes.count)) }
    }

    static let pageSize = 512
    /// Largest Put Page body the service accepts.
    static let windowSize = 4 << 20

    private let lock = NSLock()
    private let stream: FixedVHDStream
    private let written: [Range<UInt64>]
    private var windows: WindowIterator
    private var pending: [Page] = []
    private var md5: MD5Hasher? = MD5Hasher()
    private var hashed: UInt64 = 0
    private var window: [UInt8]
    private let zeros = [UInt8](repeating: 0, count: 1 << 20)
    private var failed = false
    private var skipped: UInt64 = 0

    /// Stream bytes looked at (and hashed) so far.
    var position: UInt64 { lock.withLock { hashed } }
    /// Non-zero bytes not handed out because the blob already holds them.
    var alreadyStoredBytes: UInt64 { lock.withLock { skipped } }

    /// - Parameter written: ranges the blob already holds (normalized), skipped.
    init(stream: FixedVHDStream, written: [Range<UInt64>] = []) throws {
        guard stream.size % UInt64(Self.pageSize) == 0 else {
            throw CVMError.invalid("the VHD is \(stream.size) bytes, not a multiple of 512; a page blob cannot hold it")
        }
        self.stream = stream
        self.written = normalizeRanges(written)
        windows = WindowIterator(ranges: try stream.storedRanges(), window: UInt64(Self.windowSize), limit: stream.size)
        window = [UInt8](repeating: 0, count: Self.windowSize)
    }

    /// The next run of non-zero pages to send, or nil when none is left (or another thread failed).
    func next() throws -> Page? {
        try lock.withLock {
            while !failed {
                if let page = pending.popLast() { return page }
                guard let index = windows.next() else {
                    hashZeros(upTo: stream.size)
                    return nil
                }
                try load(window: index)
            }
            return nil
        }
    }

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
        let start = index * UInt64(Self.windowSize)
        let length = Int(min(UInt64(Self.windowSize), stream.size - start))
        hashZeros(upTo: start)
        try window.withUnsafeMutableBytes { buffer in
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length])
            try stream.read(into: part, at: start)
            md5?.update(UnsafeRawBufferPointer(part))
        }
        hashed = start + UInt64(length)
        // Runs of non-zero pages, minus what the blob already holds (kept reversed: popLast).
        var runs = [Page]()
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
                    let lo = Int(r.lowerBound - start), hi = Int(r.upperBound - start)
                    runs.append(Page(offset: r.lowerBound, bytes: Array(buffer[lo..<hi])))
                }
                page = end
            }
        }
        pending = runs.reversed()
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

/// Indices of the windows that intersect the stored ranges, ascending, each once.
struct WindowIterator {
    private let ranges: [Range<UInt64>]
    private let window: UInt64
    private var rangeIndex = 0
    private var nextWindow: UInt64 = 0

    init(ranges: [Range<UInt64>], window: UInt64, limit: UInt64) {
        self.ranges = normalizeRanges(ranges.map { $0.clamped(to: 0..<limit) })
        self.window = window
    }

    mutating func next() -> UInt64? {
        while rangeIndex < ranges.count {
            let range = ranges[rangeIndex]
            let first = max(nextWindow, range.lowerBound / window)
            let end = (range.upperBound + window - 1) / window
            if first < end {
                nextWindow = first + 1
                return first
            }
            rangeIndex += 1
        }
        return nil
    }
}
