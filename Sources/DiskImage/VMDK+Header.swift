import CVMSupport

extension VMDK {
    /// The 512-byte sparse extent header (little-endian), found at sector 0 and, for
    /// stream-optimized files, again as the footer near the end of the file.
    struct SparseExtentHeader: Equatable {
        static let magic: [UInt8] = Array("KDMV".utf8)
        /// The four newline-detection bytes: "\n", " ", "\r", "\n".
        static let newlineTest: [UInt8] = [0x0A, 0x20, 0x0D, 0x0A]

        var version: UInt32
        var flags: UInt32
        /// Virtual disk size in sectors.
        var capacity: UInt64
        /// Sectors per grain (a power of two).
        var grainSize: UInt64
        /// Sector of the embedded descriptor (0: none).
        var descriptorOffset: UInt64
        /// Sectors reserved for the descriptor.
        var descriptorSize: UInt64
        var numGTEsPerGT: UInt32
        /// Sector of the redundant grain directory (used only with `Flag.redundantGrainTable`).
        var rgdOffset: UInt64
        /// Sector of the grain directory, or `VMDK.gdAtEnd`.
        var gdOffset: UInt64
        /// Sectors of metadata before the first grain.
        var overHead: UInt64
        var uncleanShutdown: Bool
        /// Bytes 73…76 as found (must equal `newlineTest` when `Flag.validNewlineTest` is set).
        var newlineBytes: [UInt8]
        var compressAlgorithm: UInt16

        init(version: UInt32, flags: UInt32, capacity: UInt64, grainSize: UInt64,
             descriptorOffset: UInt64, descriptorSize: UInt64, numGTEsPerGT: UInt32,
             rgdOffset: UInt64, gdOffset: UInt64, overHead: UInt64, compressAlgorithm: UInt16) {
            self.version = version
            self.flags = flags
            self.capacity = capacity
            self.grainSize = grainSize
            self.descriptorOffset = descriptorOffset
            self.descriptorSize = descriptorSize
            self.numGTEsPerGT = numGTEsPerGT
            self.rgdOffset = rgdOffset
            self.gdOffset = gdOffset
            self.overHead = overHead
            self.uncleanShutdown = false
            self.newlineBytes = Self.newlineTest
            self.compressAlgorithm = compressAlgorithm
        }

        /// Decodes a header sector; nil when the magic is not `KDMV`.
        init?(decoding b: [UInt8]) {
            guard b.count >= VMDK.sectorSize, Array(b[0..<4]) == Self.magic else { return nil }
            version = b.le32(4)
            flags = b.le32(8)
            capacity = b.le64(12)
            grainSize = b.le64(20)
            descriptorOffset = b.le64(28)
            descriptorSize = b.le64(36)
            numGTEsPerGT = b.le32(44)
            rgdOffset = b.le64(48)
            gdOffset = b.le64(56)
            overHead = b.le64(64)
            uncleanShutdown = b[72] != 0
            newlineBytes = Array(b[73..<77])
            compressAlgorithm = b.le16(77)
        }

        /// The header as one 512-byte sector.
        func encoded() -> [UInt8] {
            var b = [UInt8](repeating: 0, count: VMDK.sectorSize)
            b.replaceSubrange(0..<4, with: Self.magic)
            b.putLE32(version, at: 4)
            b.putLE32(flags, at: 8)
            b.putLE64(capacity, at: 12)
            b.putLE64(grainSize, at: 20)
            b.putLE64(descriptorOffset, at: 28)
            b.putLE64(descriptorSize, at: 36)
            b.putLE32(numGTEsPerGT, at: 44)
            b.putLE64(rgdOffset, at: 48)
            b.putLE64(gdOffset, at: 56)
            b.putLE64(overHead, at: 64)
            b[72] = uncleanShutdown ? 1 : 0
            b.replaceSubrange(73..<77, with: newlineBytes.count == 4 ? newlineBytes : Self.newlineTest)
            b.putLE16(compressAlgorithm, at: 77)
            return b
        }

        var hasCompressedGrains: Bool {
            flags & Flag.compressedGrains != 0 || compressAlgorithm == VMDK.compressionDeflate
        }
        var hasMarkers: Bool { flags & Flag.markers != 0 }
        var hasZeroedGrainEntries: Bool { flags & Flag.zeroedGrainEntries != 0 }

        /// Checks every field the reader relies on; `name` is the file for messages.
        /// `gdOffset` may still be `gdAtEnd` (the caller resolves the footer).
        func validate(name: String) throws {
            guard (1...3).contains(version) else {
                throw CVMError.unsupported("\(name): VMDK sparse extent version \(version) is not supported; expected 1, 2 or 3")
            }
            if flags & Flag.validNewlineTest != 0, newlineBytes != Self.newlineTest {
                throw CVMError.invalid("\(name): VMDK header newline check bytes are altered (was the file transferred in text mode?); expected 0a 20 0d 0a")
            }
            if hasCompressedGrains {
                guard compressAlgorithm == VMDK.compressionDeflate else {
                    throw CVMError.unsupported("\(name): VMDK compression algorithm \(compressAlgorithm) is not supported; expected 1 (deflate)")
                }
            } else if hasMarkers {
                throw CVMError.unsupported("\(name): VMDK with grain markers but uncompressed grains is not supported")
            }
            guard grainSize >= 1, grainSize <= 2048, grainSize & (grainSize - 1) == 0 else {
                throw CVMError.invalid("\(name): VMDK grain size \(grainSize) sectors is invalid; expected a power of two up to 2048 (128 is usual)")
            }
            guard numGTEsPerGT >= 1, numGTEsPerGT <= 4096 else {
                throw CVMError.invalid("\(name): VMDK grain table size \(numGTEsPerGT) entries is invalid; expected 1…4096 (512 is usual)")
            }
            guard capacity <= UInt64.max / UInt64(VMDK.sectorSize) else {
                throw CVMError.invalid("\(name): VMDK capacity \(capacity) sectors is too large")
            }
            guard tableCount <= Self.maxTableCount else {
                throw CVMError.unsupported("\(name): VMDK capacity \(capacity) sectors needs \(tableCount) grain tables; at most \(Self.maxTableCount) are supported")
            }
            if descriptorOffset != 0 {
                guard descriptorSize >= 1, descriptorSize <= Self.maxDescriptorSectors else {
                    throw CVMError.invalid("\(name): VMDK descriptor size \(descriptorSize) sectors is invalid; expected 1…\(Self.maxDescriptorSectors)")
                }
            }
        }

        /// Bound on the grain directory held in memory (8 MiB; 64 TiB at the usual grain size).
        static let maxTableCount: UInt64 = 1 << 21
        /// Bound on the descriptor read into memory (1 MiB).
        static let maxDescriptorSectors: UInt64 = 2048

        /// Grains covering the capacity (the last may be partial). Only after `validate`.
        var grainCount: UInt64 {
            guard grainSize > 0 else { return 0 }
            return capacity / grainSize + (capacity % grainSize == 0 ? 0 : 1)
        }
        /// Grain tables (= grain-directory entries) covering the capacity.
        var tableCount: UInt64 {
            guard numGTEsPerGT > 0 else { return 0 }
            let grains = grainCount
            let per = UInt64(numGTEsPerGT)
            return grains / per + (grains % per == 0 ? 0 : 1)
        }
    }
}
