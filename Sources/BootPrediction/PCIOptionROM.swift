import CVMSupport

/// A PCI option ROM file (PCI Firmware spec §5): a chain of images, each with a PCI data
/// structure; the UEFI one (code type 3) carries a PE/COFF driver the firmware loads and measures.
public enum PCIOptionROM {
    /// The uncompressed x64 UEFI driver in the ROM, as the firmware loads it: from the image's
    /// EfiImageHeaderOffset to the end of that ROM image.
    public static func uefiDriver(_ rom: [UInt8], name: String) throws -> [UInt8] {
        var o = 0
        while o + 0x1A <= rom.count, rom[o] == 0x55, rom[o + 1] == 0xAA {
            let pcir = o + Int(rom.le16(o + 0x18))
            guard pcir + 0x18 <= rom.count, rom.ascii(pcir, 4) == "PCIR" else { throw CVMError.invalid("\(name): option ROM image at \(o) has no PCI data structure") }
            let length = Int(rom.le16(pcir + 0x10)) * 512
            let codeType = rom[pcir + 0x14], last = rom[pcir + 0x15] & 0x80 != 0
            guard length > 0, o + length <= rom.count else { throw CVMError.invalid("\(name): option ROM image at \(o) reaches past the file") }
            // EFI image header: signature 0x0EF1, subsystem, machine type, compression, offset.
            if codeType == 3, rom.le32(o + 4) == 0x0EF1, rom.le16(o + 0x0A) == 0x8664 {
                guard rom.le16(o + 0x0C) == 0 else {
                    throw CVMError.unsupported("\(name): the UEFI driver in this option ROM is EFI-compressed (not supported)")
                }
                let start = o + Int(rom.le16(o + 0x16))
                guard start < o + length else { throw CVMError.invalid("\(name): bad EFI image offset in the option ROM") }
                return Array(rom[start..<o + length])
            }
            if last { break }
            o += length
        }
        throw CVMError.invalid("\(name): no x64 UEFI driver in this option ROM")
    }
}
