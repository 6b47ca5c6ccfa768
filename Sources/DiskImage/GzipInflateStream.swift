import CZlib
import CVMSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The decompressed bytes of a gzip file as one forward-only stream.
///
/// Concatenated gzip members (pigz and others write them) continue the same stream; zeros
/// after the last member are tolerated, anything else is an error. The gzip framing (header,
/// CRC-32, length) is handled here around a raw zlib inflater, so that runs of all-zero
/// chunks as `GCPTarGzWriter` writes them can be recognised by their exact compressed bytes
/// and produced without inflating (see `KnownZeroChunks`); every other byte is inflated.
/// Going backwards means `restart()`: decompressing again from the first byte.
final class GzipInflateStream {
    let source: ByteSource
    /// Decompressed bytes produced so far.
    private(set) var position: UInt64 = 0
    /// True once the last member has ended (and its CRC and length were verified).
    private(set) var atEnd = false
    /// How many zero chunks were produced without inflating (for tests and measurements).
    private(set) var zeroChunksRecognised: UInt64 = 0
    /// Told of every byte-aligned deflate block boundary: the decompressed position there,
    /// the compressed offset of the next block, and which gzip member (0-based) it is in.
    var boundaryObserver: ((_ position: UInt64, _ compressedOffset: UInt64, _ member: Int) -> Void)?
    private var member = -1

    private enum Phase { case header, deflate, trailer }

    private let stream: UnsafeMutablePointer<z_stream>
    private var streamReady = false
    private let input: UnsafeMutableRawBufferPointer
    /// The next file offset to load into `input`.
    private var loadedUpTo: UInt64 = 0
    private var phase = Phase.header
    /// CRC-32 and length of the current member's output so far.
    private var memberCRC: UInt32 = 0
    private var memberLength: UInt64 = 0
    /// True when zlib stands at a deflate block boundary on a byte boundary (nothing held
    /// in its bit buffer): the next input byte starts a block.
    private var atByteAlignedBlock = false
    /// Zeros of recognised chunks not yet handed out (already counted in CRC and length).
    private var pendingZeros: UInt64 = 0
    /// zlib's window must be set to zeros before it inflates again after a recognised chunk.
    private var windowNeedsZeros = false
    /// Consecutive inflate calls that consumed and produced nothing.
    private var idleSteps = 0

    static let inputBufferSize = 256 << 10

    init(source: ByteSource) throws {
        self.source = source
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        input = .allocate(byteCount: Self.inputBufferSize, alignment: 16)
        try restart()
    }

    deinit {
        if streamReady { inflateEnd(stream) }
        stream.deinitialize(count: 1)
        stream.deallocate()
        input.deallocate()
    }

    /// Starts over at the first compressed byte.
    func restart() throws {
        if streamReady { inflateEnd(stream); streamReady = false }
        stream.pointee = z_stream()
        // -15: raw deflate, 32 KiB window; the gzip framing is parsed here.
        let rc = inflateInit2_(stream, -MAX_WBITS, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else {
            throw CVMError.io("\(source.name): cannot start gzip decompression (zlib error \(rc))")
        }
        streamReady = true
        loadedUpTo = 0
        position = 0
        atEnd = false
        phase = .header
        member = -1
        pendingZeros = 0
        windowNeedsZeros = false
        atByteAlignedBlock = false
    }

    /// The compressed offset of the next byte zlib will consume (for messages).
    var compressedOffset: UInt64 { loadedUpTo - UInt64(stream.pointee.avail_in) }

    /// Fills `buffer` from the current position. Returns the bytes produced: fewer than
    /// `buffer.count` only when the gzip data ends.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        var produced = 0
        while produced < buffer.count {
            if pendingZeros > 0 {
                let n = Int(min(pendingZeros, UInt64(buffer.count - produced)))
                (base + produced).initializeMemory(as: UInt8.self, repeating: 0, count: n)
                produced += n
                pendingZeros -= UInt64(n)
                position += UInt64(n)
                continue
            }
            if atEnd { break }
            produced += try step(into: UnsafeMutableRawBufferPointer(rebasing: buffer[produced...]))
        }
        return produced
    }

