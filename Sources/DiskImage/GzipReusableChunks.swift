import CZlib
import CVMSupport
import Dispatch

/// The 1 MiB disk chunks of a GCP tar.gz whose compressed bytes can be copied as they are
/// into a new archive (update-disk re-encodes a disk whose other partitions do not change).
///
/// A chunk qualifies when, in the input's deflate stream, both its ends fall on byte-aligned
/// block boundaries and its compressed bytes decode on their own — from a fresh inflater, no
/// window — to exactly one chunk of data, ending on a non-final block boundary. That is what
/// `GCPTarGzWriter` writes (sync-flushed independent chunks), whatever tool or level made
/// them; archives of gzip or pigz simply yield no chunks. Decoding on its own is checked on a
/// worker (the other core) while the main stream is inflated, so copying a chunk later is as
/// safe as recompressing it: it is known to decode to the same bytes.
public final class GzipReusableChunks: @unchecked Sendable {
    public struct Chunk: Sendable {
        /// Compressed bytes in the archive file.
        public let range: Range<UInt64>
        /// CRC-32 of the chunk's `chunkSize` decompressed bytes.
        public let crc: UInt32
    }

    /// The archive file the compressed bytes come from.
    public let source: ByteSource
    public let chunkSize: Int
    /// Verified chunks by disk chunk index (disk offset / chunkSize).
    private var verified: [Int: Chunk] = [:]
    private let lock = DispatchSemaphore(value: 1)
    private let queue = DispatchQueue(label: "cvm.gzip-chunk-check", qos: .userInitiated)
    private let jobs = DispatchGroup()
    /// The check's buffers, used on `queue` only (allocated once: no malloc churn per chunk).
    private var input: UnsafeMutableRawBufferPointer?
    private var output: UnsafeMutableRawBufferPointer?
    /// Largest compressed chunk worth checking (incompressible data with stored blocks).
    private var maxCompressed: Int { GzipFraming.outputCapacity(forChunkOf: chunkSize) }

    init(source: ByteSource, chunkSize: Int) {
        self.source = source
        self.chunkSize = chunkSize
    }

    /// The verified chunk `index`, if any (call after `waitForChecks`).
    public func chunk(_ index: Int) -> Chunk? {
        lock.wait(); defer { lock.signal() }
        return verified[index]
    }

    public var count: Int {
        lock.wait(); defer { lock.signal() }
        return verified.count
    }

    deinit { releaseBuffers() }

    /// Waits until every candidate has been checked, then frees the check's buffers.
    public func waitForChecks() {
        jobs.wait()
        queue.sync { releaseBuffers() }
    }

    private func releaseBuffers() {
        input?.deallocate(); input = nil
        output?.deallocate(); output = nil
    }

    /// Queues candidate chunk `index` stored at compressed bytes `range` for the check.
    func propose(index: Int, range: Range<UInt64>) {
        guard range.count > 0, range.count <= maxCompressed else { return }
        lock.wait()
        let known = verified[index] != nil
        lock.signal()
        if known { return }
        jobs.enter()
        queue.async { [self] in
            defer { jobs.leave() }
            guard let crc = decodesAlone(range) else { return }
            lock.wait()
            verified[index] = Chunk(range: range, crc: crc)
            lock.signal()
        }
    }

    /// The CRC-32 of what `range` decodes to when it decodes alone to exactly one chunk,
    /// ending on a byte-aligned, non-final block boundary; nil otherwise. Streams through
    /// small buffers (memory stays flat).
    private func decodesAlone(_ range: Range<UInt64>) -> UInt32? {
        let piece = 64 << 10
        let input = self.input ?? .allocate(byteCount: piece, alignment: 64)
        self.input = input
        let output = self.output ?? .allocate(byteCount: piece, alignment: 64)
        self.output = output
        var z = z_stream()
        guard inflateInit2_(&z, -MAX_WBITS, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
        defer { inflateEnd(&z) }
        var next = range.lowerBound
        var produced = 0
        var crc: UInt32 = 0
        while true {
            if z.avail_in == 0 {
                guard next < range.upperBound else { break }
                let n = Int(min(UInt64(piece), range.upperBound - next))
                let slice = UnsafeMutableRawBufferPointer(rebasing: input[0..<n])
                guard (try? source.read(into: slice, at: next)) != nil else { return nil }
                next += UInt64(n)
                z.next_in = input.baseAddress!.assumingMemoryBound(to: Bytef.self)
                z.avail_in = UInt32(n)
            }
            z.next_out = output.baseAddress!.assumingMemoryBound(to: Bytef.self)
            z.avail_out = UInt32(piece)
            let availIn = z.avail_in
            let rc = inflate(&z, Z_BLOCK)
            let n = piece - Int(z.avail_out)
            crc = crc32(UnsafeRawBufferPointer(rebasing: output[0..<n]), seed: crc)
            produced += n
            // Errors, a final block, too much output or no progress: not a chunk of its own.
            guard rc == Z_OK, produced <= chunkSize, n > 0 || z.avail_in != availIn || z.data_type & 128 != 0 else { return nil }
        }
        let dataType = z.data_type
        guard produced == chunkSize, dataType & 128 != 0, dataType & 64 == 0, dataType & 7 == 0 else { return nil }
        return crc
    }
}
