import CVMSupport

/// The one member of a GCP image archive, as found in the tar stream's first headers.
struct TarMember {
    var name: String
    /// Offset in the tar stream of the member's first data byte.
    var dataOffset: UInt64
    /// Bytes of member data stored in the archive.
    var storedSize: UInt64
    /// The file's size: `storedSize` for a regular member, the real size for a sparse one.
    var fileSize: UInt64
    /// For a sparse member: the stored pieces of the file, ascending; their data follows
    /// each other from `dataOffset`.
    var sparseMap: [TarSparseEntry]?
    /// For a sparse member: where each map entry's data starts, relative to `dataOffset`.
    var sparseDataStarts: [UInt64] = []

    var dataEnd: UInt64 { dataOffset + storedSize }
}

/// Reads the headers at the start of a tar stream up to the first real member and checks
/// that it is `disk.raw`. Understands GNU long names ('L'/'K'), PAX headers ('x'/'g': path
/// and size) and old GNU sparse members ('S' with extension blocks).
struct TarMemberParser {
    static let expectedName = "disk.raw"
    /// Bounds for untrusted sizes: no name or PAX header is legitimately larger.
    static let maxLongNameBytes: UInt64 = 64 << 10
    static let maxPAXHeaderBytes: UInt64 = 1 << 20
    static let maxPreambleHeaders = 16
    /// Sparse map entries kept in memory (24 bytes each with their data offsets).
    static let maxSparseEntries = 1 << 19

    let stream: GzipInflateStream
    var fileName: String { stream.source.name }

    /// Parses from the current position, which must be the start of the tar stream.
    func parse() throws -> TarMember {
        var longName: String?
        var pax = PAXAttributes()
        for index in 0...Self.maxPreambleHeaders {
            let headerOffset = stream.position
            let block = try readBlock(isFirst: index == 0)
            if TarBlock.isAllZero(block) {
                if index == 0 {
                    throw CVMError.invalid("\(fileName): the tar archive inside is empty; expected exactly one member \(Self.expectedName)")
                }
                throw CVMError.invalid("\(fileName): the tar archive ends after extended headers at offset \(headerOffset) without a member; expected \(Self.expectedName)")
            }
            try checkHeader(block, at: headerOffset, isFirst: index == 0)
            guard let size = TarBlock.parseNumber(block, TarBlock.sizeRange) else {
                throw CVMError.invalid("\(fileName): tar header at offset \(headerOffset) has an unreadable size field; the archive is corrupt")
            }
            switch block[TarBlock.typeflagOffset] {
            case UInt8(ascii: "L"):
                let data = try readData(size: size, limit: Self.maxLongNameBytes, what: "GNU long name", at: headerOffset)
                longName = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
            case UInt8(ascii: "K"):
                _ = try readData(size: size, limit: Self.maxLongNameBytes, what: "GNU long link name", at: headerOffset)
            case UInt8(ascii: "x"):
                let data = try readData(size: size, limit: Self.maxPAXHeaderBytes, what: "PAX header", at: headerOffset)
                for (key, value) in try paxRecords(data, at: headerOffset) {
                    try pax.add(key: key, value: value, fileName: fileName, headerOffset: headerOffset)
                }
            case UInt8(ascii: "g"):
                _ = try readData(size: size, limit: Self.maxPAXHeaderBytes, what: "PAX global header", at: headerOffset)
            default:
                if pax.isSparse {
                    return try paxSparseMember(block, pax: pax, size: pax.size ?? size, at: headerOffset)
                }
                let name = longName ?? pax.path ?? TarBlock.memberName(block)
                return try member(block, name: name, size: pax.size ?? size, at: headerOffset)
            }
        }
        throw CVMError.invalid("\(fileName): more than \(Self.maxPreambleHeaders) extended headers before the first tar member; expected one member \(Self.expectedName)")
    }

    private func checkName(_ name: String) throws {
        var normalized = name
        while normalized.hasPrefix("./") { normalized.removeFirst(2) }
        guard normalized == Self.expectedName else {
            throw CVMError.invalid("\(fileName): expected exactly one member \(Self.expectedName), found \(TarBlock.printable(name))")
        }
    }

    /// The member described by a regular ('0', NUL, '7') or sparse ('S') header.
    private func member(_ block: [UInt8], name: String, size: UInt64, at headerOffset: UInt64) throws -> TarMember {
        try checkName(name)
        let type = block[TarBlock.typeflagOffset]
        switch type {
        case 0, UInt8(ascii: "0"), UInt8(ascii: "7"):
            let dataOffset = stream.position
            guard dataOffset.addingReportingOverflow(size).overflow == false else {
                throw CVMError.invalid("\(fileName): disk.raw has an impossible size \(size)")
            }
            return TarMember(name: name, dataOffset: dataOffset, storedSize: size, fileSize: size)
        case UInt8(ascii: "S"):
            return try sparseMember(block, name: name, storedSize: size, at: headerOffset)
        default:
            let shown = type >= 0x20 && type < 0x7F ? String(UnicodeScalar(type)) : "0x" + String(type, radix: 16)
            throw CVMError.invalid("\(fileName): disk.raw in the tar archive is not a regular file (tar type '\(shown)'); expected a regular or sparse file")
        }
    }

