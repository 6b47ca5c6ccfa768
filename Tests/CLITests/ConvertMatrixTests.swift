import Foundation
import XCTest

/// Every readable input (ours and peer-made) → every writable format through the built binary,
/// each output checked against the source by independent tools: `qemu-img compare` for raw,
/// VHD and VMDK; GNU tar and gzip for tar.gz.
final class ConvertMatrixTests: XCTestCase {
    /// The 64 MiB GPT source disk, built once for the class.
    nonisolated(unsafe) static var shared: URL?
    var source: String { Self.shared!.path + "/source.raw" }
    static let sourceSize: UInt64 = 64 << 20

    override func setUpWithError() throws {
        if Self.shared == nil {
            let dir = try Disk.makeDir()
            try Disk.makeGPTDisk(at: dir.path + "/source.raw")
            Self.shared = dir
        }
    }

    override class func tearDown() {
        if let dir = shared { try? FileManager.default.removeItem(at: dir) }
        shared = nil
        super.tearDown()
    }

    /// An input image and what its virtual disk must equal.
    struct Input {
        let label: String
        let path: String
        /// Image holding the expected virtual disk, and its qemu format name.
        let reference: String
        let referenceFormat: String
        /// The input's virtual size (tar.gz inputs are padded to a GiB).
        let virtualSize: UInt64
    }

    // MARK: inputs

    func testFromRaw() throws {
        try convertToEveryFormat(Input(label: "raw", path: source, reference: source, referenceFormat: "raw",
                                       virtualSize: Self.sourceSize), fullTarCheck: true)
    }

    func testFromOurVHD() throws { try fromOurs("vhd") }
    func testFromOurVMDK() throws { try fromOurs("vmdk") }
    func testFromOurTarGz() throws { try fromOurs("tar.gz", virtualSize: Disk.gib) }

    func testFromQemuFixedVHD() throws {
        try fromQemu("vhd-fixed", ext: "vhd", ["-O", "vpc", "-o", "subformat=fixed,force_size=on"])
    }

    func testFromQemuDynamicVHD() throws {
        try fromQemu("vhd-dynamic", ext: "vhd", ["-O", "vpc", "-o", "subformat=dynamic,force_size=on"])
    }

    func testFromQemuStreamOptimizedVMDK() throws {
        try fromQemu("vmdk-stream", ext: "vmdk", ["-O", "vmdk", "-o", "subformat=streamOptimized"])
    }

    func testFromCompressedQcow2() throws {
        try fromQemu("qcow2-compressed", ext: "qcow2", ["-c", "-O", "qcow2"])
    }

