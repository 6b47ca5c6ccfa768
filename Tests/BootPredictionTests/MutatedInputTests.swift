import BootPrediction
import CVMSupport
import DiskImage
import Foundation
import XCTest

/// Disks and firmware files come from users: corrupted headers must end in an error, never a
/// trap or a runaway allocation. Deterministic byte mutations of real files.
final class MutatedInputTests: XCTestCase {
    func mutations(of bytes: [UInt8], region: Range<Int>, count: Int, seed: UInt64, _ body: ([UInt8]) -> Void) {
        let noise = BootTestSupport.pseudoRandom(count * 8, seed: seed)
        for i in 0..<count {
            var copy = bytes
            for k in 0..<4 {   // a few bytes at a time, sometimes set to extremes
                let r = Int(noise[i * 8 + k]) << 8 | Int(noise[i * 8 + k + 4])
                let at = region.lowerBound + r % region.count
                copy[at] = k == 3 ? [0x00, 0xFF, 0x7F, 0x80][Int(noise[i * 8]) % 4] : noise[(i * 8 + k + 1) % noise.count]
            }
            body(copy)
        }
    }

    func testPEHeaders() throws {
        let stub = try BootTestSupport.bytes(try BootTestSupport.packageFile(PEImageTests.stub, package: "systemd-boot-efi"))
        mutations(of: stub, region: 0..<1024, count: 800, seed: 21) { bytes in
            if let image = try? PEImage(bytes, name: "m") {
                _ = image.authenticodeSHA256()
                for s in image.sections { _ = image.mappedSection(s.name) }
            }
        }
    }

    func testVarsAndCode() throws {
        let vars = try BootTestSupport.bytes(try BootTestSupport.packageFile("/usr/share/OVMF/OVMF_VARS.ms.fd", package: "ovmf"))
        mutations(of: vars, region: 0..<8192, count: 800, seed: 22) { _ = try? OVMFVariableStore($0, name: "m") }
        let code = try BootTestSupport.bytes(try BootTestSupport.packageFile(OVMFFirmwareTests.code, package: "ovmf"))
        // The volume and file headers before the compressed data (decompressing is liblzma's job).
        mutations(of: code, region: 0..<0xB0, count: 60, seed: 23) { _ = try? OVMFFirmware(code: $0, name: "m") }
    }

    func testFATMetadata() throws {
        let dir = try BootTestSupport.temporaryDirectory("fat-mutate")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (image, _) = try FATFileSystemTests.makeVolume(fatBits: 32, dir: dir)
        let original = try BootTestSupport.bytes(image)
        let reserved = Int(original.le16(14)) * 512, fatSize = Int(original.le32(36)) * 512
        // The boot sector, then the FAT and the first data clusters (root and EFI directories).
        for (region, seed) in [(0..<512, UInt64(24)), (reserved..<reserved + 2 * fatSize + 32 * 1024, UInt64(25))] {
            mutations(of: original, region: region, count: 60, seed: seed) { bytes in
                guard let r = try? DiskImageFile.open(source: MemoryByteSource(bytes), path: "m.img"), let f = try? FATFileSystem(disk: r, offset: 0, size: r.virtualSize, name: "m") else { return }
                func walk(_ d: FATFileSystem.Entry?, depth: Int) {
                    guard depth < 4, let entries = try? f.list(d) else { return }
                    for e in entries.prefix(50) {
                        if e.isDirectory { walk(e, depth: depth + 1) } else { _ = try? f.read(e) }
                    }
                }
                walk(nil, depth: 0)
            }
        }
    }
}
