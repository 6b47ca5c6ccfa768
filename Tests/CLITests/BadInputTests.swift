import Foundation
import XCTest

/// Corrupted, truncated and misused inputs: each must end with one clear error line naming the
/// file, exit 1 (bad input) or 64 (usage), no crash, the input unchanged, and nothing (no output,
/// no `.cvm-tmp-` file) left in the output folder.
final class BadInputTests: XCTestCase {
    /// One row of the table.
    struct Case {
        let name: String
        /// cvm-cli arguments.
        let args: [String]
        let expectedStatus: Int32
        /// Text stderr must contain (the file or flag at fault).
        let names: String
        /// Files that must be byte-for-byte unchanged (inputs, an existing output).
        var unchanged: [String] = []
    }

    private var work = ""
    private var outDir = ""

    override func setUpWithError() throws {
        let dir = try Disk.tempDir(self)
        work = dir.path + "/in"
        outDir = dir.path + "/out"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
    }

    // MARK: the table, by format

    func testEmptyFiles() throws {
        var cases: [Case] = []
        for name in ["empty.raw", "empty.vhd", "empty.vmdk", "empty.qcow2", "empty.tar.gz", "empty"] {
            let path = work + "/" + name
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            cases.append(convertCase("empty file \(name)", path))
            cases.append(Case(name: "inspect empty file \(name)", args: ["inspect", path], expectedStatus: 1, names: path, unchanged: [path]))
        }
        try check(cases)
    }

    func testDamagedGPT() throws {
        let disk = try sourceDisk()
        let badHeader = work + "/bad-header-crc.raw"
        try copy(disk, badHeader)
        try flip(badHeader, at: 512 + 16)                 // primary header CRC field
        let badEntries = work + "/bad-entries-crc.raw"
        try copy(disk, badEntries)
        try flip(badEntries, at: 1024 + 56)               // first entry's name, CRCs left as they were
        try check([
            Case(name: "GPT header CRC mismatch", args: ["inspect", badHeader], expectedStatus: 1, names: badHeader, unchanged: [badHeader]),
            Case(name: "GPT entries CRC mismatch", args: ["inspect", badEntries], expectedStatus: 1, names: badEntries, unchanged: [badEntries]),
            Case(name: "GPT entries CRC mismatch (json)", args: ["inspect", "--json", badEntries], expectedStatus: 1, names: badEntries, unchanged: [badEntries]),
        ])
    }

    func testDamagedVHD() throws {
        let disk = try sourceDisk()
        let fixed = work + "/fixed.vhd"
        try CLI.tool("qemu-img", ["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", disk, fixed])
        let dynamic = work + "/dynamic.vhd"
        try CLI.tool("qemu-img", ["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", disk, dynamic])

        let noFooter = work + "/no-footer.vhd"
        try copy(fixed, noFooter)
        try Disk.setSize(noFooter, Disk.size(fixed) - 512)
        let badChecksum = work + "/bad-checksum.vhd"
        try copy(fixed, badChecksum)
        try flip(badChecksum, at: Disk.size(fixed) - 512 + 64)

        // Dynamic: footer copy at 0 → data offset → dynamic header → BAT; point block 0 past the end.
        let batBeyond = work + "/bat-beyond-end.vhd"
        try copy(dynamic, batBeyond)
        let headerOffset = try be64(batBeyond, at: 16)
        let batOffset = try be64(batBeyond, at: headerOffset + 16)
        try Disk.write(bigEndian32(UInt32(Disk.size(dynamic) / 512 + 4096)), to: batBeyond, at: batOffset)
        let dynamicTruncated = work + "/dynamic-truncated.vhd"
        try copy(dynamic, dynamicTruncated)
        try Disk.setSize(dynamicTruncated, Disk.size(dynamic) / 2)
        let badCookie = work + "/bad-dynamic-header.vhd"
        try copy(dynamic, badCookie)
        try Disk.write(Array("xxsparse".utf8), to: badCookie, at: headerOffset)

        try check([
            convertCase("truncated VHD (footer gone, name says VHD)", noFooter),
            convertCase("VHD footer checksum flipped", badChecksum),
            convertCase("dynamic VHD BAT entry beyond the file", batBeyond),
            convertCase("dynamic VHD truncated", dynamicTruncated),
            convertCase("dynamic VHD header cookie damaged", badCookie),
        ])
    }