    /// Old GNU sparse member: map entries in the header, more in extension blocks after it.
    private func sparseMember(_ block: [UInt8], name: String, storedSize: UInt64, at headerOffset: UInt64) throws -> TarMember {
        guard var entries = TarBlock.sparseEntries(block, start: TarBlock.gnuSparseMapStart,
                                                   count: TarBlock.gnuSparseEntriesInHeader) else {
            throw CVMError.invalid("\(fileName): sparse header of disk.raw at offset \(headerOffset) has an unreadable map entry; the archive is corrupt")
        }
        guard let realSize = TarBlock.parseNumber(block, TarBlock.gnuRealSizeRange) else {
            throw CVMError.invalid("\(fileName): sparse header of disk.raw at offset \(headerOffset) has an unreadable real size; the archive is corrupt")
        }
        var extended = block[TarBlock.gnuIsExtendedOffset] != 0
        var extensionBlocks = 0
        while extended {
            extensionBlocks += 1
            let offset = stream.position
            guard extensionBlocks <= Self.maxSparseEntries / TarBlock.gnuExtensionEntries + 1 else {
                throw CVMError.invalid("\(fileName): disk.raw's sparse map continues past \(extensionBlocks) extension blocks; the archive is corrupt")
            }
            let ext = try readBlock(isFirst: false)
            guard let more = TarBlock.sparseEntries(ext, start: 0, count: TarBlock.gnuExtensionEntries) else {
                throw CVMError.invalid("\(fileName): sparse map extension block at offset \(offset) has an unreadable entry; the archive is corrupt")
            }
            entries += more
            guard entries.count <= Self.maxSparseEntries else {
                throw CVMError.unsupported("\(fileName): disk.raw's sparse map has more than \(Self.maxSparseEntries) entries; this is more fragmentation than cvm-cli handles")
            }
            extended = ext[TarBlock.gnuExtensionIsExtendedOffset] != 0
        }
        return try sparseMember(name: name, entries: entries, realSize: realSize, storedSize: storedSize)
    }

    /// A sparse member whose data starts at the current position. Entries must be ascending,
    /// non-overlapping and inside the real size, and their lengths must add up to the stored size.
    private func sparseMember(name: String, entries: [TarSparseEntry], realSize: UInt64, storedSize: UInt64) throws -> TarMember {
        var starts: [UInt64] = []
        starts.reserveCapacity(entries.count)
        var previousEnd: UInt64 = 0
        var stored: UInt64 = 0
        for (i, e) in entries.enumerated() {
            let (end, overflow) = e.offset.addingReportingOverflow(e.length)
            guard !overflow, e.offset >= previousEnd, end <= realSize else {
                throw CVMError.invalid("\(fileName): disk.raw's sparse map entry \(i) (offset \(e.offset), length \(e.length)) overlaps the previous one or lies beyond the real size \(realSize); the archive is corrupt")
            }
            starts.append(stored)
            stored += e.length  // cannot overflow: bounded by realSize
            previousEnd = end
        }
        guard stored == storedSize else {
            throw CVMError.invalid("\(fileName): disk.raw's sparse map covers \(stored) bytes but the member stores \(storedSize); the archive is corrupt")
        }
        let dataOffset = stream.position
        guard dataOffset.addingReportingOverflow(storedSize).overflow == false else {
            throw CVMError.invalid("\(fileName): disk.raw has an impossible size \(storedSize)")
        }
        return TarMember(name: name, dataOffset: dataOffset, storedSize: storedSize, fileSize: realSize,
                         sparseMap: entries, sparseDataStarts: starts)
    }

