import CVMCrypto
import CVMSupport
import DiskImage
import Foundation

/// SHA-256 of a disk's virtual content (the bytes the VM sees, whatever the container format).
/// deploy-gcp names the uploaded object after it before the upload starts, so it is one read
/// pass of its own: stored ranges are read on one thread while the other hashes; holes are
/// hashed from a zero buffer without reading.
enum DiskContentDigest {
    static func sha256(of disk: DiskReader, isCancelled: (@Sendable () -> Bool)? = nil) throws -> [UInt8] {
        let blockSize = 4 << 20
        let stored = normalizeRanges(try disk.storedRanges())
        // Pieces in order: (offset, length, stored?).
        var pieces: [(UInt64, Int, Bool)] = []
        var at: UInt64 = 0
        func add(_ end: UInt64, stored: Bool) {
            while at < end {
                let n = Int(min(UInt64(blockSize), end - at))
                pieces.append((at, n, stored))
                at += UInt64(n)
            }
        }
        for r in stored where r.lowerBound < disk.virtualSize {
            add(r.lowerBound, stored: false)
            add(min(r.upperBound, disk.virtualSize), stored: true)
        }
        add(disk.virtualSize, stored: false)

        let queue = BlockQueue()
        let work = ReadWork(disk: disk, pieces: pieces)
        let reader = Thread {
            let disk = work.disk
            for (offset, count, isStored) in work.pieces {
                if let isCancelled, isCancelled() { queue.put(.failure(CVMError(.interrupted, "interrupted while hashing the disk"))); return }
                guard isStored else { queue.put(.success(nil)); continue }
                var buffer = [UInt8](repeating: 0, count: count)
                do {
                    try buffer.withUnsafeMutableBytes { try disk.read(into: $0, at: offset) }
                } catch {
                    queue.put(.failure(error))
                    return
                }
                queue.put(.success(buffer))
            }
        }
        reader.start()
        var hasher = SHA256Hasher()
        let zeros = [UInt8](repeating: 0, count: blockSize)
        for (_, count, _) in pieces {
            switch queue.take() {
            case .failure(let error): throw error
            case .success(let buffer?):
                hasher.update(buffer)
            case .success(nil):
                zeros.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            }
        }
        return hasher.finalize()
    }
}

/// What the reading thread gets: it alone reads the disk while the caller hashes.
private final class ReadWork: @unchecked Sendable {
    let disk: DiskReader
    let pieces: [(UInt64, Int, Bool)]
    init(disk: DiskReader, pieces: [(UInt64, Int, Bool)]) {
        self.disk = disk
        self.pieces = pieces
    }
}

/// A queue of at most two blocks between the reading and the hashing thread.
private final class BlockQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Result<[UInt8]?, Error>] = []

    func put(_ item: Result<[UInt8]?, Error>) {
        condition.lock()
        while items.count >= 2 { condition.wait() }
        items.append(item)
        condition.broadcast()
        condition.unlock()
    }

    func take() -> Result<[UInt8]?, Error> {
        condition.lock()
        while items.isEmpty { condition.wait() }
        let item = items.removeFirst()
        condition.broadcast()
        condition.unlock()
        return item
    }
}
