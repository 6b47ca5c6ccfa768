import CVMSupport
import Foundation

/// A Unified Kernel Image: systemd's EFI stub with the os-release, command line, kernel and
/// initramfs added as PE sections (objcopy), booted directly by the firmware.
enum UKI {
    /// Section addresses of the classic systemd-stub recipe; the stub itself ends below the
    /// first, the kernel must fit below the initramfs (checked).
    static let osrelVMA: UInt64 = 0x20000
    static let cmdlineVMA: UInt64 = 0x30000
    static let linuxVMA: UInt64 = 0x200_0000
    static let initrdVMA: UInt64 = 0x300_0000

    static func build(objcopy: ExternalTool, stub: String, osRelease: String, cmdline: String, kernel: String,
                      initrd: String, output: String, timestamp: UInt32) throws {
        let stubBytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: stub)))
        let stubEnd = try PEFile.sectionsEnd(stubBytes, name: stub)
        guard stubEnd <= osrelVMA else {
            throw CVMError.unsupported("\(stub): the EFI stub's sections end at 0x\(String(stubEnd, radix: 16)), past 0x\(String(osrelVMA, radix: 16)) where the UKI sections start")
        }
        let kernelSize = (try FileManager.default.attributesOfItem(atPath: kernel)[.size] as? NSNumber)?.uint64Value ?? 0
        guard linuxVMA + kernelSize <= initrdVMA else {
            throw CVMError.unsupported("\(kernel): \(kernelSize) bytes do not fit between the UKI's .linux and .initrd addresses")
        }
        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        try objcopy.run([
            "--add-section", ".osrel=\(osRelease)", "--change-section-vma", ".osrel=\(hex(osrelVMA))",
            "--add-section", ".cmdline=\(cmdline)", "--change-section-vma", ".cmdline=\(hex(cmdlineVMA))",
            "--add-section", ".linux=\(kernel)", "--change-section-vma", ".linux=\(hex(linuxVMA))",
            "--add-section", ".initrd=\(initrd)", "--change-section-vma", ".initrd=\(hex(initrdVMA))",
            stub, output,
        ])
        // objcopy stamps the current time into the COFF header; the image must not depend on it.
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: output)))
        try PEFile.setTimestamp(&bytes, timestamp, name: output)
        try Data(bytes).write(to: URL(fileURLWithPath: output))
    }
}

/// The few PE/COFF header fields the UKI build needs.
enum PEFile {
    static func coffHeader(_ b: [UInt8], name: String) throws -> Int {
        guard b.count > 0x40, b[0] == 0x4D, b[1] == 0x5A else { throw CVMError.invalid("\(name): not a PE file (no MZ header)") }
        let pe = Int(b.le32(0x3C))
        guard pe + 24 <= b.count, b[pe] == 0x50, b[pe + 1] == 0x45, b[pe + 2] == 0, b[pe + 3] == 0 else {
            throw CVMError.invalid("\(name): not a PE file (no PE signature)")
        }
        return pe + 4
    }

    /// Highest virtual address any section reaches.
    static func sectionsEnd(_ b: [UInt8], name: String) throws -> UInt64 {
        let coff = try coffHeader(b, name: name)
        let count = Int(b.le16(coff + 2)), optSize = Int(b.le16(coff + 16))
        var end: UInt64 = 0
        for i in 0..<count {
            let s = coff + 20 + optSize + 40 * i
            guard s + 40 <= b.count else { throw CVMError.invalid("\(name): truncated PE section table") }
            end = max(end, UInt64(b.le32(s + 12)) + UInt64(max(b.le32(s + 8), b.le32(s + 16))))
        }
        return end
    }

    /// Sets the COFF timestamp and recomputes the optional header's checksum over it
    /// (objcopy fills in both from the clock).
    static func setTimestamp(_ b: inout [UInt8], _ t: UInt32, name: String) throws {
        let coff = try coffHeader(b, name: name)
        b.putLE32(t, at: coff + 4)
        let checksumOffset = coff + 20 + 64
        guard checksumOffset + 4 <= b.count else { throw CVMError.invalid("\(name): truncated PE optional header") }
        b.putLE32(0, at: checksumOffset)
        b.putLE32(checksum(b, skipping: checksumOffset), at: checksumOffset)
    }

    /// The PE image checksum: 16-bit one's-complement-style sum with carries folded, plus the length.
    static func checksum(_ b: [UInt8], skipping field: Int) -> UInt32 {
        var sum: UInt64 = 0
        var i = 0
        while i < b.count {
            if i == field || i == field + 2 { i += 2; continue }
            let word = UInt64(b[i]) | (i + 1 < b.count ? UInt64(b[i + 1]) << 8 : 0)
            sum += word
            sum = (sum & 0xFFFF) + (sum >> 16)
            i += 2
        }
        sum = (sum & 0xFFFF) + (sum >> 16)
        return UInt32(truncatingIfNeeded: sum + UInt64(b.count))
    }

    static func timestamp(_ b: [UInt8], name: String) throws -> UInt32 {
        b.le32(try coffHeader(b, name: name) + 4)
    }
}
