import BootPrediction
import CVMCrypto
import CVMSupport
import Foundation
import XCTest

/// The firmware-volume reader and the option-ROM reader on Debian's own files, refereed by an
/// independent reading (Python: lzma + a scan for volume headers; pesign for the ROM's driver).
final class OVMFFirmwareTests: XCTestCase {
    static let code = "/usr/share/OVMF/OVMF_CODE.fd"

    func testVolumesMatchAnIndependentDecompression() throws {
        let path = try BootTestSupport.packageFile(Self.code, package: "ovmf")
        let firmware = try OVMFFirmware(code: try BootTestSupport.bytes(path), name: path)
        // Python decompresses the LZMA section found by its GUID and hashes every volume header
        // it finds in the result (FvLength from the header).
        let script = """
        import hashlib, lzma, struct, sys, uuid
        f = open(sys.argv[1], 'rb').read()
        g = uuid.UUID('EE4E5898-3914-4259-9D6E-DC7BD79403CF').bytes_le
        i = f.index(g); start = i - 4
        size = int.from_bytes(f[start:start + 3], 'little'); off = struct.unpack_from('<H', f, i + 16)[0]
        d = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(f[start + off:start + size])
        k = 0
        while True:
            k = d.find(b'_FVH', k)
            if k < 0: break
            b = k - 40; n = struct.unpack_from('<Q', d, b + 32)[0]
            if b >= 0 and n <= len(d) - b and d[b + 16:b + 32] == uuid.UUID('8C8CE578-8A3D-4F1C-9935-896185C32DD3').bytes_le:
                print(hashlib.sha256(d[b:b + n]).hexdigest(), n)
            k += 4
        """
        let python = try BootTestSupport.tool("python3", package: "python3")
        let expected = try python.run(["-c", script, path]).split(whereSeparator: \.isNewline).map(String.init)
        XCTAssertEqual(firmware.volumes.map { "\(hexString(SHA256.hash($0.bytes))) \($0.bytes.count)" }, expected)
        XCTAssertEqual(firmware.volumes.count, 2, "PEI and DXE volumes")

        // The DXE volume holds the boot manager, UiApp and the Shell under OVMF's volume name.
        let bds = UEFIEvent.guid(0x6D33_944A, 0xEC75, 0x4855, [0xA5, 0x4D, 0x80, 0x9C, 0x75, 0x24, 0x1F, 0x6C])
        let dxe = try XCTUnwrap(firmware.volume(containing: bds))
        XCTAssertEqual(dxe.bytes.count, 0xC00000)
        XCTAssertNotNil(dxe.name)
    }

    func testRefusesWhatIsNotOVMF() {
        XCTAssertThrowsError(try OVMFFirmware(code: [UInt8](repeating: 0, count: 4096), name: "bios.bin")) { error in
            XCTAssertTrue("\(error)".contains("bios.bin: no firmware volume header"), "\(error)")
        }
    }

    /// QEMU's virtio-net ROM (ipxe-qemu): the UEFI driver is a PE image pesign hashes the same.
    func testOptionROMDriver() throws {
        let rom = try BootTestSupport.packageFile("/usr/lib/ipxe/qemu/efi-virtio.rom", package: "ipxe-qemu")
        let dir = try BootTestSupport.temporaryDirectory("rom")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var bytes = try BootTestSupport.bytes(rom)
        let driver = try PCIOptionROM.uefiDriver(bytes, name: rom)
        try Data(driver).write(to: URL(fileURLWithPath: dir + "/driver.efi"))
        let pesign = try BootTestSupport.tool("pesign", package: "pesign").run(["-h", "-i", dir + "/driver.efi"])
        XCTAssertTrue(pesign.contains(hexString(try PEImage(driver, name: "driver").authenticodeSHA256())), pesign)

        // A compressed driver is refused by name, not hashed wrongly.
        var o = 0
        while bytes.le32(o + 4) != 0x0EF1 { o += Int(bytes.le16(o + Int(bytes.le16(o + 0x18)) + 0x10)) * 512 }
        bytes.putLE16(1, at: o + 0x0C)
        XCTAssertThrowsError(try PCIOptionROM.uefiDriver(bytes, name: "packed.rom")) { error in
            XCTAssertTrue("\(error)".contains("packed.rom: the UEFI driver in this option ROM is EFI-compressed"), "\(error)")
        }
    }
}
