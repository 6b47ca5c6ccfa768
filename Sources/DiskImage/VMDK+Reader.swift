import CVMSupport

/// Reads a single-file sparse VMDK: stream-optimized (compressed grains with markers, grain
/// directory found through the footer) or monolithicSparse (uncompressed grains).
///
/// Grains of one read request are decompressed on all cores. Grain tables are read on demand
/// and a bounded number are cached. Every offset, size and marker is checked against the
/// file; corrupt input throws `CVMError` naming the file.
/// - Note: calls from several threads are safe but take turns (one lock); each call
///   already uses every core.
public final class VMDKStreamReader: DiskReader {
    public let source: ByteSource
    public var format: DiskFormat { .vmdkStream }
    public let virtualSize: UInt64

    /// The header in effect (the footer's copy when the primary says GD_AT_END).
    let header: VMDK.SparseExtentHeader
    let descriptor: VMDK.Descriptor?
    /// Grain-directory entries: sector of each grain table, 0 when the span has no table.
    let grainDirectory: [UInt32]

    private let grainBytes: Int
    private let grainSectors: UInt64
    private let grainCount: UInt64
    private let tableEntries: Int
    private let compressed: Bool
    private let markers: Bool
    private let zeroedGrainEntries: Bool
    /// Largest compressed grain accepted (zlib expands incompressible data only slightly).
    private let maxCompressedBytes: Int

    private let lock = NSLockLite()
    private var tableCache: [Int: [UInt32]] = [:]
    private var tableCacheOrder: [Int] = []
    private static let tableCacheLimit = 64
    private var workers: [GrainWorker] = []
    /// The last grain decoded for a partial read (metadata readers read small pieces).
    private var recentGrain: (index: UInt64, bytes: [UInt8])?

    public init(source: ByteSource) throws {
        self.source = source
        let name = source.name
        guard source.size >= UInt64(VMDK.sectorSize) else {
            throw CVMError.invalid("\(name): file is truncated (\(source.size) bytes); a VMDK starts with a 512-byte header")
        }
        guard let primary = VMDK.SparseExtentHeader(decoding: try source.bytes(count: VMDK.sectorSize, at: 0)) else {
            throw CVMError.invalid("\(name): not a sparse VMDK (no KDMV magic at offset 0)")
        }
        try primary.validate(name: name)
        var effective = primary
        if primary.gdOffset == VMDK.gdAtEnd {
            effective = try Self.readFooter(source)
            try effective.validate(name: name)
            guard effective.gdOffset != VMDK.gdAtEnd else {
                throw CVMError.invalid("\(name): VMDK footer has no grain directory offset (GD_AT_END in the footer too)")
            }
        }
        header = effective

        // The embedded descriptor (its createType and extent line) says which kind of VMDK this is.
        if primary.descriptorOffset != 0 {
            let offset = try Self.byteOffset(sector: primary.descriptorOffset, length: primary.descriptorSize * 512,
                                             what: "descriptor", source: source)
            let parsed = VMDK.Descriptor(parsing: try source.bytes(count: Int(primary.descriptorSize) * VMDK.sectorSize, at: offset))
            try parsed.checkSupported(capacity: effective.capacity, name: name)
            descriptor = parsed
        } else {
            descriptor = nil
        }

        virtualSize = effective.capacity * UInt64(VMDK.sectorSize)
        grainSectors = effective.grainSize
        grainBytes = Int(effective.grainSize) * VMDK.sectorSize
        grainCount = effective.grainCount
        tableEntries = Int(effective.numGTEsPerGT)
        compressed = effective.hasCompressedGrains
        markers = effective.hasMarkers
        zeroedGrainEntries = effective.hasZeroedGrainEntries
        maxCompressedBytes = 2 * grainBytes + 1024

        // The grain directory: one u32 per grain table (bounded by validate()).
        let tables = Int(effective.tableCount)
        let gdOffset = try Self.byteOffset(sector: effective.gdOffset, length: UInt64(tables) * 4,
                                           what: "grain directory", source: source)
        let gd = try source.bytes(count: tables * 4, at: gdOffset)
        grainDirectory = (0..<tables).map { gd.le32($0 * 4) }
    }

