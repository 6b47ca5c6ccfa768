import Foundation
import XCTest
import CVMSupport
import DiskImage
@testable import DiskUpdate

/// update-disk keeps the container format (raw, VHD fixed, VMDK streamOptimized, GCP tar.gz),
/// gives the same disk whatever the format, and is reproducible; qcow2 needs `--output`.
final class UpdateDiskFormatTests: XCTestCase {
    static let time: UInt64 = 1_700_000_000

    func options(_ workload: String, output: String? = nil) -> UpdateDisk.Options {
        var o = UpdateDisk.Options()
        o.workloadPath = workload
        o.outputPath = output
        o.timestamp = Self.time
        return o
    }

    func convert(_ input: String, _ output: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try Run.cli(["convert", input, output, "--force"])
        guard r.status == 0 else {
            XCTFail("cvm-cli convert \(input) \(output) failed (\(r.status)): \(r.stderr)", file: file, line: line)
            throw TestFailure("convert failed")
        }
    }

    /// Base raw → each format (cvm-cli convert), two copies of each updated, the copies equal
    /// byte for byte and, converted back to raw, equal to the raw disk updated directly.
    func testEveryFormatKeepsItsFormatAndGivesTheSameDisk() throws {
        let dir = try Files.tempDir(self)
        let base = dir + "/base.raw", workload = dir + "/workload"
        try BaseDisk.make(at: base)
        try Workloads.make(at: workload)
        let data = try XCTUnwrap(try GPTInfo.partitions(base).first { $0.name == "data" })

        // The reference: the raw disk updated directly, checked with the oracles.
        let reference = dir + "/reference.raw"
        try Files.copy(base, reference)
        _ = try UpdateDisk.run(disk: reference, options: options(workload))
        let refFS = dir + "/reference.fs"
        try Files.extract(reference, offset: data.offset, length: data.size, to: refFS)
        try Debugfs.assertClean(refFS)
        try Checks.assertWorkload(in: refFS, equals: workload, time: Self.time, scratch: dir)
        try Checks.assertOutsideUnchanged(before: base, after: reference, partition: data)
        let referenceSHA = try Files.sha256(reference)

        let formats: [(ext: String, format: DiskFormat)] = [
            ("raw", .raw), ("vhd", .vhdFixed), ("vmdk", .vmdkStream), ("tar.gz", .gcpTarGz),
        ]
        for (ext, format) in formats {
            let a = dir + "/a.\(ext)", b = dir + "/b.\(ext)"
            if ext == "raw" { try Files.copy(base, a) } else { try convert(base, a) }
            try Files.copy(a, b)
            let before = try Files.sha256(a)
            let ra = try UpdateDisk.run(disk: a, options: options(workload))
            let rb = try UpdateDisk.run(disk: b, options: options(workload))
            XCTAssertEqual(ra.format, format, ext)
            XCTAssertEqual(rb.partition.index, 3, ext)
            XCTAssertEqual(try DiskImageFile.open(a).format, format, "\(ext): the format is kept")
            XCTAssertNotEqual(try Files.sha256(a), before, "\(ext): the disk was not updated")
            XCTAssertEqual(try Files.sha256(a), try Files.sha256(b), "\(ext): two updates of the same disk differ")
            XCTAssertEqual(Files.leftovers(in: dir), [], ext)

            let back = dir + "/back-\(ext.replacingOccurrences(of: ".", with: "-")).raw"
            try convert(a, back)
            let size = Files.size(reference)
            if format == .gcpTarGz {
                // GCP images are whole GiB: the converter pads with zeros (qemu-img compare
                // accepts a zero tail).
                XCTAssertEqual(Files.size(back) % (1 << 30), 0, "\(ext): virtual size")
                XCTAssertEqual(try Files.sha256(back, offset: 0, length: size), referenceSHA,
                               "\(ext): differs from the raw disk updated directly")
                let cmp = try Run.tool("qemu-img", ["compare", "-f", "raw", "-F", "raw", reference, back], allowFailure: true)
                XCTAssertEqual(cmp.status, 0, "\(ext): \(cmp.stdout)")
            } else {
                XCTAssertEqual(Files.size(back), size, "\(ext): virtual size")
                XCTAssertEqual(try Files.sha256(back), referenceSHA, "\(ext): differs from the raw disk updated directly")
            }
            unlink(back)
        }
    }

    /// qcow2 cannot be written back: exit 64 naming --output; with `--output x.raw` it works and
    /// the qcow2 is untouched.
    func testQcow2NeedsOutput() throws {
        let dir = try Files.tempDir(self)
        let base = dir + "/base.raw", qcow = dir + "/disk.qcow2", workload = dir + "/workload"
        try BaseDisk.make(at: base)
        try Workloads.make(at: workload)
        try Run.tool("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", base, qcow])
        let sha = try Files.sha256(qcow)
        let env = ["SOURCE_DATE_EPOCH": "\(Self.time)"]

        let refused = try Run.cli(["update-disk", qcow, "--workload", workload], environment: env)
        XCTAssertEqual(refused.status, 64, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("--output"), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("qcow2"), refused.stderr)
        XCTAssertEqual(try Files.sha256(qcow), sha)
        XCTAssertEqual(Files.leftovers(in: dir), [])

        let out = dir + "/x.raw"
        let ok = try Run.cli(["update-disk", qcow, "--workload", workload, "--output", out], environment: env)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(try Files.sha256(qcow), sha, "the qcow2 input must not change")
        XCTAssertEqual(try DiskImageFile.open(out).format, .raw)
        // Same bytes as updating the raw disk in place (SOURCE_DATE_EPOCH reached the times).
        let reference = dir + "/reference.raw"
        try Files.copy(base, reference)
        _ = try UpdateDisk.run(disk: reference, options: options(workload))
        XCTAssertEqual(try Files.sha256(out), try Files.sha256(reference))

        // --format picks another container for --output.
        let vmdk = dir + "/x.img"
        let asVMDK = try Run.cli(["update-disk", qcow, "--workload", workload, "--output", vmdk, "--format", "vmdk"],
                                 environment: env)
        XCTAssertEqual(asVMDK.status, 0, asVMDK.stderr)
        XCTAssertEqual(try DiskImageFile.open(vmdk).format, .vmdkStream)
        XCTAssertEqual(Files.leftovers(in: dir), [])
    }
}