    /// An overlay whose data is partly in the backing file (found by its relative name) and
    /// partly its own, including a zeroed cluster over backing data.
    func testFromQcow2WithBackingFile() throws {
        let dir = try Disk.tempDir(self).path
        try CLI.tool("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", source, dir + "/base.qcow2"])
        let overlay = dir + "/overlay.qcow2"
        try CLI.tool("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", overlay])
        try CLI.tool("qemu-io", ["-f", "qcow2", "-c", "write -P 0x5a 20M 1M", "-c", "write -z 9M 64k",
                                 "-c", "write -P 0x33 50M 192k", overlay])
        try convertToEveryFormat(Input(label: "qcow2-backing", path: overlay, reference: overlay,
                                       referenceFormat: "qcow2", virtualSize: Self.sourceSize))
    }

    /// What GCP's docs suggest: `tar --format=oldgnu -Sczf` (a sparse member).
    func testFromGNUSparseTarGz() throws {
        let dir = try Disk.tempDir(self).path
        let padded = try paddedCopy(in: dir)
        try CLI.tool("tar", ["-C", (padded as NSString).deletingLastPathComponent, "--format=oldgnu", "-Sczf",
                             dir + "/gnu.tar.gz", "disk.raw"])
        try convertToEveryFormat(Input(label: "tar.gz-gnu-sparse", path: dir + "/gnu.tar.gz", reference: source,
                                       referenceFormat: "raw", virtualSize: Disk.gib))
    }

    /// A plain (non-sparse) member compressed by pigz: many gzip blocks, 1 GiB of zeros.
    func testFromTarPigzTarGz() throws {
        let dir = try Disk.tempDir(self).path
        let padded = try paddedCopy(in: dir)
        try CLI.shell(#"tar -C "$1" -cf - disk.raw | pigz -6 > "$2""#,
                      [(padded as NSString).deletingLastPathComponent, dir + "/plain.tar.gz"])
        try convertToEveryFormat(Input(label: "tar.gz-pigz", path: dir + "/plain.tar.gz", reference: source,
                                       referenceFormat: "raw", virtualSize: Disk.gib))
    }

    /// Same input, same output bytes (no clock, no random IDs), for every writable format.
    func testOutputsAreByteIdenticalAcrossRuns() throws {
        let dir = try Disk.tempDir(self).path
        for ext in ["raw", "vhd", "vmdk", "tar.gz"] {
            let a = dir + "/a.\(ext)", b = dir + "/b.\(ext)"
            guard (try? convertOK(source, a)) != nil, (try? convertOK(source, b)) != nil else { continue }
            XCTAssertEqual(try Disk.sha256(a), try Disk.sha256(b), "\(ext): two runs differ")
            unlink(a); unlink(b)
        }
    }

    // MARK: helpers

    private func fromOurs(_ ext: String, virtualSize: UInt64 = sourceSize) throws {
        let dir = try Disk.tempDir(self).path
        let input = dir + "/ours.\(ext)"
        try convertOK(source, input)
        try convertToEveryFormat(Input(label: "\(ext) (ours)", path: input, reference: source,
                                       referenceFormat: "raw", virtualSize: virtualSize))
    }

    private func fromQemu(_ label: String, ext: String, _ options: [String]) throws {
        let dir = try Disk.tempDir(self).path
        let input = dir + "/qemu.\(ext)"
        try CLI.tool("qemu-img", ["convert", "-f", "raw"] + options + [source, input])
        try convertToEveryFormat(Input(label: label, path: input, reference: source, referenceFormat: "raw",
                                       virtualSize: Self.sourceSize))
    }

    /// A copy of the source named disk.raw, padded with a hole to 1 GiB (the GCP layout).
    private func paddedCopy(in dir: String) throws -> String {
        try FileManager.default.createDirectory(atPath: dir + "/member", withIntermediateDirectories: true)
        let padded = dir + "/member/disk.raw"
        try CLI.tool("cp", ["--sparse=always", source, padded])
        try Disk.setSize(padded, Disk.gib)
        return padded
    }

    private func convertToEveryFormat(_ input: Input, fullTarCheck: Bool = false,
                                      file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try Disk.tempDir(self).path
        // The expected virtual disk as raw, for checking tar.gz members with sha256.
        var referenceRaw = input.reference
        if input.referenceFormat != "raw" {
            referenceRaw = dir + "/reference.raw"
            try CLI.tool("qemu-img", ["convert", "-f", input.referenceFormat, "-O", "raw", input.reference, referenceRaw])
        }
        for ext in ["raw", "vhd", "vmdk", "tar.gz"] {
            let what = "\(input.label) → \(ext)"
            let output = dir + "/out.\(ext)"
            let r = try CLI.run(["convert", input.path, output])
            guard r.status == 0 else {
                XCTFail("\(what): cvm-cli exited \(r.status): \(r.stderr)", file: file, line: line)
                continue
            }
            XCTAssertEqual(r.stderr, "", "\(what): stderr must be silent when not a terminal", file: file, line: line)
            XCTAssertEqual(Disk.listing(dir).filter { $0.contains(".cvm-tmp-") }, [], "\(what): temp file left", file: file, line: line)
            switch ext {
            case "raw":
                XCTAssertEqual(Disk.size(output), input.virtualSize, "\(what): raw size", file: file, line: line)
                try Disk.assertSameContent(input.reference, input.referenceFormat, output, "raw", what, file: file, line: line)
            case "vhd":
                try checkVHD(output, input, what, file: file, line: line)
            case "vmdk":
                try checkVMDK(output, input, what, file: file, line: line)
            default:
                try checkTarGz(output, input, referenceRaw: referenceRaw, full: fullTarCheck, what, file: file, line: line)
            }
            unlink(output)
        }
    }

    private func checkVHD(_ output: String, _ input: Input, _ what: String, file: StaticString, line: UInt) throws {
        try Disk.assertSameContent(input.reference, input.referenceFormat, output, "vpc", what, file: file, line: line)
        let size = Disk.size(output)
        XCTAssertEqual(try Disk.read(output, count: 8, at: size - 512), Array("conectix".utf8), "\(what): no footer", file: file, line: line)
        let info = try Disk.qemuInfo(output, format: "vpc")
        let expected = Disk.roundUp(input.virtualSize, Disk.mib)
        XCTAssertEqual(info["virtual-size"] as? Int, Int(expected), "\(what): VHD virtual size must be the input rounded up to a MiB", file: file, line: line)
        XCTAssertEqual(size, expected + 512, "\(what): fixed VHD length", file: file, line: line)
    }

    private func checkVMDK(_ output: String, _ input: Input, _ what: String, file: StaticString, line: UInt) throws {
        try Disk.assertSameContent(input.reference, input.referenceFormat, output, "vmdk", what, file: file, line: line)
        let info = try Disk.qemuInfo(output, format: "vmdk")
        let specific = (info["format-specific"] as? [String: Any])?["data"] as? [String: Any]
        XCTAssertEqual(specific?["create-type"] as? String, "streamOptimized", "\(what): create type", file: file, line: line)
        XCTAssertGreaterThanOrEqual(info["virtual-size"] as? Int ?? 0, Int(input.virtualSize), "\(what): VMDK capacity", file: file, line: line)
        let check = try CLI.tool("qemu-img", ["check", "-f", "vmdk", output], allowFailure: true)
        XCTAssertEqual(check.status, 0, "\(what): qemu-img check: \(check.stdout) \(check.stderr)", file: file, line: line)
    }

    /// One member `disk.raw`, a whole number of GiB, holding the reference disk then zeros.
    /// `full` also runs `gzip -t` and hashes the whole member; otherwise only the first
    /// virtual-size bytes are hashed (the padding is covered by the full check of the raw input).
    private func checkTarGz(_ output: String, _ input: Input, referenceRaw: String, full: Bool, _ what: String,
                            file: StaticString, line: UInt) throws {
        let listFile = output + ".list"
        defer { unlink(listFile) }
        let contentSHA: String
        if full {
            let gz = try CLI.tool("gzip", ["-t", output], allowFailure: true)
            XCTAssertEqual(gz.status, 0, "\(what): gzip -t: \(gz.stderr)", file: file, line: line)
            let list = try CLI.tool("tar", ["-tvzf", output], allowFailure: true)
            XCTAssertEqual(list.status, 0, "\(what): tar -tvzf: \(list.stderr)", file: file, line: line)
            try Data(list.stdout.utf8).write(to: URL(fileURLWithPath: listFile))
            let r = try CLI.shell(#"set -e; tar -xzOf "$1" disk.raw | sha256sum"#, [output], allowFailure: true, file: file, line: line)
            XCTAssertEqual(r.status, 0, "\(what): tar -xzOf: \(r.stderr)", file: file, line: line)
            contentSHA = String(r.stdout.prefix(64))
        } else {
            // tar prints the verbose listing on stderr when extracting to stdout.
            let r = try CLI.shell(#"tar -xvvzOf "$1" disk.raw 2>"$2" | head -c "$3" | sha256sum"#,
                                  [output, listFile, String(Disk.size(referenceRaw))], file: file, line: line)
            contentSHA = String(r.stdout.prefix(64))
        }
        let listing = ((try? String(contentsOfFile: listFile, encoding: .utf8)) ?? "")
            .split(separator: "\n").filter { !$0.hasPrefix("tar:") }
        XCTAssertEqual(listing.count, 1, "\(what): expected exactly one member: \(listing)", file: file, line: line)
        let fields = listing.first?.split(separator: " ", omittingEmptySubsequences: true) ?? []
        XCTAssertEqual(fields.last.map(String.init), "disk.raw", "\(what): member name", file: file, line: line)
        let memberSize = fields.count > 2 ? UInt64(fields[2]) ?? 0 : 0
        XCTAssertEqual(memberSize, Disk.roundUp(input.virtualSize, Disk.gib), "\(what): member size must be the disk rounded up to a GiB", file: file, line: line)
        let expected: String
        if full {
            expected = String(try CLI.shell(#"{ cat "$1"; head -c "$2" /dev/zero; } | sha256sum"#,
                                            [referenceRaw, String(memberSize > Disk.size(referenceRaw) ? memberSize - Disk.size(referenceRaw) : 0)]).stdout.prefix(64))
        } else {
            expected = try Disk.sha256(referenceRaw)
        }
        XCTAssertEqual(contentSHA, expected, "\(what): disk.raw content differs from the source", file: file, line: line)
    }
}