    /// Reads and checks the footer: footer marker, header copy, end-of-stream marker in the
    /// last three sectors.
    private static func readFooter(_ source: ByteSource) throws -> VMDK.SparseExtentHeader {
        let name = source.name
        let sector = UInt64(VMDK.sectorSize)
        let end = source.size - source.size % sector
        guard end >= 4 * sector else {
            throw CVMError.invalid("\(name): VMDK footer not found (file of \(source.size) bytes is truncated); the stream-optimized image is incomplete")
        }
        let tail = try source.bytes(count: 3 * VMDK.sectorSize, at: end - 3 * sector)
        let footerMarkerOK = tail.le32(8) == 0 && tail.le32(12) == VMDK.MarkerType.footer.rawValue
        let eos = Array(tail[1024..<1536])
        let eosOK = eos.le64(0) == 0 && eos.le32(8) == 0 && eos.le32(12) == VMDK.MarkerType.endOfStream.rawValue
        guard footerMarkerOK, eosOK, let footer = VMDK.SparseExtentHeader(decoding: Array(tail[512..<1024])) else {
            throw CVMError.invalid("\(name): VMDK footer not found at the end of the file (footer marker, header copy and end-of-stream marker expected); the stream-optimized image is truncated or incomplete")
        }
        return footer
    }

    /// `sector * 512` when `[that, that + length)` lies within the file; else an error naming `what`.
    private static func byteOffset(sector: UInt64, length: UInt64, what: String, source: ByteSource) throws -> UInt64 {
        let (offset, o1) = sector.multipliedReportingOverflow(by: UInt64(VMDK.sectorSize))
        let (end, o2) = offset.addingReportingOverflow(length)
        guard !o1, !o2, end <= source.size else {
            throw CVMError.invalid("\(source.name): VMDK \(what) at sector \(sector) (\(length) bytes) is beyond the end of the file (\(source.size) bytes)")
        }
        return offset
    }

    // MARK: grain tables

    /// Reads grain table `index` (whose directory entry is non-zero) from the file.
    private func readTable(_ index: Int) throws -> [UInt32] {
        guard index < grainDirectory.count else { return [] }
        let sector = UInt64(grainDirectory[index])
        let offset = try Self.byteOffset(sector: sector, length: UInt64(tableEntries) * 4,
                                         what: "grain table \(index)", source: source)
        let raw = try source.bytes(count: tableEntries * 4, at: offset)
        return (0..<tableEntries).map { raw.le32($0 * 4) }
    }

    /// Grain table `index` through the bounded cache.
    private func cachedTable(_ index: Int) throws -> [UInt32] {
        if let t = tableCache[index] { return t }
        let t = try readTable(index)
        if tableCacheOrder.count >= Self.tableCacheLimit {
            tableCache.removeValue(forKey: tableCacheOrder.removeFirst())
        }
        tableCache[index] = t
        tableCacheOrder.append(index)
        return t
    }

    /// The grain-table entry of grain `grain` (0: not stored).
    private func tableEntry(_ grain: UInt64) throws -> UInt32 {
        let index = Int(grain / UInt64(tableEntries))
        guard index < grainDirectory.count, grainDirectory[index] != 0 else { return 0 }
        let table = try cachedTable(index)
        let slot = Int(grain % UInt64(tableEntries))
        return slot < table.count ? table[slot] : 0
    }

    /// True when a table entry stores data (0 is absent; 1 is "zeroed" with that feature).
    private func isStored(_ entry: UInt32) -> Bool {
        entry != 0 && !(zeroedGrainEntries && entry == 1)
    }

    /// Checks a stored entry of grain `grain`: within the capacity and the file.
    private func checkEntry(_ entry: UInt32, grain: UInt64) throws {
        guard grain < grainCount else {
            throw CVMError.invalid("\(source.name): VMDK grain \(grain) at LBA \(grain &* grainSectors) is beyond the capacity (\(header.capacity) sectors); the grain table is corrupt")
        }
        guard UInt64(entry) * UInt64(VMDK.sectorSize) < source.size else {
            throw CVMError.invalid("\(source.name): VMDK grain \(grain) is stored at sector \(entry), beyond the end of the file (\(source.size) bytes); the file is truncated or the grain table is corrupt")
        }
    }

    // MARK: DiskReader

