import Transport

/// The stream bytes not yet confirmed by the server, kept as slices of the producer's chunks
/// (no copy), from which each request body is cut.
struct ByteWindow {
    private var pieces: [ArraySlice<UInt8>] = []
    private(set) var count = 0

    mutating func append(_ piece: ArraySlice<UInt8>) {
        guard !piece.isEmpty else { return }
        pieces.append(piece)
        count += piece.count
    }

    /// The first `n` bytes as a request body (sharing the chunks' storage).
    func prefix(_ n: Int) -> SlicesBody {
        var out: [ArraySlice<UInt8>] = []
        var left = n
        for piece in pieces where left > 0 {
            let take = min(left, piece.count)
            out.append(piece.prefix(take))
            left -= take
        }
        return SlicesBody(pieces: out)
    }

    mutating func removeFirst(_ n: Int) {
        precondition(n <= count)
        var left = n
        while left > 0 {
            if pieces[0].count <= left {
                left -= pieces[0].count
                pieces.removeFirst()
            } else {
                pieces[0] = pieces[0].dropFirst(left)
                left = 0
            }
        }
        count -= n
    }

    mutating func removeAll() {
        pieces.removeAll()
        count = 0
    }
}

/// A request body made of byte slices in order.
struct SlicesBody: RequestBody {
    let pieces: [ArraySlice<UInt8>]

    var size: UInt64 { UInt64(pieces.reduce(0) { $0 + $1.count }) }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        var skip = offset
        var written = 0
        for piece in pieces where written < buffer.count {
            if skip >= UInt64(piece.count) { skip -= UInt64(piece.count); continue }
            let from = piece.startIndex + Int(skip)
            let n = min(piece.endIndex - from, buffer.count - written)
            piece.withUnsafeBytes { src in
                let start = from - piece.startIndex
                (buffer.baseAddress! + written).copyMemory(from: src.baseAddress! + start, byteCount: n)
            }
            written += n
            skip = 0
        }
        return written
    }
}
