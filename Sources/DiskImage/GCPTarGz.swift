import CVMSupport

/// Reads a GCP image archive: a gzip'd tar whose one member `disk.raw` is the disk.
///
/// gzip cannot be read at random, so this reader is sequential: it keeps its decompression
/// state and position, skips forward by decompressing, and restarts from the first byte for
/// a backward read. A sparse member (old GNU 'S', or PAX sparse 0.0/0.1/1.0) reports only
/// its stored pieces.
/// When reading reaches the end of `disk.raw`, the rest of the archive is checked: only
/// zero blocks may follow, and the gzip CRC-32 and length must match.
public final class GCPTarGzReader: DiskReader {
    public let source: ByteSource
    public var format: DiskFormat { .gcpTarGz }
    public let virtualSize: UInt64
    public var isSequential: Bool { true }

    private let stream: GzipInflateStream
    private let member: TarMember
    /// Decompressed bytes that are skipped over land here.
    private let scratch: UnsafeMutableRawBufferPointer
    private var trailerChecked = false

    static let scratchSize = 1 << 20

    public init(source: ByteSource) throws {
        self.source = source
        stream = try GzipInflateStream(source: source)
        member = try TarMemberParser(stream: stream).parse()
        virtualSize = member.fileSize
        scratch = .allocate(byteCount: Self.scratchSize, alignment: 64)
    }

    deinit { scratch.deallocate() }

    /// From now on, notes which 1 MiB disk chunks the stream passes can be copied compressed
    /// into a new archive (see `GzipReusableChunks`); read the disk in ascending order, then
    /// call `waitForChecks()` on the result. Nil for sparse members (their data is not laid
    /// out by disk offset).
    public func indexReusableChunks() -> GzipReusableChunks? {
        guard member.sparseMap == nil else { return nil }
        let chunkSize = GCPTarGzWriter.chunkSize
        let index = GzipReusableChunks(source: source, chunkSize: chunkSize)
        let dataOffset = member.dataOffset, dataEnd = member.dataEnd
        var last: (chunk: UInt64, offset: UInt64, member: Int, zeros: UInt64)?
        stream.boundaryObserver = { [unowned stream] position, offset, gzipMember in
            guard position >= dataOffset, (position - dataOffset) % UInt64(chunkSize) == 0 else { return }
            let chunk = (position - dataOffset) / UInt64(chunkSize)
            let zeros = stream.zeroChunksRecognised
            if let l = last, l.chunk + 1 == chunk, l.member == gzipMember, position <= dataEnd,
               zeros == l.zeros {  // a recognised zero chunk needs no copy: the writer has its own
                index.propose(index: Int(l.chunk), range: l.offset..<offset)
            }
            last = (chunk, offset, gzipMember, zeros)
        }
        return index
    }

