import CVMSupport

/// Stream-optimized VMDK (VMware "Virtual Disk Format" 1.1/5.0, the format AWS imports).
///
/// One file holds everything, in 512-byte sectors:
///
///     sector 0        sparse extent header (magic KDMV), gdOffset = GD_AT_END
///     sector 1…       embedded descriptor text
///     overHead…       grains: marker (LBA u64, size u32) + zlib data, each padded to a sector;
///                     after the grains of each 512-grain span, a grain-table marker + table
///     end − …         grain-directory marker + directory, footer marker + header copy with the
///                     real gdOffset, end-of-stream marker
///
/// All-zero grains are simply absent (grain-table entry 0). The reader also takes the older
/// monolithicSparse layout (uncompressed grains, tables up front), which shares the header and
/// the grain directory → grain table → grain mapping.
///
/// The pieces: `VMDK+Header.swift` (sparse extent header), `VMDK+Descriptor.swift` (descriptor
/// text), `VMDK+Deflate.swift` (libdeflate wrappers), `VMDK+Reader.swift`, `VMDK+Writer.swift`.
enum VMDK {
    static let sectorSize = 512
    /// Grain size the writer uses: 128 sectors (64 KiB), the size every tool writes and the
    /// converter's zero-detection block.
    static let writerGrainSectors: UInt64 = 128
    /// Grain-table entries per table: 512 (fixed by the format).
    static let writerTableEntries = 512
    /// Sectors reserved for the embedded descriptor (what qemu reserves too).
    static let writerDescriptorSectors: UInt64 = 20
    /// First grain sector: one grain in, like VMware's tools (header + descriptor fit before it).
    static let writerOverHead: UInt64 = 128

    /// `gdOffset` value meaning "the grain directory is found through the footer".
    static let gdAtEnd: UInt64 = 0xFFFF_FFFF_FFFF_FFFF

    /// Header flag bits.
    enum Flag {
        /// The newline-detection characters are valid (text-mode transfers are detectable).
        static let validNewlineTest: UInt32 = 1 << 0
        /// A redundant grain directory exists at `rgdOffset`.
        static let redundantGrainTable: UInt32 = 1 << 1
        /// Grain-table entry 1 means "grain reads as zeros" (version 2+).
        static let zeroedGrainEntries: UInt32 = 1 << 2
        static let compressedGrains: UInt32 = 1 << 16
        static let markers: UInt32 = 1 << 17
    }

    /// `compressAlgorithm` values.
    static let compressionNone: UInt16 = 0
    static let compressionDeflate: UInt16 = 1

    /// Metadata marker types (the `type` field of a 512-byte marker whose `size` is 0).
    enum MarkerType: UInt32 {
        case endOfStream = 0
        case grainTable = 1
        case grainDirectory = 2
        case footer = 3
    }

    /// Bytes before a grain's compressed data: LBA (u64) and compressed size (u32).
    static let grainMarkerSize = 12

    /// A metadata marker sector: `sectors` of metadata follow (0 for end-of-stream).
    static func metadataMarker(_ type: MarkerType, sectors: UInt64) -> [UInt8] {
        var marker = [UInt8](repeating: 0, count: sectorSize)
        marker.putLE64(sectors, at: 0)
        marker.putLE32(0, at: 8)
        marker.putLE32(type.rawValue, at: 12)
        return marker
    }
}
