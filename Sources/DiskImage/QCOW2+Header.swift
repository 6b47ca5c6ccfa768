import CVMSupport

/// The qcow2 header (version 2 or 3, big-endian) with the fields cvm-cli needs, checked
/// against the file before anything else reads it (libqcow included).
struct QCOW2Header {
    static let magic: UInt32 = 0x5146_49FB          // "QFI\xfb"
    static let version2Length = 72
    static let version3MinimumLength = 104
    /// QEMU's limits: clusters of 512 bytes to 2 MiB, an L1 table of at most 32 MiB, a
    /// backing file name of at most 1023 bytes.
    static let clusterBitsRange: ClosedRange<UInt32> = 9...21
    static let maxL1Bytes: UInt64 = 32 << 20
    static let maxBackingNameLength: UInt32 = 1023

    /// Incompatible feature bits (version 3).
    enum Incompatible {
        static let dirty: UInt64 = 1 << 0
        static let corrupt: UInt64 = 1 << 1
        static let externalDataFile: UInt64 = 1 << 2
        static let compressionType: UInt64 = 1 << 3
        static let extendedL2: UInt64 = 1 << 4
    }

    /// Header extension types.
    enum Extension {
        static let end: UInt32 = 0
        static let backingFormat: UInt32 = 0xE279_2ACA
    }

    let version: UInt32
    let clusterBits: UInt32
    /// Virtual disk size in bytes.
    let size: UInt64
    let l1Size: UInt32
    let l1TableOffset: UInt64
    /// Name of the backing file as stored (relative names are relative to the image's folder).
    let backingFileName: String?
    /// Format named by the backing-format header extension ("raw", "qcow2", ...), if present.
    let backingFormat: String?

    var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    /// 8-byte entries per L2 table (one cluster).
    var l2Entries: UInt64 { clusterSize / 8 }
    /// Virtual bytes one L2 table maps.
    var l2Coverage: UInt64 { clusterSize * l2Entries }
    /// L1 entries needed to map the whole virtual disk.
    var l1EntriesNeeded: UInt64 { size / l2Coverage + (size % l2Coverage == 0 ? 0 : 1) }
    /// Standard (uncompressed) clusters may carry the v3 "reads as zeros" flag.
    var hasZeroFlag: Bool { version >= 3 }

    /// Reads and validates the header of `source`.
    static func read(_ source: ByteSource) throws -> QCOW2Header {
        let name = source.name
        guard source.size >= UInt64(version2Length) else {
            throw CVMError.invalid("\(name): qcow2 header is truncated (file size \(source.size), a header needs at least \(version2Length) bytes)")
        }
        let fixed = try source.bytes(count: version2Length, at: 0)
        guard fixed.be32(0) == magic else {
            throw CVMError.invalid("\(name): no qcow2 magic 'QFI\\xfb' at offset 0; the file is not a qcow2 image")
        }
        let version = fixed.be32(4)
        if version == 1 {
            throw CVMError.unsupported("\(name): qcow version 1 images are not supported; convert to qcow2 first (qemu-img convert -O qcow2)")
        }
        guard version == 2 || version == 3 else {
            throw CVMError.unsupported("\(name): qcow2 version \(version) is not supported; expected version 2 or 3")
        }
        let clusterBits = fixed.be32(20)
        guard clusterBitsRange.contains(clusterBits) else {
            throw CVMError.invalid("\(name): qcow2 cluster_bits \(clusterBits) is invalid; expected 9 to 21 (512 bytes to 2 MiB clusters)")
        }
        let clusterSize = UInt64(1) << UInt64(clusterBits)
        let cryptMethod = fixed.be32(32)
        guard cryptMethod == 0 else {
            throw CVMError.unsupported("\(name): the qcow2 image is encrypted (crypt_method \(cryptMethod)); decrypt it first (qemu-img convert with the key) and convert the result")
        }

        // Version 3: feature bits and the real header length.
        var headerLength = version2Length
        if version == 3 {
            guard source.size >= UInt64(version3MinimumLength) else {
                throw CVMError.invalid("\(name): qcow2 version 3 header is truncated (file size \(source.size), needs at least \(version3MinimumLength) bytes)")
            }
            let v3 = try source.bytes(count: version3MinimumLength, at: 0)
            let length = UInt64(v3.be32(100))
            guard length >= UInt64(version3MinimumLength), length <= clusterSize, length <= source.size, length % 8 == 0 else {
                throw CVMError.invalid("\(name): qcow2 header_length \(length) is invalid; expected a multiple of 8 from \(version3MinimumLength) to the cluster size \(clusterSize) within the file")
            }
            headerLength = Int(length)
            let header = try source.bytes(count: headerLength, at: 0)
            try checkIncompatibleFeatures(header.be64(72), header: header, name: name)
        }

        let size = fixed.be64(24)
        let l1Size = fixed.be32(36)
        let l1TableOffset = fixed.be64(40)
        let backingName = try readBackingFileName(fixed, clusterSize: clusterSize, source: source)
        let extensionsEnd = backingName != nil ? fixed.be64(8) : clusterSize
        let backingFormat = try readBackingFormat(source, from: UInt64(headerLength),
                                                  to: min(extensionsEnd, clusterSize, source.size))
        let h = QCOW2Header(version: version, clusterBits: clusterBits, size: size, l1Size: l1Size,
                            l1TableOffset: l1TableOffset, backingFileName: backingName, backingFormat: backingFormat)
        try h.checkL1(source)
        return h
    }

