import CZlib
import CVMSupport

/// Building one gzip member out of independently compressed chunks (the pigz scheme).
///
/// Each chunk is raw deflate on its own z_stream, ended with a sync flush: the chunk ends
/// byte-aligned with a non-final block, so chunks compressed on different cores simply
/// concatenate. After the last chunk comes an empty final block, then the CRC-32 (combined
/// from the chunks' CRCs) and the length, so every gzip reader sees a single member.
enum GzipFraming {
    /// The 10-byte gzip member header: deflate, no optional fields, OS 3 (Unix).
    static func memberHeader(mtime: UInt32, level: Int) -> [UInt8] {
        // XFL: 2 = slowest/best, 4 = fastest, as gzip writes it.
        let xfl: UInt8 = level >= 9 ? 2 : (level == 1 ? 4 : 0)
        var h: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, xfl, 3]
        h.putLE32(mtime, at: 4)
        return h
    }

    /// An empty deflate block with BFINAL set (fixed Huffman, end-of-block code): ends the
    /// deflate stream after sync-flushed chunks.
    static let finalEmptyBlock: [UInt8] = [0x03, 0x00]

    /// The 8-byte member trailer: CRC-32 and the uncompressed length mod 2^32, little-endian.
    static func memberTrailer(crc: UInt32, length: UInt64) -> [UInt8] {
        var t = [UInt8](repeating: 0, count: 8)
        t.putLE32(crc, at: 0)
        t.putLE32(UInt32(truncatingIfNeeded: length), at: 4)
        return t
    }

    /// Output capacity that always holds one compressed chunk of `length` bytes, sync flush
    /// included (deflate's worst case is stored blocks: 5 bytes per 16 KiB, plus the flush).
    static func outputCapacity(forChunkOf length: Int) -> Int {
        length + (length / 16383 + 1) * 5 + 64
    }
}

/// One raw-deflate compressor (a z_stream kept for reuse): each `compress` call is an
/// independent chunk ending in a sync flush (byte-aligned, not final).
final class RawDeflater {
    private let stream: UnsafeMutablePointer<z_stream>

    init(level: Int) throws {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        // -15: raw deflate (no zlib wrapper), 32 KiB window; memLevel 8 as gzip and pigz use.
        let rc = deflateInit2_(stream, Int32(min(max(level, 0), 9)), Z_DEFLATED, -MAX_WBITS, 8,
                               Z_DEFAULT_STRATEGY, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        // On failure deinit still runs (every property is set) and frees the stream.
        guard rc == Z_OK else {
            throw CVMError.io("cannot start deflate compression (zlib error \(rc))")
        }
    }

    deinit {
        deflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Compresses `data` into `output` (at least `GzipFraming.outputCapacity` bytes);
    /// returns the bytes written.
    func compress(_ data: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let outBase = output.baseAddress else { throw CVMError.io("deflate output buffer is empty") }
        guard deflateReset(stream) == Z_OK else { throw CVMError.io("cannot reset the deflate stream") }
        // zlib reads but never writes the input despite the non-const pointer.
        stream.pointee.next_in = UnsafeMutablePointer(mutating: data.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = UInt32(data.count)
        stream.pointee.next_out = outBase.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = UInt32(output.count)
        let rc = deflate(stream, Z_SYNC_FLUSH)
        // A complete flush leaves room over; with `outputCapacity` it always does.
        guard rc == Z_OK, stream.pointee.avail_in == 0, stream.pointee.avail_out > 0 else {
            throw CVMError.io("deflate failed (zlib result \(rc), \(stream.pointee.avail_in) bytes not consumed)")
        }
        return output.count - Int(stream.pointee.avail_out)
    }
}

/// The running CRC-32 and length of a gzip member assembled from chunks.
struct GzipChecksum {
    private(set) var crc: UInt32 = 0
    private(set) var length: UInt64 = 0

    mutating func append(crc chunkCRC: UInt32, length chunkLength: UInt64) {
        guard chunkLength > 0 else { return }
        crc = length == 0 ? chunkCRC
            : UInt32(truncatingIfNeeded: crc32_combine(UInt(crc), UInt(chunkCRC), Int(chunkLength)))
        length &+= chunkLength
    }
}