    /// Decompresses and discards `count` bytes through `scratch`. Returns the bytes skipped:
    /// fewer than `count` only when the gzip data ends. Recognised zero chunks cost nothing.
    func skip(_ count: UInt64, scratch: UnsafeMutableRawBufferPointer) throws -> UInt64 {
        var left = count
        while left > 0 {
            if pendingZeros > 0 {
                let n = min(pendingZeros, left)
                pendingZeros -= n
                position += n
                left -= n
                continue
            }
            if atEnd { break }
            let n = Int(min(UInt64(scratch.count), left))
            let got = try step(into: UnsafeMutableRawBufferPointer(rebasing: scratch[0..<n]))
            left -= UInt64(got)
        }
        return count - left
    }

    /// How many bytes from the current position are known to be zeros without inflating
    /// (the rest of a recognised zero chunk; 0 when unknown).
    var knownZerosAhead: UInt64 { pendingZeros }

    /// One step of work: parses framing, recognises zero chunks (into `pendingZeros`) or
    /// inflates into `out`. Returns the bytes written to `out` (position advanced).
    private func step(into out: UnsafeMutableRawBufferPointer) throws -> Int {
        switch phase {
        case .header:
            try parseMemberHeader()
            return 0
        case .trailer:
            try checkMemberTrailer()
            return 0
        case .deflate:
            if atByteAlignedBlock, try recogniseZeroChunk() { return 0 }
            return try inflateSome(into: out)
        }
    }

    private func inflateSome(into out: UnsafeMutableRawBufferPointer) throws -> Int {
        if stream.pointee.avail_in == 0, loadedUpTo < source.size { try loadInput() }
        if windowNeedsZeros {
            // What the skipped chunks would have left in the window: zeros.
            let rc = KnownZeroChunks.window.withUnsafeBytes {
                inflateSetDictionary(stream, $0.baseAddress!.assumingMemoryBound(to: Bytef.self), UInt32($0.count))
            }
            guard rc == Z_OK else { throw CVMError.io("\(source.name): cannot continue gzip decompression (zlib error \(rc))") }
            windowNeedsZeros = false
        }
        let room = min(out.count, Int(UInt32.max))
        stream.pointee.next_out = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = UInt32(room)
        let inBefore = stream.pointee.avail_in
        // Z_BLOCK: return at every block boundary, where a zero chunk may start.
        let rc = inflate(stream, Z_BLOCK)
        let n = room - Int(stream.pointee.avail_out)
        if n > 0 {
            memberCRC = crc32(UnsafeRawBufferPointer(rebasing: out[0..<n]), seed: memberCRC)
            memberLength &+= UInt64(n)
            position += UInt64(n)
        }
        // data_type: bits left in the last byte (low 3), 64 = in the last block,
        // 128 = stopped at a block boundary.
        let dataType = stream.pointee.data_type
        atByteAlignedBlock = dataType & 128 != 0 && dataType & 64 == 0 && dataType & 7 == 0
        if atByteAlignedBlock, rc == Z_OK { boundaryObserver?(position, compressedOffset, member) }
        switch rc {
        case Z_OK:
            break
        case Z_STREAM_END:
            phase = .trailer
            atByteAlignedBlock = false
        case Z_BUF_ERROR:
            // No progress possible: zlib needs more input.
            if stream.pointee.avail_in == 0, loadedUpTo >= source.size { throw truncated() }
        case Z_DATA_ERROR, Z_NEED_DICT:
            throw corrupt(zlibMessage())
        case Z_MEM_ERROR:
            throw CVMError.io("\(source.name): out of memory while decompressing gzip data")
        default:
            throw CVMError.invalid("\(source.name): gzip decompression failed at compressed byte \(compressedOffset) (zlib error \(rc))")
        }
        idleSteps = n > 0 || stream.pointee.avail_in != inBefore || rc == Z_STREAM_END ? 0 : idleSteps + 1
        if idleSteps > 4 {
            // zlib always progresses or reports why not; this only guards against a stuck loop.
            throw CVMError.invalid("\(source.name): gzip decompression makes no progress at compressed byte \(compressedOffset); the file is damaged")
        }
        return n
    }