    public func storedRanges() throws -> [Range<UInt64>] {
        try lock.withLock {
            var ranges = CoarseRanges()
            for index in 0..<grainDirectory.count where grainDirectory[index] != 0 {
                let table = try tableCache[index] ?? readTable(index)
                for (slot, entry) in table.enumerated() where isStored(entry) {
                    let grain = UInt64(index) * UInt64(tableEntries) + UInt64(slot)
                    try checkEntry(entry, grain: grain)
                    let start = grain * UInt64(grainBytes)
                    ranges.append(start..<start + min(UInt64(grainBytes), virtualSize - start))
                }
            }
            return ranges.ranges
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkVirtualRange(offset: offset, count: buffer.count, name: source.name)
        guard buffer.count > 0, let base = buffer.baseAddress else { return }
        try lock.withLock {
            // Map the request onto grains; absent grains are zero-filled here, stored ones
            // become jobs that are decoded in parallel below.
            var jobs: [GrainJob] = []
            var done = 0
            while done < buffer.count {
                let position = offset + UInt64(done)
                let grain = position / UInt64(grainBytes)
                let inGrain = Int(position % UInt64(grainBytes))
                let count = min(grainBytes - inGrain, buffer.count - done)
                let destination = UnsafeMutableRawBufferPointer(start: base + done, count: count)
                let entry = try tableEntry(grain)
                if !isStored(entry) {
                    destination.initializeMemory(as: UInt8.self, repeating: 0)
                } else if let recent = recentGrain, recent.index == grain, compressed {
                    recent.bytes.withUnsafeBytes {
                        destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[inGrain..<inGrain + count]))
                    }
                } else {
                    try checkEntry(entry, grain: grain)
                    jobs.append(GrainJob(grain: grain, sector: UInt64(entry), offsetInGrain: inGrain, destination: destination))
                }
                done += count
            }
            try decode(jobs)
        }
    }

    // MARK: grain decoding

    private struct GrainJob {
        let grain: UInt64
        let sector: UInt64
        let offsetInGrain: Int
        let destination: UnsafeMutableRawBufferPointer
    }

    /// Per-thread resources: a decompressor and buffers (libdeflate state is not thread-safe).
    private final class GrainWorker {
        let inflater: VMDK.GrainInflater
        let input: UnsafeMutableRawBufferPointer
        let grain: UnsafeMutableRawBufferPointer

        init(inputBytes: Int, grainBytes: Int) throws {
            inflater = try VMDK.GrainInflater()
            input = .allocate(byteCount: inputBytes, alignment: 64)
            grain = .allocate(byteCount: grainBytes, alignment: 64)
        }

        deinit {
            input.deallocate()
            grain.deallocate()
        }
    }

    private func decode(_ jobs: [GrainJob]) throws {
        guard !jobs.isEmpty else { return }
        let threads = min(jobs.count, max(1, SystemInfo.activeProcessorCount))
        while workers.count < threads {
            workers.append(try GrainWorker(inputBytes: VMDK.grainMarkerSize + maxCompressedBytes, grainBytes: grainBytes))
        }
        if threads == 1 {
            for job in jobs { try decode(job, with: workers[0], remember: jobs.count == 1) }
            return
        }
        let pool = workers
        try parallelFor(threads) { w in
            var j = w
            while j < jobs.count {
                try self.decode(jobs[j], with: pool[w], remember: false)
                j += threads
            }
        }
    }

    /// Reads grain `job.grain` from the file and copies its requested part into place.
    private func decode(_ job: GrainJob, with worker: GrainWorker, remember: Bool) throws {
        let name = source.name
        let fileOffset = job.sector * UInt64(VMDK.sectorSize)   // < file size (checkEntry)
        if !compressed {
            let (at, overflow) = fileOffset.addingReportingOverflow(UInt64(job.offsetInGrain))
            guard !overflow else { throw CVMError.invalid("\(name): VMDK grain \(job.grain) offset overflows") }
            try source.read(into: job.destination, at: at)
            return
        }
        let grainStart = job.grain * UInt64(grainBytes)
        let lba = job.grain * grainSectors
        // One read usually covers marker and data; a second one fetches the rest if needed.
        let available = source.size - fileOffset
        let first = Int(min(available, UInt64(VMDK.grainMarkerSize + grainBytes)))
        try source.read(into: UnsafeMutableRawBufferPointer(rebasing: worker.input[0..<first]), at: fileOffset)
        var payloadStart = 0
        var payloadCount = first
        if markers {
            guard first >= VMDK.grainMarkerSize else {
                throw CVMError.invalid("\(name): VMDK grain \(job.grain) marker at byte \(fileOffset) is cut off by the end of the file; the file is truncated")
            }
            let markerLBA = UnsafeRawBufferPointer(worker.input).loadUnaligned(as: UInt64.self).littleEndian
            let size = UnsafeRawBufferPointer(worker.input).loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
            guard markerLBA == lba else {
                if markerLBA >= header.capacity {
                    throw CVMError.invalid("\(name): VMDK grain \(job.grain) at LBA \(markerLBA) is beyond the capacity (\(header.capacity) sectors); the grain marker is corrupt")
                }
                throw CVMError.invalid("\(name): VMDK grain table points grain \(job.grain) (LBA \(lba)) at a marker for LBA \(markerLBA); the grain table is corrupt")
            }
            guard size > 0, Int(size) <= maxCompressedBytes else {
                throw CVMError.invalid("\(name): VMDK grain \(job.grain) at LBA \(lba) has compressed size \(size); expected 1…\(maxCompressedBytes) bytes")
            }
            let total = VMDK.grainMarkerSize + Int(size)
            guard UInt64(total) <= available else {
                throw CVMError.invalid("\(name): VMDK grain \(job.grain) at LBA \(lba) needs \(total) bytes at offset \(fileOffset), beyond the end of the file (\(source.size) bytes); the file is truncated")
            }
            if total > first {
                try source.read(into: UnsafeMutableRawBufferPointer(rebasing: worker.input[first..<total]), at: fileOffset + UInt64(first))
            }
            payloadStart = VMDK.grainMarkerSize
            payloadCount = Int(size)
        } else if available > UInt64(first) {
            // Without markers the compressed length is unknown: give the decompressor up to
            // the bound and let it stop at the end of the zlib stream.
            let total = Int(min(available, UInt64(maxCompressedBytes)))
            try source.read(into: UnsafeMutableRawBufferPointer(rebasing: worker.input[first..<total]), at: fileOffset + UInt64(first))
            payloadCount = total
        }

        // A whole grain goes straight into the caller's buffer; a partial one via scratch.
        let direct = job.offsetInGrain == 0 && job.destination.count == grainBytes
        let output = direct ? job.destination : worker.grain
        let payload = UnsafeRawBufferPointer(rebasing: worker.input[payloadStart..<payloadStart + payloadCount])
        guard let produced = worker.inflater.decompress(payload, into: output) else {
            throw CVMError.invalid("\(name): VMDK grain \(job.grain) at LBA \(lba) cannot be decompressed (corrupt deflate data)")
        }
        // Full grains only; a short grain is allowed where the capacity ends inside it.
        let expected = Int(min(UInt64(grainBytes), virtualSize - grainStart))
        guard produced == grainBytes || (expected < grainBytes && produced == expected) else {
            throw CVMError.invalid("\(name): VMDK grain \(job.grain) at LBA \(lba) decompresses to \(produced) bytes; expected \(expected == grainBytes ? "" : "\(expected) or ")\(grainBytes)")
        }
        if !direct {
            job.destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: worker.grain[job.offsetInGrain..<job.offsetInGrain + job.destination.count]))
            if remember {
                recentGrain = (job.grain, Array(UnsafeRawBufferPointer(rebasing: worker.grain[0..<produced])) + [UInt8](repeating: 0, count: grainBytes - produced))
            }
        }
    }
}