    private static func checkIncompatibleFeatures(_ bits: UInt64, header: [UInt8], name: String) throws {
        if bits & Incompatible.externalDataFile != 0 {
            throw CVMError.unsupported("\(name): the qcow2 image keeps its data in an external data file, which is not supported; convert it with qemu-img first")
        }
        if bits & Incompatible.extendedL2 != 0 {
            throw CVMError.unsupported("\(name): the qcow2 image uses extended L2 entries (subclusters), which are not supported; convert it with qemu-img first")
        }
        if bits & Incompatible.compressionType != 0 {
            let type = header.count > 104 ? header[104] : 0
            if type != 0 {
                throw CVMError.unsupported("\(name): the qcow2 image uses compression type \(type) (zstd), which is not supported; only zlib-compressed clusters can be read")
            }
        }
        let known = Incompatible.dirty | Incompatible.corrupt | Incompatible.externalDataFile
            | Incompatible.compressionType | Incompatible.extendedL2
        if bits & ~known != 0 {
            throw CVMError.unsupported("\(name): the qcow2 image has unknown incompatible feature bits 0x\(String(bits & ~known, radix: 16)); it needs a newer reader")
        }
        // Dirty (refcounts not flushed) and corrupt (metadata flagged by QEMU) images can
        // still be read; every table entry is checked before use.
    }

    private static func readBackingFileName(_ fixed: [UInt8], clusterSize: UInt64, source: ByteSource) throws -> String? {
        let name = source.name
        let offset = fixed.be64(8)
        let length = fixed.be32(16)
        guard offset != 0 else { return nil }
        guard length > 0, length <= maxBackingNameLength, offset >= UInt64(version2Length),
              offset <= clusterSize, clusterSize - offset >= UInt64(length),
              offset <= source.size, source.size - offset >= UInt64(length) else {
            throw CVMError.invalid("\(name): qcow2 backing file name (\(length) bytes at offset \(offset)) is invalid; expected 1 to \(maxBackingNameLength) bytes after the header within the first cluster and the file")
        }
        let bytes = try source.bytes(count: Int(length), at: offset)
        let text = String(decoding: bytes, as: UTF8.self)
        guard !bytes.contains(0), Array(text.utf8) == bytes else {
            throw CVMError.invalid("\(name): qcow2 backing file name at offset \(offset) is not valid UTF-8 text")
        }
        return text
    }

    /// Walks the header extensions in `[start, end)` and returns the backing format, if any.
    private static func readBackingFormat(_ source: ByteSource, from start: UInt64, to end: UInt64) throws -> String? {
        guard start < end else { return nil }
        let area = try source.bytes(count: Int(end - start), at: start)
        var position = 0
        var format: String?
        while area.count - position >= 8 {
            let type = area.be32(position)
            let length = Int(area.be32(position + 4))
            if type == Extension.end { return format }
            let dataStart = position + 8
            guard length <= area.count - dataStart else {
                throw CVMError.invalid("\(source.name): qcow2 header extension 0x\(String(type, radix: 16)) at offset \(start + UInt64(position)) runs past the header area; the header is corrupt")
            }
            if type == Extension.backingFormat {
                format = String(decoding: area[dataStart..<dataStart + length], as: UTF8.self)
            }
            // Extension data is padded to a multiple of 8 bytes.
            position = dataStart + (length + 7) / 8 * 8
        }
        return format
    }

    /// The L1 table must cover the disk, stay within QEMU's size limit and lie in the file.
    private func checkL1(_ source: ByteSource) throws {
        let name = source.name
        let needed = l1EntriesNeeded
        guard needed <= UInt64(l1Size) else {
            throw CVMError.invalid("\(name): qcow2 L1 table has \(l1Size) entries but the disk size \(size) needs \(needed); the header is corrupt")
        }
        let bytes = UInt64(l1Size) * 8
        guard bytes <= QCOW2Header.maxL1Bytes else {
            throw CVMError.invalid("\(name): qcow2 L1 table of \(l1Size) entries exceeds the 32 MiB limit; the header is corrupt")
        }
        guard l1TableOffset % clusterSize == 0 || bytes == 0 else {
            throw CVMError.invalid("\(name): qcow2 L1 table offset \(l1TableOffset) is not aligned to the cluster size \(clusterSize); the header is corrupt")
        }
        guard l1TableOffset <= source.size, source.size - l1TableOffset >= bytes else {
            throw CVMError.invalid("\(name): qcow2 L1 table (\(bytes) bytes at offset \(l1TableOffset)) extends beyond the end of the file (size \(source.size)); the file is truncated or corrupt")
        }
    }
}