    /// At a byte-aligned block boundary, a known zero chunk's exact bytes decode to its
    /// zeros whatever came before (it never refers back) and leave zlib at the same kind of
    /// boundary with a window of zeros: take them without inflating.
    private func recogniseZeroChunk() throws -> Bool {
        for chunk in KnownZeroChunks.all {
            guard try ensureInput(chunk.bytes.count) else { continue }
            let p = stream.pointee.next_in!
            let same = chunk.bytes.withUnsafeBytes { memcmp(p, $0.baseAddress!, $0.count) == 0 }
            guard same else { continue }
            stream.pointee.next_in = p + chunk.bytes.count
            stream.pointee.avail_in -= UInt32(chunk.bytes.count)
            memberCRC = UInt32(truncatingIfNeeded: crc32_combine_op(UInt(memberCRC), UInt(chunk.crc), KnownZeroChunks.combineOp))
            memberLength &+= UInt64(KnownZeroChunks.chunkSize)
            pendingZeros += UInt64(KnownZeroChunks.chunkSize)
            windowNeedsZeros = true
            zeroChunksRecognised += 1
            boundaryObserver?(position + pendingZeros, compressedOffset, member)
            return true
        }
        atByteAlignedBlock = false  // checked: inflate the next block
        return false
    }

    // MARK: gzip framing (RFC 1952)

    private func parseMemberHeader() throws {
        let start = compressedOffset
        var header: [UInt8] = []
        func take(_ n: Int) throws -> [UInt8] {
            guard try ensureInput(n) else { throw truncated() }
            let p = stream.pointee.next_in!
            let bytes = Array(UnsafeBufferPointer(start: p, count: n))
            stream.pointee.next_in = p + n
            stream.pointee.avail_in -= UInt32(n)
            header += bytes
            return bytes
        }
        let fixed = try take(10)
        guard fixed[0] == 0x1F, fixed[1] == 0x8B else { throw corrupt("incorrect header check", at: start) }
        guard fixed[2] == 8 else { throw corrupt("unknown compression method", at: start) }
        let flags = fixed[3]
        guard flags & 0xE0 == 0 else { throw corrupt("unknown header flags set", at: start) }
        if flags & 4 != 0 {  // FEXTRA
            let len = try take(2)
            var left = Int(len[0]) | Int(len[1]) << 8
            while left > 0 {
                let n = min(left, 4096)
                _ = try take(n)
                left -= n
            }
        }
        for flag: UInt8 in [8, 16] where flags & flag != 0 {  // FNAME, FCOMMENT: zero-terminated
            while try take(1)[0] != 0 {}
        }
        if flags & 2 != 0 {  // FHCRC: low 16 bits of the header's CRC-32
            let expected = UInt16(truncatingIfNeeded: crc32(header))
            let got = try take(2)
            guard UInt16(got[0]) | UInt16(got[1]) << 8 == expected else { throw corrupt("header crc mismatch", at: start) }
        }
        guard inflateReset(stream) == Z_OK else {
            throw CVMError.io("\(source.name): cannot restart gzip decompression")
        }
        memberCRC = 0
        memberLength = 0
        windowNeedsZeros = false
        atByteAlignedBlock = true
        phase = .deflate
        member += 1
        boundaryObserver?(position, compressedOffset, member)
    }

    /// The member's CRC-32 and length, then another member, zero padding or the end.
    private func checkMemberTrailer() throws {
        guard try ensureInput(8) else { throw truncated() }
        let p = stream.pointee.next_in!
        let crc = UInt32(p[0]) | UInt32(p[1]) << 8 | UInt32(p[2]) << 16 | UInt32(p[3]) << 24
        let length = UInt32(p[4]) | UInt32(p[5]) << 8 | UInt32(p[6]) << 16 | UInt32(p[7]) << 24
        guard crc == memberCRC else { throw corrupt("incorrect data check") }
        guard length == UInt32(truncatingIfNeeded: memberLength) else { throw corrupt("incorrect length check") }
        stream.pointee.next_in = p + 8
        stream.pointee.avail_in -= 8
        try memberEnded()
    }

    private func memberEnded() throws {
        guard try ensureInput(1) else { atEnd = true; return }
        if stream.pointee.next_in![0] == 0x1F {
            phase = .header  // another member
            return
        }
        // Only zero padding may follow the last member.
        let firstOther = compressedOffset
        while true {
            let avail = Int(stream.pointee.avail_in)
            if let p = stream.pointee.next_in, avail > 0,
               !isAllZero(UnsafeRawBufferPointer(start: p, count: avail)) {
                throw CVMError.invalid("\(source.name): unexpected data after the gzip stream at compressed byte \(firstOther); expected another gzip member or the end of the file")
            }
            stream.pointee.avail_in = 0
            guard loadedUpTo < source.size else { break }
            try loadInput()
        }
        atEnd = true
    }

