import CVMCrypto
import CVMSupport
import DiskImage
import Foundation

/// Hands the non-zero 512 KiB blocks of a virtual disk to upload threads, one at a time, and
/// folds their digests into the LINEAR aggregate in block order as they complete.
///
/// The reader is only used under the lock (readers need not be thread-safe) and in ascending
/// order; memory is one block per upload thread, whatever the disk size.
final class EBSBlockFeeder: @unchecked Sendable {
    struct Block {
        let sequence: Int
        let index: UInt64
        let bytes: [UInt8]
    }

    private let lock = NSLock()
    private let disk: DiskReader
    private let blockSize: Int
    private var candidates: StoredChunkIndices
    private var aggregate: SHA256Hasher? = SHA256Hasher()
    /// Digests of blocks that completed before an earlier one did.
    private var waiting: [Int: [UInt8]] = [:]
    private var nextToHash = 0
    private var handedOut = 0
    private var failed = false
    private var scanned: UInt64 = 0
    private var stored = 0
    /// SHA-256 of the whole virtual disk (zeros of holes included), fed in offset order as
    /// blocks are read: the disk's digest without a second pass. Nil when not asked for.
    private let content: ContentHasher?

    /// Virtual-disk bytes looked at so far (stored ranges only).
    var scannedBytes: UInt64 { lock.withLock { scanned } }
    /// Blocks the server has accepted.
    var completed: Int { lock.withLock { stored } }

    init(disk: DiskReader, blockSize: Int, hashContent: Bool = false) throws {
        self.disk = disk
        self.blockSize = blockSize
        candidates = StoredChunkIndices(ranges: try disk.storedRanges(), chunkSize: UInt64(blockSize), limit: disk.virtualSize)
        content = hashContent ? ContentHasher(virtualSize: disk.virtualSize) : nil
    }

    deinit { content?.cancel() }

    /// The next block holding data, or nil when none is left (or another thread failed).
    func next() throws -> Block? {
        try lock.withLock {
            while !failed, let index = candidates.next() {
                let offset = index * UInt64(blockSize)
                let length = Int(min(UInt64(blockSize), disk.virtualSize - offset))
                var bytes = [UInt8](repeating: 0, count: blockSize)   // a short last block stays zero-padded
                try bytes.withUnsafeMutableBytes { buffer in
                    try disk.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length]), at: offset)
                }
                scanned += UInt64(length)
                content?.push(offset: offset, bytes: bytes, length: length)
                if isAllZero(bytes) { continue }
                defer { handedOut += 1 }
                return Block(sequence: handedOut, index: index, bytes: bytes)
            }
            return nil
        }
    }

    /// Records that block `sequence` is stored, with its digest.
    func finished(_ sequence: Int, digest: [UInt8]) {
        lock.withLock {
            waiting[sequence] = digest
            while let d = waiting.removeValue(forKey: nextToHash) {
                aggregate?.update(d)
                nextToHash += 1
            }
            stored += 1
        }
    }

    /// The virtual disk's SHA-256, after every block was handed out (nil if not asked for).
    func finalizeContentDigest() -> [UInt8]? { content?.finish() }

    /// Stops handing out blocks (an upload thread failed).
    func fail() {
        lock.withLock { failed = true }
        content?.cancel()
    }

    /// The SHA-256 over all block digests in block order; call once, after every block finished.
    func finalizeAggregate() throws -> [UInt8] {
        try lock.withLock {
            guard waiting.isEmpty, nextToHash == handedOut, let hasher = aggregate.take() else {
                throw CVMError.io("EBS upload: checksum requested with blocks still in flight (internal error)")
            }
            return hasher.finalize()
        }
    }
}

/// Hashes a virtual disk's content on its own thread, in offset order, from the blocks the
/// feeder reads (zeros for everything between them), so upload threads never wait for it.
/// Holds at most `limit` blocks; a full queue makes the feeder wait (bounded memory).
final class ContentHasher: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [(offset: UInt64, bytes: [UInt8], length: Int)] = []
    private var closed = false
    private var cancelled = false
    private var result: [UInt8]?
    private var done = false
    private let virtualSize: UInt64
    private let limit = 16
    private static let zeros = [UInt8](repeating: 0, count: 1 << 20)

    init(virtualSize: UInt64) {
        self.virtualSize = virtualSize
        let thread = Thread { [self] in run() }
        thread.name = "cvm-disk-sha256"
        thread.start()
    }

    func push(offset: UInt64, bytes: [UInt8], length: Int) {
        condition.lock()
        defer { condition.unlock() }
        while queue.count >= limit && !cancelled { condition.wait() }
        queue.append((offset, bytes, length))
        condition.broadcast()
    }

    /// Waits for the digest of everything pushed plus zeros up to the virtual size.
    func finish() -> [UInt8]? {
        condition.lock()
        defer { condition.unlock() }
        closed = true
        condition.broadcast()
        while !done { condition.wait() }
        return result
    }

    /// Stops the thread without a result (the upload failed).
    func cancel() {
        condition.lock()
        cancelled = true
        condition.broadcast()
        condition.unlock()
    }

    private func run() {
        var hasher: SHA256Hasher? = SHA256Hasher()
        var offset: UInt64 = 0
        func zeros(upTo end: UInt64) {
            Self.zeros.withUnsafeBytes { z in
                while offset < end {
                    let n = Int(min(UInt64(z.count), end - offset))
                    hasher?.update(UnsafeRawBufferPointer(rebasing: z[0..<n]))
                    offset += UInt64(n)
                }
            }
        }
        while true {
            condition.lock()
            while queue.isEmpty && !closed && !cancelled { condition.wait() }
            if cancelled || queue.isEmpty {
                let complete = !cancelled
                condition.unlock()
                if complete { zeros(upTo: virtualSize) }
                condition.lock()
                result = complete ? hasher.take()?.finalize() : nil
                done = true
                condition.broadcast()
                condition.unlock()
                return
            }
            let item = queue.removeFirst()
            condition.broadcast()
            condition.unlock()
            zeros(upTo: item.offset)
            item.bytes.withUnsafeBytes { hasher?.update(UnsafeRawBufferPointer(rebasing: $0[0..<item.length])) }
            offset = item.offset + UInt64(item.length)
        }
    }
}