    func testDamagedVMDK() throws {
        let disk = try sourceDisk()
        let vmdk = work + "/stream.vmdk"
        try CLI.tool("qemu-img", ["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", disk, vmdk])
        let overhead = try le64(vmdk, at: 64) * 512           // first grain marker
        let capacity = try le64(vmdk, at: 12)

        let badMagic = work + "/bad-magic.vmdk"
        try copy(vmdk, badMagic)
        try Disk.write(Array("XDMV".utf8), to: badMagic, at: 0)
        let badVersion = work + "/bad-version.vmdk"
        try copy(vmdk, badVersion)
        try Disk.write([99, 0, 0, 0], to: badVersion, at: 4)
        let grainBeyond = work + "/grain-beyond-capacity.vmdk"
        try copy(vmdk, grainBeyond)
        try Disk.write(littleEndian64(capacity + 1024), to: grainBeyond, at: overhead)
        let truncated = work + "/truncated.vmdk"
        try copy(vmdk, truncated)
        try Disk.setSize(truncated, Disk.size(vmdk) / 2)
        let badDeflate = work + "/bad-deflate.vmdk"
        try copy(vmdk, badDeflate)
        // Marker: LBA (8) + size (4), then the zlib stream; 0xFF… is an invalid deflate block type.
        try Disk.write([UInt8](repeating: 0xFF, count: 32), to: badDeflate, at: overhead + 12 + 2)

        try check([
            convertCase("VMDK bad magic (name says VMDK)", badMagic),
            convertCase("VMDK unsupported version", badVersion),
            convertCase("VMDK grain beyond capacity", grainBeyond),
            convertCase("VMDK truncated", truncated),
            convertCase("VMDK corrupt deflate", badDeflate),
        ])
    }

