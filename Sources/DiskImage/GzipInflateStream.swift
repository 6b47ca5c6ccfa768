import CZlib
import CVMSupport

/// The decompressed bytes of a gzip file as one forward-only stream.
///
/// Concatenated gzip members (pigz and others write them) continue the same stream; zeros
/// after the last member are tolerated, anything else is an error. zlib checks each
/// member's CRC-32 and length when the member ends. Going backwards means `restart()`:
/// decompressing again from the first byte.
final class GzipInflateStream {
    let source: ByteSource
    /// Decompressed bytes produced so far.
    private(set) var position: UInt64 = 0
    /// True once the last member has ended (and its CRC and length were verified).
    private(set) var atEnd = false

    private let stream: UnsafeMutablePointer<z_stream>
    private var streamReady = false
    private let input: UnsafeMutableRawBufferPointer
    /// The next file offset to load into `input`.
    private var loadedUpTo: UInt64 = 0

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
        // 16 + 15: gzip wrapper only, 32 KiB window.
        let rc = inflateInit2_(stream, 16 + MAX_WBITS, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else {
            throw CVMError.io("\(source.name): cannot start gzip decompression (zlib error \(rc))")
        }
        streamReady = true
        loadedUpTo = 0
        position = 0
        atEnd = false
    }

    /// The compressed offset of the next byte zlib will consume (for messages).
    var compressedOffset: UInt64 { loadedUpTo - UInt64(stream.pointee.avail_in) }

    /// Fills `buffer` from the current position. Returns the bytes produced: fewer than
    /// `buffer.count` only when the gzip data ends.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        var produced = 0
        var idleRounds = 0
        while produced < buffer.count, !atEnd {
            if stream.pointee.avail_in == 0, loadedUpTo < source.size { try loadInput() }
            let room = min(buffer.count - produced, Int(UInt32.max))
            stream.pointee.next_out = (base + produced).assumingMemoryBound(to: Bytef.self)
            stream.pointee.avail_out = UInt32(room)
            let inBefore = stream.pointee.avail_in
            let rc = inflate(stream, Z_NO_FLUSH)
            let n = room - Int(stream.pointee.avail_out)
            produced += n
            position += UInt64(n)
            let progressed = n > 0 || stream.pointee.avail_in != inBefore
            idleRounds = progressed ? 0 : idleRounds + 1
            switch rc {
            case Z_OK:
                break
            case Z_STREAM_END:
                try memberEnded()
            case Z_BUF_ERROR:
                // No progress possible: zlib needs more input.
                if stream.pointee.avail_in == 0, loadedUpTo >= source.size {
                    throw CVMError.invalid("\(source.name): gzip stream ends early at compressed byte \(source.size): the file is truncated")
                }
            case Z_DATA_ERROR, Z_NEED_DICT:
                throw CVMError.invalid("\(source.name): corrupt gzip data at compressed byte \(compressedOffset): \(zlibMessage()); the file is damaged or not gzip")
            case Z_MEM_ERROR:
                throw CVMError.io("\(source.name): out of memory while decompressing gzip data")
            default:
                throw CVMError.invalid("\(source.name): gzip decompression failed at compressed byte \(compressedOffset) (zlib error \(rc))")
            }
            // zlib always progresses or reports why not; this only guards against a stuck loop.
            if idleRounds > 4 {
                throw CVMError.invalid("\(source.name): gzip decompression makes no progress at compressed byte \(compressedOffset); the file is damaged")
            }
        }
        return produced
    }

    /// Decompresses and discards `count` bytes through `scratch`. Returns the bytes skipped:
    /// fewer than `count` only when the gzip data ends.
    func skip(_ count: UInt64, scratch: UnsafeMutableRawBufferPointer) throws -> UInt64 {
        var left = count
        while left > 0 {
            let n = Int(min(UInt64(scratch.count), left))
            let got = try read(into: UnsafeMutableRawBufferPointer(rebasing: scratch[0..<n]))
            left -= UInt64(got)
            if got < n { break }
        }
        return count - left
    }

    private func loadInput() throws {
        let n = Int(min(UInt64(input.count), source.size - loadedUpTo))
        try source.read(into: UnsafeMutableRawBufferPointer(rebasing: input[0..<n]), at: loadedUpTo)
        loadedUpTo += UInt64(n)
        stream.pointee.next_in = input.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_in = UInt32(n)
    }

    /// A member ended (zlib verified its CRC-32 and length): another member, zero padding
    /// or the end of the file may follow.
    private func memberEnded() throws {
        if stream.pointee.avail_in == 0 {
            guard loadedUpTo < source.size else { atEnd = true; return }
            try loadInput()
        }
        guard let next = stream.pointee.next_in else { atEnd = true; return }
        if next[0] == 0x1F {
            // Another member; zlib checks its header.
            guard inflateReset(stream) == Z_OK else {
                throw CVMError.io("\(source.name): cannot restart gzip decompression")
            }
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

    private func zlibMessage() -> String {
        guard let msg = stream.pointee.msg else { return "invalid data" }
        return String(cString: msg)
    }
}