    /// A PAX sparse member (GNU tar --format=posix -S). Format 1.0 stores the map as decimal
    /// lines at the start of the data; formats 0.0 and 0.1 keep it in the PAX header.
    private func paxSparseMember(_ block: [UInt8], pax: PAXAttributes, size: UInt64, at headerOffset: UInt64) throws -> TarMember {
        let name = pax.sparseName ?? pax.path ?? TarBlock.memberName(block)
        try checkName(name)
        let type = block[TarBlock.typeflagOffset]
        guard type == 0 || type == UInt8(ascii: "0") else {
            throw CVMError.invalid("\(fileName): PAX sparse header at offset \(headerOffset) describes a member that is not a regular file; the archive is corrupt")
        }
        guard let realSize = pax.sparseRealSize else {
            throw CVMError.invalid("\(fileName): PAX sparse header at offset \(headerOffset) lacks GNU.sparse.realsize; the archive is corrupt")
        }
        switch (pax.sparseMajor, pax.sparseMinor) {
        case (1, 0):
            let (entries, mapBytes) = try readPAXSparseMap(at: headerOffset)
            guard mapBytes <= size else {
                throw CVMError.invalid("\(fileName): disk.raw's PAX sparse map (\(mapBytes) bytes) is larger than the member (\(size) bytes); the archive is corrupt")
            }
            return try sparseMember(name: name, entries: entries, realSize: realSize, storedSize: size - mapBytes)
        case (nil, nil), (0, _):
            return try sparseMember(name: name, entries: try pax.sparseEntries(fileName: fileName), realSize: realSize, storedSize: size)
        default:
            throw CVMError.unsupported("\(fileName): disk.raw uses PAX sparse format \(pax.sparseMajor ?? 0).\(pax.sparseMinor ?? 0); supported are 0.0, 0.1 and 1.0")
        }
    }

    /// The format 1.0 map: decimal numbers, one per line (count, then offset and length per
    /// entry), padded to whole blocks. Returns the entries and the blocks' size.
    private func readPAXSparseMap(at headerOffset: UInt64) throws -> ([TarSparseEntry], UInt64) {
        var numbers: [UInt64] = []
        var expected: Int?
        var current: UInt64 = 0
        var digits = 0
        var consumed: UInt64 = 0
        func bad(_ what: String) -> CVMError {
            CVMError.invalid("\(fileName): disk.raw's PAX sparse map after the header at offset \(headerOffset) \(what); the archive is corrupt")
        }
        while true {
            let block = try readBlock(isFirst: false)
            consumed += UInt64(TarBlock.size)
            for byte in block {
                if byte == UInt8(ascii: "\n") {
                    guard digits > 0 else { throw bad("has an empty line") }
                    if expected == nil {
                        guard current <= UInt64(Self.maxSparseEntries) else {
                            throw CVMError.unsupported("\(fileName): disk.raw's sparse map has \(current) entries, more than the \(Self.maxSparseEntries) cvm-cli handles")
                        }
                        expected = Int(current)
                    } else {
                        numbers.append(current)
                    }
                    current = 0
                    digits = 0
                    if let expected, numbers.count == 2 * expected {
                        let entries = stride(from: 0, to: numbers.count, by: 2).map {
                            TarSparseEntry(offset: numbers[$0], length: numbers[$0 + 1])
                        }
                        return (entries, consumed)
                    }
                } else if byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
                    let (times10, o1) = current.multipliedReportingOverflow(by: 10)
                    let (next, o2) = times10.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
                    guard !o1, !o2 else { throw bad("has a number over 64 bits") }
                    current = next
                    digits += 1
                } else {
                    throw bad("has a byte that is not a digit or newline")
                }
            }
        }
    }

    private func readBlock(isFirst: Bool) throws -> [UInt8] {
        var block = [UInt8](repeating: 0, count: TarBlock.size)
        let start = stream.position
        let got = try block.withUnsafeMutableBytes { try stream.read(into: $0) }
        guard got == TarBlock.size else {
            if isFirst {
                throw CVMError.invalid("\(fileName): the gzip data holds only \(got) bytes, not a tar archive; expected a tar holding \(Self.expectedName)")
            }
            throw CVMError.invalid("\(fileName): the tar archive ends inside a header at offset \(start); the archive is truncated")
        }
        return block
    }

    private func checkHeader(_ block: [UInt8], at offset: UInt64, isFirst: Bool) throws {
        switch TarBlock.verifyChecksum(block) {
        case .valid:
            return
        case .unreadable where isFirst && !TarBlock.hasTarMagic(block):
            throw CVMError.invalid("\(fileName): the gzip data is not a tar archive (no tar header at its start); expected a tar holding \(Self.expectedName)")
        case .unreadable:
            throw CVMError.invalid("\(fileName): tar header at offset \(offset) has an unreadable checksum field; the archive is corrupt")
        case .mismatch(let stored, let computed):
            if isFirst && !TarBlock.hasTarMagic(block) {
                throw CVMError.invalid("\(fileName): the gzip data is not a tar archive (no valid tar header at its start); expected a tar holding \(Self.expectedName)")
            }
            throw CVMError.invalid("\(fileName): tar header at offset \(offset) has a bad checksum (stored \(stored), computed \(computed)); the archive is corrupt")
        }
    }

    /// Reads a small header's data (rounded up to whole blocks) after checking its size bound.
    private func readData(size: UInt64, limit: UInt64, what: String, at headerOffset: UInt64) throws -> [UInt8] {
        guard size <= limit else {
            throw CVMError.invalid("\(fileName): \(what) at offset \(headerOffset) claims \(size) bytes (at most \(limit) expected); the archive is corrupt")
        }
        let padded = Int(DiskGeometry.roundUp(size, to: UInt64(TarBlock.size)))
        var data = [UInt8](repeating: 0, count: padded)
        let got = try data.withUnsafeMutableBytes { try stream.read(into: $0) }
        guard got == padded else {
            throw CVMError.invalid("\(fileName): the tar archive ends inside the \(what) at offset \(headerOffset); the archive is truncated")
        }
        return Array(data.prefix(Int(size)))
    }

    /// PAX extended header records: "<length> <key>=<value>\n", length counting the whole record.
    private func paxRecords(_ data: [UInt8], at headerOffset: UInt64) throws -> [(String, String)] {
        var out: [(String, String)] = []
        var i = 0
        func bad() -> CVMError {
            CVMError.invalid("\(fileName): PAX header at offset \(headerOffset) has a malformed record at byte \(i); the archive is corrupt")
        }
        while i < data.count {
            if data[i] == 0 { break }  // padding
            var length = 0
            var j = i
            while j < data.count, data[j] >= UInt8(ascii: "0"), data[j] <= UInt8(ascii: "9"), j - i < 8 {
                length = length * 10 + Int(data[j] - UInt8(ascii: "0"))
                j += 1
            }
            guard j > i, j < data.count, data[j] == UInt8(ascii: " "), length > j - i + 1,
                  length <= data.count - i, data[i + length - 1] == UInt8(ascii: "\n") else { throw bad() }
            let record = data[(j + 1)..<(i + length - 1)]
            guard let eq = record.firstIndex(of: UInt8(ascii: "=")) else { throw bad() }
            out.append((String(decoding: record[record.startIndex..<eq], as: UTF8.self),
                        String(decoding: record[(eq + 1)...], as: UTF8.self)))
            i += length
        }
        return out
    }
}