    func testDamagedTarGz() throws {
        let member = work + "/member"
        try FileManager.default.createDirectory(atPath: member, withIntermediateDirectories: true)
        try copy(try sourceDisk(), member + "/disk.raw")
        try Disk.setSize(member + "/disk.raw", Disk.gib)
        let good = work + "/good.tar.gz"
        try CLI.tool("tar", ["-C", member, "--format=oldgnu", "-Sczf", good, "disk.raw"])

        let truncated = work + "/truncated.tar.gz"
        try copy(good, truncated)
        try Disk.setSize(truncated, Disk.size(good) / 2)
        try Data("extra\n".utf8).write(to: URL(fileURLWithPath: member + "/extra.txt"))
        let twoMembers = work + "/two-members.tar.gz"
        try CLI.tool("tar", ["-C", member, "--format=oldgnu", "-Sczf", twoMembers, "disk.raw", "extra.txt"])
        try CLI.tool("mv", [member + "/disk.raw", member + "/root.img"])
        let wrongName = work + "/wrong-name.tar.gz"
        try CLI.tool("tar", ["-C", member, "--format=oldgnu", "-Sczf", wrongName, "root.img"])
        // A tar header whose checksum field no longer matches, then gzip'd.
        let badChecksum = work + "/bad-header-checksum.tar.gz"
        try CLI.tool("mv", [member + "/root.img", member + "/disk.raw"])
        try CLI.tool("tar", ["-C", member, "--format=oldgnu", "-Scf", work + "/plain.tar", "disk.raw"])
        try Disk.write(Array("0000000\0".utf8), to: work + "/plain.tar", at: 148)
        try CLI.shell(#"gzip -c "$1" > "$2""#, [work + "/plain.tar", badChecksum])
        let garbage = work + "/garbage.tar.gz"
        try Disk.write([0x1F, 0x8B, 0x08, 0x00] + Disk.pseudoRandomBytes(count: 4096, seed: 9), to: garbage, at: 0)
        try FileManager.default.removeItem(atPath: member)
        unlink(work + "/plain.tar")

        try check([
            convertCase("tar.gz truncated", truncated),
            convertCase("tar.gz with a second member", twoMembers),
            convertCase("tar.gz with a wrong member name", wrongName),
            convertCase("tar.gz corrupt tar header checksum", badChecksum),
            convertCase("tar.gz magic then garbage", garbage),
        ])
    }

    func testDamagedQcow2() throws {
        let disk = try sourceDisk()
        let qcow = work + "/good.qcow2"
        try CLI.tool("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", disk, qcow])
        let truncated = work + "/truncated.qcow2"
        try copy(qcow, truncated)
        try Disk.setSize(truncated, Disk.size(qcow) / 2)
        let l1Beyond = work + "/l1-beyond-end.qcow2"
        try copy(qcow, l1Beyond)
        try Disk.write(bigEndian64(1 << 40), to: l1Beyond, at: 40)     // l1_table_offset
        let noBacking = work + "/missing-backing.qcow2"
        try CLI.tool("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "gone.qcow2", "-F", "qcow2", "-u", noBacking, "64M"])
        try check([
            convertCase("qcow2 truncated", truncated),
            convertCase("qcow2 L1 table beyond the end", l1Beyond),
            convertCase("qcow2 backing file missing", noBacking),
        ])
    }

    func testMisuse() throws {
        let disk = try sourceDisk()
        let existing = outDir + "/existing.vhd"
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: existing))
        let link = work + "/link-to-input.raw"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: disk)
        let missing = work + "/does-not-exist.raw"
        try check([
            Case(name: "a directory as input", args: ["convert", work, outDir + "/out.raw"], expectedStatus: 1, names: work),
            Case(name: "inspect a directory", args: ["inspect", work], expectedStatus: 1, names: work),
            Case(name: "a missing file", args: ["convert", missing, outDir + "/out.raw"], expectedStatus: 1, names: missing),
            Case(name: "inspect a missing file", args: ["inspect", missing], expectedStatus: 1, names: missing),
            Case(name: "output == input", args: ["convert", disk, disk, "--force", "--format", "raw"], expectedStatus: 64, names: disk, unchanged: [disk]),
            Case(name: "output is a symlink to the input", args: ["convert", disk, link, "--force", "--format", "raw"], expectedStatus: 64, names: link, unchanged: [disk]),
            Case(name: "existing output without --force", args: ["convert", disk, existing], expectedStatus: 64, names: existing, unchanged: [disk, existing]),
            Case(name: "unknown --format", args: ["convert", disk, outDir + "/out.img", "--format", "qcow3"], expectedStatus: 64, names: "--format", unchanged: [disk]),
            Case(name: "unknown option", args: ["convert", disk, outDir + "/out.img", "--bogus"], expectedStatus: 64, names: "--bogus", unchanged: [disk]),
            Case(name: "--level out of range", args: ["convert", disk, outDir + "/out.vmdk", "--level", "0"], expectedStatus: 64, names: "--level", unchanged: [disk]),
            Case(name: "output name without a format", args: ["convert", disk, outDir + "/out.bin"], expectedStatus: 64, names: outDir + "/out.bin", unchanged: [disk]),
            Case(name: "output folder missing", args: ["convert", disk, outDir + "/no/such/dir/out.raw"], expectedStatus: 1, names: outDir + "/no/such/dir/out.raw", unchanged: [disk]),
        ])
    }

    // MARK: checking

    /// A `convert` of `input` into the output folder that must fail with status 1.
    private func convertCase(_ name: String, _ input: String) -> Case {
        Case(name: name, args: ["convert", input, outDir + "/out.raw"], expectedStatus: 1, names: input, unchanged: [input])
    }

    private func check(_ cases: [Case], file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            var before: [String: String] = [:]
            for path in c.unchanged { before[path] = try Disk.sha256(path) }
            let outBefore = Disk.listing(outDir)
            let inBefore = Disk.listing(work)
            let r = try CLI.run(c.args, timeout: 300)
            let what = "[\(c.name)] cvm-cli \(c.args.joined(separator: " "))"
            XCTAssertNil(r.signal, "\(what): killed by signal \(r.signal ?? 0)", file: file, line: line)
            XCTAssertEqual(r.status, c.expectedStatus, "\(what): exit status; stderr: \(r.stderr)", file: file, line: line)
            XCTAssertEqual(r.stderrLines.count, 1, "\(what): stderr must be exactly one line, got: \(r.stderr)", file: file, line: line)
            let first = r.stderrLines.first ?? ""
            print("  [\(c.name)] exit \(r.status): \(first)")
            XCTAssertTrue(first.hasPrefix("cvm-cli: error:"), "\(what): stderr must start with 'cvm-cli: error:', got: \(r.stderr)", file: file, line: line)
            XCTAssertTrue(first.contains(c.names), "\(what): the error must name \(c.names), got: \(r.stderr)", file: file, line: line)
            for bad in ["Fatal error", "Stack dump", "Backtrace", "Segmentation", "Illegal instruction"] {
                XCTAssertFalse(r.stderr.contains(bad), "\(what): crashed: \(r.stderr)", file: file, line: line)
            }
            XCTAssertEqual(r.stdout, "", "\(what): nothing on stdout", file: file, line: line)
            for path in c.unchanged {
                XCTAssertEqual(try Disk.sha256(path), before[path], "\(what): \(path) was modified", file: file, line: line)
            }
            XCTAssertEqual(Disk.listing(outDir), outBefore, "\(what): output folder changed (output or temp file left)", file: file, line: line)
            XCTAssertEqual(Disk.listing(work), inBefore, "\(what): input folder changed (temp file left)", file: file, line: line)
        }
    }

    // MARK: building inputs

    /// The 64 MiB GPT test disk, built once per test.
    private func sourceDisk() throws -> String {
        let path = work + "/disk.raw"
        if access(path, F_OK) != 0 { try Disk.makeGPTDisk(at: path, size: 64 << 20) }
        return path
    }

    private func copy(_ from: String, _ to: String) throws {
        try CLI.tool("cp", ["--sparse=always", from, to])
    }

    private func flip(_ path: String, at offset: UInt64) throws {
        let b = try Disk.read(path, count: 1, at: offset)
        try Disk.write([b[0] ^ 0xFF], to: path, at: offset)
    }

    private func be64(_ path: String, at offset: UInt64) throws -> UInt64 {
        try Disk.read(path, count: 8, at: offset).reduce(0) { $0 << 8 | UInt64($1) }
    }

    private func le64(_ path: String, at offset: UInt64) throws -> UInt64 {
        try Disk.read(path, count: 8, at: offset).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    private func bigEndian32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }
    private func bigEndian64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) } }
    private func littleEndian64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}
