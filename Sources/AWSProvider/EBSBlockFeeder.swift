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
    private var candidates: StoredBlockIterator
    private var aggregate: SHA256Hasher? = SHA256Hasher()
    /// Digests of blocks that completed before an earlier one did.
    private var waiting: [Int: [UInt8]] = [:]
    private var nextToHash = 0
    private var handedOut = 0
    private var failed = false
    private var scanned: UInt64 = 0
    private var stored = 0

    /// Virtual-disk bytes looked at so far (stored ranges only).
    var scannedBytes: UInt64 { lock.withLock { scanned } }
    /// Blocks the server has accepted.
    var completed: Int { lock.withLock { stored } }

    init(disk: DiskReader, blockSize: Int) throws {
        self.disk = disk
        self.blockSize = blockSize
        candidates = StoredBlockIterator(ranges: try disk.storedRanges(), blockSize: UInt64(blockSize), limit: disk.virtualSize)
    }

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

    /// Stops handing out blocks (an upload thread failed).
    func fail() { lock.withLock { failed = true } }

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