    public func storedRanges() throws -> [Range<UInt64>] {
        // Nothing stored means nothing will be read: check the archive's end now.
        if member.storedSize == 0 { try checkArchiveEnd() }
        guard let map = member.sparseMap else {
            return virtualSize == 0 ? [] : [0..<virtualSize]
        }
        return map.filter { $0.length > 0 }.map { $0.offset..<($0.offset + $0.length) }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkVirtualRange(offset: offset, count: buffer.count, name: source.name)
        guard buffer.count > 0 else { return }
        guard let map = member.sparseMap else {
            try readMemberData(at: offset, into: buffer)
            return
        }
        // Sparse: holes read as zeros, stored pieces come from the member data in order.
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        let end = offset + UInt64(buffer.count)
        var index = firstEntry(endingAfter: offset, in: map)
        while index < map.count, map[index].offset < end {
            let entry = map[index]
            let lo = max(entry.offset, offset), hi = min(entry.offset + entry.length, end)
            if lo < hi {
                let target = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(lo - offset)..<Int(hi - offset)])
                try readMemberData(at: member.sparseDataStarts[index] + (lo - entry.offset), into: target)
            }
            index += 1
        }
    }

    /// Index of the first map entry whose end lies after `offset` (binary search).
    private func firstEntry(endingAfter offset: UInt64, in map: [TarSparseEntry]) -> Int {
        var lo = 0, hi = map.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if map[mid].offset + map[mid].length <= offset { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Reads member data bytes `[memberOffset, memberOffset + buffer.count)`.
    private func readMemberData(at memberOffset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let target = member.dataOffset + memberOffset
        try seek(to: target)
        let got = try stream.read(into: buffer)
        guard got == buffer.count else { throw truncatedMember(at: memberOffset + UInt64(got)) }
        if !trailerChecked, stream.position == member.dataEnd { try checkArchiveEnd() }
    }

    /// Moves the stream to tar offset `target`: forward by decompressing, backward by restarting.
    private func seek(to target: UInt64) throws {
        if target < stream.position { try stream.restart() }
        let distance = target - stream.position
        let skipped = try stream.skip(distance, scratch: scratch)
        guard skipped == distance else {
            throw truncatedMember(at: stream.position >= member.dataOffset ? stream.position - member.dataOffset : 0)
        }
    }

    private func truncatedMember(at memberOffset: UInt64) -> CVMError {
        CVMError.invalid("\(source.name): the tar archive ends inside disk.raw after \(memberOffset) of its \(member.storedSize) stored bytes; the archive is truncated")
    }

    /// After disk.raw only zero blocks may follow; reading them to the end also makes zlib
    /// verify the gzip CRC-32 and length.
    private func checkArchiveEnd() throws {
        try seek(to: member.dataEnd)
        let blockSize = UInt64(TarBlock.size)
        let padding = DiskGeometry.roundUp(member.dataEnd, to: blockSize) - member.dataEnd
        _ = try stream.skip(padding, scratch: scratch)
        while true {
            let start = stream.position
            let got = try stream.read(into: scratch)
            let data = UnsafeRawBufferPointer(rebasing: scratch[0..<got])
            if !isAllZero(data) {
                var o = 0
                while o < got, isAllZero(UnsafeRawBufferPointer(rebasing: data[o..<min(o + TarBlock.size, got)])) {
                    o += TarBlock.size
                }
                let block = Array(UnsafeRawBufferPointer(rebasing: data[o..<min(o + TarBlock.size, got)]))
                if block.count == TarBlock.size, TarBlock.verifyChecksum(block) == .valid {
                    var name = TarBlock.memberName(block)
                    // A GNU long name is in the block after its 'L' header.
                    if block[TarBlock.typeflagOffset] == UInt8(ascii: "L"), o + 2 * TarBlock.size <= got {
                        name = TarBlock.text(Array(UnsafeRawBufferPointer(rebasing: data[(o + TarBlock.size)..<(o + 2 * TarBlock.size)])),
                                             0..<TarBlock.size)
                    }
                    name = TarBlock.printable(name)
                    throw CVMError.invalid("\(source.name): tar holds another member \(name) after disk.raw; GCP images hold exactly one")
                }
                throw CVMError.invalid("\(source.name): unexpected data at tar offset \(start + UInt64(o)) after disk.raw; expected only zero blocks to the end of the archive")
            }
            if got < scratch.count { break }
        }
        trailerChecked = true
    }
}

/// Writes a GCP image archive: one gzip member holding a GNU tar with one member `disk.raw`
/// whose size is the disk's rounded up to a whole GiB (GCP requires it).
///
/// The tar stream is compressed in 1 MiB chunks, each an independent deflate stream ending
/// in a sync flush, so chunks compress on all cores and concatenate in order (see
/// `GzipChunkPipeline`). All-zero chunks (holes, zero runs, the GiB padding) reuse one
/// compressed zero chunk. The output is byte-identical for the same input and options,
/// whatever the thread count.
public final class GCPTarGzWriter: DiskWriter {
    public let outputVirtualSize: UInt64
    private let inputVirtualSize: UInt64
    private let sink: SequentialOutput
    private let chunks: GzipChunkPipeline
    /// Next byte of the member data to be compressed; always a multiple of `chunkSize`.
    private var dataPosition: UInt64 = 0
    private var finished = false
    private var reusable: GzipReusableChunks?
    private var reusableExcept: Range<UInt64> = 0..<0

    static let chunkSize = 1 << 20
    private static let blocksPerChunk = chunkSize / DiskGeometry.blockSize

    public convenience init(output: FileDescriptor, inputVirtualSize: UInt64, options: WriterOptions) throws {
        try self.init(sink: SequentialOutput(file: output), inputVirtualSize: inputVirtualSize, options: options,
                      name: output.path)
    }

    /// Streams the archive to `stream` front to back (an upload) instead of a file. The bytes are
    /// the same as a file output's for the same input and options.
    public convenience init(stream: StreamingOutput, inputVirtualSize: UInt64, options: WriterOptions) throws {
        try self.init(sink: SequentialOutput(stream: stream), inputVirtualSize: inputVirtualSize, options: options,
                      name: "tar.gz stream")
    }

    private init(sink: SequentialOutput, inputVirtualSize: UInt64, options: WriterOptions, name: String) throws {
        self.inputVirtualSize = inputVirtualSize
        outputVirtualSize = DiskGeometry.roundUp(inputVirtualSize, to: DiskGeometry.gibibyte)
        guard outputVirtualSize >= inputVirtualSize else {
            throw CVMError.unsupported("\(name): a disk of \(inputVirtualSize) bytes is too large for a tar member")
        }
        let level = min(max(options.compressionLevel, 0), 9)
        self.sink = sink
        chunks = GzipChunkPipeline(sink: sink, chunkSize: Self.chunkSize, level: level, threads: options.threads,
                                   slots: options.compressionSlots)
        let mtime = options.timestamp <= UInt64(UInt32.max) ? UInt32(options.timestamp) : 0
        try sink.append(GzipFraming.memberHeader(mtime: mtime, level: level))
        let header = TarBlock.gnuRegularFileHeader(name: "disk.raw", size: outputVirtualSize, mtime: options.timestamp)
        try header.withUnsafeBytes { try chunks.submit($0) }
    }

    /// Copies the compressed bytes of chunks `chunks` has verified instead of compressing
    /// them again, for every chunk not overlapping `except` (disk bytes that changed). The
    /// caller guarantees the disk it writes equals the one `chunks` was read from outside
    /// `except`. The output then depends on how the input was compressed (still the same
    /// bytes for the same input).
    public func reuseCompressedChunks(_ chunks: GzipReusableChunks, except: Range<UInt64>) throws {
        guard chunks.chunkSize == Self.chunkSize else {
            throw CVMError.io("internal error: reusable chunks of \(chunks.chunkSize) bytes, the writer's are \(Self.chunkSize)")
        }
        reusable = chunks
        reusableExcept = except
    }

    public func write(_ piece: DataPiece) throws {
        try checkOrder(offset: piece.offset, length: UInt64(piece.bytes.count))
        let count = piece.bytes.count
        var chunk = 0
        while chunk * Self.chunkSize < count {
            let start = chunk * Self.chunkSize
            let end = min(start + Self.chunkSize, count)
            if chunkIsZero(piece, chunk: chunk, length: end - start) {
                try chunks.submitZeroChunks(1)
            } else if end - start == Self.chunkSize, let reused = reusableChunk(at: dataPosition) {
                try chunks.submitCompressed(from: reusable!.source, range: reused.range, crc: reused.crc)
            } else {
                // A last piece that ends inside a chunk is padded with zeros (the GiB padding).
                try chunks.submit(UnsafeRawBufferPointer(rebasing: piece.bytes[start..<end]), paddedTo: Self.chunkSize)
            }
            dataPosition += UInt64(Self.chunkSize)
            chunk += 1
        }
    }

    public func writeZeros(at offset: UInt64, length: UInt64) throws {
        try checkOrder(offset: offset, length: length)
        let count = DiskGeometry.roundUp(length, to: UInt64(Self.chunkSize)) / UInt64(Self.chunkSize)
        try chunks.submitZeroChunks(count)
        dataPosition += count * UInt64(Self.chunkSize)
    }

    public func finish() throws {
        guard !finished else { return }
        guard dataPosition >= inputVirtualSize else {
            throw CVMError.io("internal error: tar.gz writer finished at \(dataPosition) of \(inputVirtualSize) bytes")
        }
        // Zero padding up to the whole GiB.
        try chunks.submitZeroChunks((outputVirtualSize - dataPosition) / UInt64(Self.chunkSize))
        dataPosition = outputVirtualSize
        // End of archive: two zero blocks, then zeros up to a whole 10240-byte record.
        let block = UInt64(TarBlock.size)
        let archiveEnd = DiskGeometry.roundUp(block + outputVirtualSize + 2 * block, to: TarBlock.recordSize)
        let trailer = [UInt8](repeating: 0, count: Int(archiveEnd - block - outputVirtualSize))
        try trailer.withUnsafeBytes { try chunks.submit($0) }
        try chunks.drain()
        try sink.append(GzipFraming.finalEmptyBlock)
        try sink.append(GzipFraming.memberTrailer(crc: chunks.checksum.crc, length: chunks.checksum.length))
        try sink.flush()
        try sink.file?.truncate(to: sink.position)
        finished = true
    }

    private func reusableChunk(at diskOffset: UInt64) -> GzipReusableChunks.Chunk? {
        guard let reusable else { return nil }
        let end = diskOffset + UInt64(Self.chunkSize)
        if diskOffset < reusableExcept.upperBound, end > reusableExcept.lowerBound { return nil }
        return reusable.chunk(Int(diskOffset / UInt64(Self.chunkSize)))
    }

    /// Pieces must arrive in order, on chunk boundaries, and stay inside the disk.
    private func checkOrder(offset: UInt64, length: UInt64) throws {
        guard !finished, offset == dataPosition,
              offset.addingReportingOverflow(length).overflow == false,
              offset + length <= inputVirtualSize else {
            throw CVMError.io("internal error: tar.gz writer got bytes \(offset)+\(length) while expecting offset \(dataPosition) of \(inputVirtualSize)")
        }
    }

    /// True when the piece's zero flags say the chunk is all zeros. Missing flags count as
    /// data (compressing zeros is correct, only slower).
    private func chunkIsZero(_ piece: DataPiece, chunk: Int, length: Int) -> Bool {
        let first = chunk * Self.blocksPerChunk
        let needed = (length + DiskGeometry.blockSize - 1) / DiskGeometry.blockSize
        guard first + needed <= piece.zeroBlocks.count else { return false }
        return piece.zeroBlocks[first..<(first + needed)].allSatisfy { $0 }
    }
}

/// Receives a writer's output front to back, for writers that can stream (an upload that
/// sends the archive while it is being made). Called on the writer's thread.
public protocol StreamingOutput: AnyObject {
    func append(_ bytes: UnsafeRawBufferPointer) throws
}

/// Appends bytes to a file (or a stream) front to back, coalescing small writes (the ~1 KiB
/// compressed zero chunks) into large pwrites.
final class SequentialOutput {
    let file: FileDescriptor?
    private let stream: StreamingOutput?
    /// Offset after everything appended so far.
    private(set) var position: UInt64 = 0
    private var buffer: [UInt8] = []
    private static let bufferSize = 1 << 20

    init(file: FileDescriptor) {
        self.file = file
        stream = nil
        buffer.reserveCapacity(Self.bufferSize)
    }

    /// A stream receives every append at once: it buffers on its own (no second copy here).
    init(stream: StreamingOutput) {
        file = nil
        self.stream = stream
    }

    private func emit(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        if let file { try file.write(bytes, at: offset) } else { try stream!.append(bytes) }
    }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        if let stream {
            try stream.append(bytes)
            position += UInt64(bytes.count)
            return
        }
        if buffer.count + bytes.count > Self.bufferSize || bytes.count >= Self.bufferSize / 2 { try flush() }
        if bytes.count >= Self.bufferSize / 2 {
            try emit(bytes, at: position)
        } else {
            buffer.append(contentsOf: bytes)
        }
        position += UInt64(bytes.count)
    }

    func append(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try append($0) }
    }

    func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try emit($0, at: position - UInt64(buffer.count)) }
        buffer.removeAll(keepingCapacity: true)
    }
}
