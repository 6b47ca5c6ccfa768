import CVMCrypto
import CVMSupport
import DiskImage
import Foundation
import ImageBuild
import Workload
import XCTest

/// `image build` end to end: Debian packages from the cache (downloaded on first run), the
/// real tools, then the peer tools judge the result.
final class ImageBuildTests: XCTestCase {
    func build(into dir: String, size: UInt64 = 512 << 20) throws -> (path: String, manifest: ImageManifest) {
        var options = ImageBuilder.Options()
        options.output = dir + "/base.raw"
        options.size = size
        options.agentPath = try ImageTestSupport.product("cvm-agent")
        options.workloadPath = ImageTestSupport.repo + "/workload"
        options.recipePath = ImageTestSupport.repo + "/images/base-packages.txt"
        options.cacheFolder = ImageTestSupport.repo + "/images/cache"
        options.timestamp = 0
        return (options.output, try ImageBuilder.run(options))
    }

    /// Layout, dm-verity, ext4 and the UKI checked by sgdisk, veritysetup, e2fsck and our GPT
    /// reader; a second build is byte-identical.
    func testImageIsValidAndReproducible() throws {
        let dir = try ImageTestSupport.temporaryDirectory("image")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (image, manifest) = try build(into: dir + "/a")

        // GPT: sgdisk's verdict and our own reader agree on the Discoverable Partitions layout.
        let sgdisk = try ImageTestSupport.tool("sgdisk", package: "gdisk")
        let verdict = try sgdisk.run(["-v", image])
        XCTAssertTrue(verdict.contains("No problems found"), verdict)
        let gpt = try GPT.read(from: try DiskImageFile.open(image), name: image)
        XCTAssertEqual(gpt.partitions.map(\.name), ["esp", "root", "root-verity", "data"])
        XCTAssertEqual(gpt.partitions.map(\.typeGUID), [ImageBuilder.PartitionType.esp, ImageBuilder.PartitionType.rootX86_64,
                                                        ImageBuilder.PartitionType.rootX86_64Verity, ImageBuilder.PartitionType.linuxData])
        let info = try sgdisk.run(["-i", "2", image])
        XCTAssertTrue(info.contains("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"), info)
        // The Discoverable Partitions Specification's root-x86-64-verity type, spelled out here
        // (not through the constant) so a wrong constant cannot pass.
        let verityInfo = try sgdisk.run(["-i", "3", image])
        XCTAssertTrue(verityInfo.contains("2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5"), verityInfo)

        // dm-verity: the extracted partitions verify against the root hash on the UKI command line.
        let root = gpt.partitions[1], verity = gpt.partitions[2], data = gpt.partitions[3]
        try ImageTestSupport.extract(image, offset: root.offset, size: root.size, to: dir + "/root")
        try ImageTestSupport.extract(image, offset: verity.offset, size: verity.size, to: dir + "/verity")
        let veritysetup = try ImageTestSupport.tool("veritysetup", package: "cryptsetup-bin")
        try veritysetup.run(["verify", dir + "/root", dir + "/verity", manifest.rootHash])
        XCTAssertTrue(manifest.cmdline.contains("roothash=\(manifest.rootHash)"))
        // A wrong root hash must fail, or the check above proves nothing.
        let wrong = String(manifest.rootHash.reversed())
        XCTAssertNotEqual(try veritysetup.runCapturing(["verify", dir + "/root", dir + "/verity", wrong]).status, 0)

        // ext4 data partition: e2fsck is happy, label data, /workload holds the repo's workload.
        try ImageTestSupport.extract(image, offset: data.offset, size: data.size, to: dir + "/data")
        let e2fsck = try ImageTestSupport.tool("e2fsck", package: "e2fsprogs")
        let fsck = try e2fsck.runCapturing(["-fn", dir + "/data"])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
        let dumpe2fs = try ImageTestSupport.tool("dumpe2fs", package: "e2fsprogs")
        XCTAssertTrue(try dumpe2fs.run(["-h", dir + "/data"]).contains("Filesystem volume name:   data"))
        let debugfs = try ImageTestSupport.tool("debugfs", package: "e2fsprogs")
        let compose = try debugfs.run(["-R", "cat /workload/docker-compose.yml", dir + "/data"])
        XCTAssertEqual(compose, try String(contentsOfFile: ImageTestSupport.repo + "/workload/docker-compose.yml", encoding: .utf8))
        let host = try WorkloadMeasurement.measure(try WorkloadFolder(path: ImageTestSupport.repo + "/workload"))
        XCTAssertEqual(manifest.workloadPCR23, host.pcr23)

        // ESP: FAT32 holding the UKI at the removable-media path, with a fixed PE timestamp.
        let esp = gpt.partitions[0]
        try ImageTestSupport.extract(image, offset: esp.offset, size: esp.size, to: dir + "/esp")
        let mcopy = try ImageTestSupport.tool("mcopy", package: "mtools")
        try mcopy.run(["-n", "-i", dir + "/esp", "::EFI/BOOT/BOOTX64.EFI", dir + "/uki.efi"])
        XCTAssertEqual(hexString(try SHA256.hash(fileAt: dir + "/uki.efi")), manifest.ukiSHA256)
        let objdump = try ImageTestSupport.tool("objdump", package: "binutils")
        let headers = try objdump.run(["-h", "-p", dir + "/uki.efi"])
        for section in [".osrel", ".cmdline", ".linux", ".initrd"] { XCTAssertTrue(headers.contains(section), section) }
        XCTAssertTrue(headers.contains("Time/Date\t\tThu Jan  1 00:00:00 1970"), "PE timestamp not fixed")

        // Manifest: every package with its version and .deb digest.
        XCTAssertTrue(manifest.packages.contains { $0.name.hasPrefix("linux-image-") && !$0.version.isEmpty && $0.sha256.count == 64 })

        // Reproducible: a second build elsewhere gives the same bytes and the same manifest.
        let (again, _) = try build(into: dir + "/b")
        let cmp = try ImageTestSupport.tool("cmp", package: "diffutils")
        XCTAssertEqual(try cmp.runCapturing([image, again]).status, 0, "second build differs")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: image + ".manifest.json")),
                       try Data(contentsOf: URL(fileURLWithPath: again + ".manifest.json")))
    }

    func testRecipeErrorsNameTheLine() {
        XCTAssertThrowsError(try RecipeLine.parse("kernel linux-image-cloud-amd64\nfirmware foo\n", name: "r.txt")) {
            XCTAssertTrue("\($0)".contains("r.txt:2"), "\($0)")
        }
        XCTAssertThrowsError(try RecipeLine.parse("stub systemd-boot-efi\n", name: "r.txt")) {
            XCTAssertTrue("\($0)".contains("'kernel'"), "\($0)")
        }
    }
}