    // MARK: input

    private func loadInput() throws {
        let n = Int(min(UInt64(input.count), source.size - loadedUpTo))
        try source.read(into: UnsafeMutableRawBufferPointer(rebasing: input[0..<n]), at: loadedUpTo)
        loadedUpTo += UInt64(n)
        stream.pointee.next_in = input.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_in = UInt32(n)
    }

    /// Makes at least `count` (≤ the buffer size) unread bytes available at `next_in`,
    /// moving the unread rest to the front of the buffer. False when the file ends first.
    private func ensureInput(_ count: Int) throws -> Bool {
        let avail = Int(stream.pointee.avail_in)
        if avail >= count { return true }
        guard loadedUpTo < source.size else { return false }
        let base = input.baseAddress!
        if avail > 0, let p = stream.pointee.next_in { memmove(base, p, avail) }
        let n = Int(min(UInt64(input.count - avail), source.size - loadedUpTo))
        try source.read(into: UnsafeMutableRawBufferPointer(rebasing: input[avail..<(avail + n)]), at: loadedUpTo)
        loadedUpTo += UInt64(n)
        stream.pointee.next_in = base.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_in = UInt32(avail + n)
        return avail + n >= count
    }

    // MARK: errors

    private func truncated() -> CVMError {
        CVMError.invalid("\(source.name): gzip stream ends early at compressed byte \(source.size): the file is truncated")
    }

    private func corrupt(_ what: String, at offset: UInt64? = nil) -> CVMError {
        CVMError.invalid("\(source.name): corrupt gzip data at compressed byte \(offset ?? compressedOffset): \(what); the file is damaged or not gzip")
    }

    private func zlibMessage() -> String {
        guard let msg = stream.pointee.msg else { return "invalid data" }
        return String(cString: msg)
    }
}

/// The compressed forms of an all-zero chunk that `GCPTarGzWriter` writes (raw deflate of
/// `chunkSize` zeros ended by a sync flush, from a fresh stream): levels 1–3 give one form,
/// 4–9 another. Recognised by `GzipInflateStream` at block boundaries.
enum KnownZeroChunks {
    struct Chunk: Sendable {
        let bytes: [UInt8]
        let crc: UInt32
    }

    static let chunkSize = GCPTarGzWriter.chunkSize

    /// Level 6 (the default) first.
    static let all: [Chunk] = [6, 1].compactMap { compress(level: $0) }

    /// `chunkSize` zeros through zlib in 64 KiB pieces (small buffers: memory stays flat).
    private static func compress(level: Int32) -> Chunk? {
        let piece = 64 << 10
        let zeros = [UInt8](repeating: 0, count: piece)
        var out = [UInt8](repeating: 0, count: 16 << 10)  // the forms are ~1 KiB and ~4.5 KiB
        var z = z_stream()
        guard deflateInit2_(&z, level, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY, zlibVersion(),
                            Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
        defer { deflateEnd(&z) }
        var crc: UInt32 = 0
        let ok: Bool = zeros.withUnsafeBytes { zin in out.withUnsafeMutableBytes { o in
            z.next_out = o.baseAddress!.assumingMemoryBound(to: Bytef.self)
            z.avail_out = UInt32(o.count)
            for i in 0..<(chunkSize / piece) {
                crc = crc32(zin, seed: crc)
                z.next_in = UnsafeMutablePointer(mutating: zin.baseAddress!.assumingMemoryBound(to: Bytef.self))
                z.avail_in = UInt32(piece)
                let last = i == chunkSize / piece - 1
                guard deflate(&z, last ? Z_SYNC_FLUSH : Z_NO_FLUSH) == Z_OK, z.avail_in == 0, z.avail_out > 0 else { return false }
            }
            return true
        } }
        guard ok else { return nil }
        return Chunk(bytes: Array(out.prefix(out.count - Int(z.avail_out))), crc: crc)
    }

    /// crc32_combine for a chunk-long second part.
    static let combineOp: UInt = crc32_combine_gen(Int(chunkSize))

    /// zlib's window after a zero chunk.
    static let window = [UInt8](repeating: 0, count: 1 << 15)
}
