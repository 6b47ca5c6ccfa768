import CVMCrypto
import CVMSupport

/// A PE/COFF image (an EFI application) held in memory: its section table, the section contents
/// as the loader maps them, and the Authenticode digest UEFI firmware measures for it.
public struct PEImage: Sendable {
    public struct Section: Sendable, Equatable {
        public let name: String
        public let virtualSize: UInt32
        public let virtualAddress: UInt32
        public let sizeOfRawData: UInt32
        public let pointerToRawData: UInt32
    }

    public let bytes: [UInt8]
    public let sections: [Section]
    /// File offsets of the fields Authenticode leaves out.
    let checksumOffset: Int
    let certificateEntryOffset: Int?
    let sizeOfHeaders: Int
    /// The certificate table (attribute certificates): a file offset and size, not mapped.
    let certificateTable: (offset: Int, size: Int)

    public init(_ bytes: [UInt8], name: String) throws {
        self.bytes = bytes
        guard bytes.count >= 0x40, bytes[0] == 0x4D, bytes[1] == 0x5A else {
            throw CVMError.invalid("\(name): not a PE/COFF image (no MZ header)")
        }
        let pe = Int(bytes.le32(0x3C))
        guard pe >= 0x40, pe + 24 <= bytes.count, bytes.ascii(pe, 4) == "PE\0\0" else {
            throw CVMError.invalid("\(name): not a PE/COFF image (no PE signature at 0x\(String(pe, radix: 16)))")
        }
        let coff = pe + 4
        let sectionCount = Int(bytes.le16(coff + 2))
        let optionalSize = Int(bytes.le16(coff + 16))
        let optional = coff + 20
        guard optionalSize >= 68, optional + optionalSize <= bytes.count else {
            throw CVMError.invalid("\(name): truncated PE optional header")
        }
        let magic = bytes.le16(optional)
        let directoriesOffset: Int, directoryCountOffset: Int
        switch magic {
        case 0x20B: directoriesOffset = 112; directoryCountOffset = 108    // PE32+
        case 0x10B: directoriesOffset = 96; directoryCountOffset = 92      // PE32
        default: throw CVMError.invalid("\(name): unknown PE optional header magic 0x\(String(magic, radix: 16))")
        }
        checksumOffset = optional + 64
        sizeOfHeaders = Int(bytes.le32(optional + 60))
        let directoryCount = Int(bytes.le32(optional + directoryCountOffset))
        // Directory 4 is the certificate table (a file offset, not an RVA).
        if directoryCount > 4, directoriesOffset + 8 * 5 <= optionalSize {
            let entry = optional + directoriesOffset + 8 * 4
            certificateEntryOffset = entry
            certificateTable = (Int(bytes.le32(entry)), Int(bytes.le32(entry + 4)))
        } else {
            certificateEntryOffset = nil
            certificateTable = (0, 0)
        }
        guard sizeOfHeaders <= bytes.count, (certificateEntryOffset ?? checksumOffset) + 8 <= sizeOfHeaders else {
            throw CVMError.invalid("\(name): PE SizeOfHeaders \(sizeOfHeaders) is outside the file")
        }
        let table = optional + optionalSize
        guard table + 40 * sectionCount <= bytes.count else { throw CVMError.invalid("\(name): truncated PE section table") }
        var sections: [Section] = []
        for i in 0..<sectionCount {
            let s = table + 40 * i
            let rawName = bytes[s..<s + 8].prefix { $0 != 0 }
            let section = Section(name: String(decoding: rawName, as: UTF8.self), virtualSize: bytes.le32(s + 8),
                                  virtualAddress: bytes.le32(s + 12), sizeOfRawData: bytes.le32(s + 16),
                                  pointerToRawData: bytes.le32(s + 20))
            guard Int(section.pointerToRawData) + Int(section.sizeOfRawData) <= bytes.count else {
                throw CVMError.invalid("\(name): PE section \(section.name) reaches past the end of the file")
            }
            // Mapped sections are zero-filled to VirtualSize: bound what a hostile header can ask for.
            guard section.virtualSize <= 1 << 30 else {
                throw CVMError.invalid("\(name): PE section \(section.name) claims \(section.virtualSize) bytes in memory (over 1 GiB)")
            }
            sections.append(section)
        }
        self.sections = sections
    }

    /// The PE/COFF Authenticode SHA-256 (Microsoft's "Windows Authenticode Portable Executable
    /// Signature Format", as EDK2's DxeTpm2MeasureBootLib computes it): the headers without the
    /// CheckSum field and the certificate-table directory entry, the sections with raw data in
    /// file order, then whatever follows them except the certificate table.
    public func authenticodeSHA256() -> [UInt8] {
        var ranges: [Range<Int>] = []
        if let certEntry = certificateEntryOffset {
            ranges += [0..<checksumOffset, checksumOffset + 4..<certEntry, certEntry + 8..<sizeOfHeaders]
        } else {
            ranges += [0..<checksumOffset, checksumOffset + 4..<sizeOfHeaders]
        }
        var hashed = sizeOfHeaders
        for section in sections.sorted(by: { $0.pointerToRawData < $1.pointerToRawData }) where section.sizeOfRawData > 0 {
            let start = Int(section.pointerToRawData)
            ranges.append(start..<start + Int(section.sizeOfRawData))
            hashed += Int(section.sizeOfRawData)
        }
        let certificateSize = certificateEntryOffset == nil ? 0 : certificateTable.size
        if bytes.count > hashed + certificateSize {
            ranges.append(hashed..<bytes.count - certificateSize)
        }
        return bytes.withUnsafeBytes { raw in
            var hasher = SHA256Hasher()
            for range in ranges where !range.isEmpty { hasher.update(UnsafeRawBufferPointer(rebasing: raw[range])) }
            return hasher.finalize()
        }
    }

    /// The section named `name` as the loader maps it: VirtualSize bytes, the raw data and then
    /// zeros (what systemd-stub measures from the loaded image). Nil when absent; the last one
    /// of that name wins, as systemd-stub's section lookup does.
    public func mappedSection(_ name: String) -> [UInt8]? {
        guard let section = sections.last(where: { $0.name == name }) else { return nil }
        let size = Int(section.virtualSize)
        let raw = min(size, Int(section.sizeOfRawData))
        let start = Int(section.pointerToRawData)
        return Array(bytes[start..<start + raw]) + [UInt8](repeating: 0, count: size - raw)
    }
}