/// Collects ascending ranges, merging touching ones. When there would be more than `limit`
/// ranges it merges across ever larger gaps, so memory stays bounded whatever the input
/// (a stored range may then include some absent grains, which the DiskReader contract allows).
private struct CoarseRanges {
    private(set) var ranges: [Range<UInt64>] = []
    private var mergeGap: UInt64 = 0
    private let limit: Int

    init(limit: Int = 1 << 16) { self.limit = limit }

    mutating func append(_ r: Range<UInt64>) {
        guard !r.isEmpty else { return }
        if let last = ranges.last, r.lowerBound >= last.lowerBound, r.lowerBound <= reach(last) {
            ranges[ranges.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
        } else {
            ranges.append(r)
        }
        if ranges.count > limit { coarsen() }
    }

    /// The furthest start that still merges into `r` (saturating).
    private func reach(_ r: Range<UInt64>) -> UInt64 {
        let (sum, overflow) = r.upperBound.addingReportingOverflow(mergeGap)
        return overflow ? UInt64.max : sum
    }

    private mutating func coarsen() {
        mergeGap = max(1 << 20, mergeGap.multipliedReportingOverflow(by: 2).partialValue)
        var merged: [Range<UInt64>] = []
        merged.reserveCapacity(ranges.count / 2)
        for r in ranges {
            if let last = merged.last, r.lowerBound <= reach(last) {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        ranges = merged
    }
}