/// What the PAX extended headers before the member said (the keys cvm-cli uses).
struct PAXAttributes {
    var path: String?
    var size: UInt64?
    var sparseMajor: UInt64?
    var sparseMinor: UInt64?
    var sparseName: String?
    var sparseRealSize: UInt64?
    /// Format 0.1: "offset,length,offset,length,..."
    var sparseMap: String?
    /// Format 0.0: GNU.sparse.offset / GNU.sparse.numbytes records in order.
    var sparseNumbers: [UInt64] = []
    var isSparse = false

    mutating func add(key: String, value: String, fileName: String, headerOffset: UInt64) throws {
        func number() throws -> UInt64 {
            guard let v = UInt64(value) else {
                throw CVMError.invalid("\(fileName): PAX header at offset \(headerOffset) has an unreadable \(TarBlock.printable(key)) '\(TarBlock.printable(value))'")
            }
            return v
        }
        if key.hasPrefix("GNU.sparse.") { isSparse = true }
        switch key {
        case "path": path = value
        case "size": size = try number()
        case "GNU.sparse.major": sparseMajor = try number()
        case "GNU.sparse.minor": sparseMinor = try number()
        case "GNU.sparse.name": sparseName = value
        case "GNU.sparse.realsize", "GNU.sparse.size": sparseRealSize = try number()
        case "GNU.sparse.map": sparseMap = value
        case "GNU.sparse.offset", "GNU.sparse.numbytes":
            guard sparseNumbers.count < 2 * TarMemberParser.maxSparseEntries else {
                throw CVMError.unsupported("\(fileName): disk.raw's sparse map has more than \(TarMemberParser.maxSparseEntries) entries; this is more fragmentation than cvm-cli handles")
            }
            sparseNumbers.append(try number())
        default: break
        }
    }

    /// The map of formats 0.0 and 0.1.
    func sparseEntries(fileName: String) throws -> [TarSparseEntry] {
        var numbers = sparseNumbers
        if let sparseMap {
            let fields = sparseMap.split(separator: ",", omittingEmptySubsequences: false)
            guard fields.count <= 2 * TarMemberParser.maxSparseEntries else {
                throw CVMError.unsupported("\(fileName): disk.raw's sparse map has more than \(TarMemberParser.maxSparseEntries) entries; this is more fragmentation than cvm-cli handles")
            }
            numbers = []
            for field in fields {
                guard let v = UInt64(field) else {
                    throw CVMError.invalid("\(fileName): disk.raw's GNU.sparse.map has an unreadable number '\(TarBlock.printable(String(field)))'; the archive is corrupt")
                }
                numbers.append(v)
            }
        }
        guard numbers.count % 2 == 0 else {
            throw CVMError.invalid("\(fileName): disk.raw's PAX sparse map has an offset without a length; the archive is corrupt")
        }
        return stride(from: 0, to: numbers.count, by: 2).map { TarSparseEntry(offset: numbers[$0], length: numbers[$0 + 1]) }
    }
}
