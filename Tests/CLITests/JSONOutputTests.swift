import Foundation
import XCTest

/// `inspect --json` and `convert --json` shapes and values, checked against sgdisk (GUIDs,
/// LBAs, names), dumpe2fs (label, UUID, features) and qemu-img (virtual size); progress only on a
/// terminal.
final class JSONOutputTests: XCTestCase {
    nonisolated(unsafe) static var shared: URL?
    nonisolated(unsafe) static var expected: Expected?
    var source: String { Self.shared!.path + "/source.raw" }

    /// What the oracles say about the source disk.
    struct Expected {
        struct Partition { let name, typeGUID, uniqueGUID: String; let firstLBA, lastLBA, size: UInt64 }
        let diskGUID: String
        let partitions: [Partition]
        let label, uuid: String
        let isExt4: Bool
    }

    override func setUpWithError() throws {
        if Self.shared == nil {
            let dir = try Disk.makeDir()
            try Disk.makeGPTDisk(at: dir.path + "/source.raw")
            Self.shared = dir
            Self.expected = try Self.askOracles(dir.path + "/source.raw")
        }
    }

    override class func tearDown() {
        if let dir = shared { try? FileManager.default.removeItem(at: dir) }
        shared = nil
        super.tearDown()
    }

    // MARK: inspect --json, every format

    func testInspectRaw() throws { try checkInspect(source, format: "raw", qemuFormat: "raw") }
    func testInspectOurVHD() throws { try checkInspect(try ours("vhd"), format: "vhd-fixed", qemuFormat: "vpc") }
    func testInspectOurVMDK() throws { try checkInspect(try ours("vmdk"), format: "vmdk-stream", qemuFormat: "vmdk") }
    func testInspectOurTarGz() throws { try checkInspect(try ours("tar.gz"), format: "gcp-tar-gz", qemuFormat: nil) }

    func testInspectQemuDynamicVHD() throws {
        let path = try Disk.tempDir(self).path + "/dynamic.vhd"
        try CLI.tool("qemu-img", ["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", source, path])
        try checkInspect(path, format: "vhd-dynamic", qemuFormat: "vpc")
    }

    func testInspectQcow2() throws {
        let path = try Disk.tempDir(self).path + "/disk.qcow2"
        try CLI.tool("qemu-img", ["convert", "-c", "-f", "raw", "-O", "qcow2", source, path])
        try checkInspect(path, format: "qcow2", qemuFormat: "qcow2")
    }

    // MARK: convert --json and progress

    func testConvertJSONHasTheFields() throws {
        let dir = try Disk.tempDir(self).path
        let formats = ["raw": "raw", "vhd": "vhd-fixed", "vmdk": "vmdk-stream", "tar.gz": "gcp-tar-gz"]
        var dataBytes: Set<Int> = []
        for ext in ["raw", "vhd", "vmdk", "tar.gz"] {
            let out = dir + "/out.\(ext)"
            let r = try CLI.run(["convert", source, out, "--json"])
            guard r.status == 0 else { XCTFail("\(ext): exit \(r.status): \(r.stderr)"); continue }
            XCTAssertEqual(r.stderr, "", "\(ext): stderr")
            XCTAssertEqual(r.stdout.split(separator: "\n").count, 1, "\(ext): one JSON line: \(r.stdout)")
            guard let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
                XCTFail("\(ext): not a JSON object: \(r.stdout)"); continue
            }
            XCTAssertEqual(Set(obj.keys), ["input", "input_format", "output", "output_format", "virtual_size",
                                           "output_bytes", "data_bytes", "seconds"], "\(ext): keys")
            XCTAssertEqual(obj["input"] as? String, source)
            XCTAssertEqual(obj["output"] as? String, out)
            XCTAssertEqual(obj["input_format"] as? String, "raw")
            XCTAssertEqual(obj["output_format"] as? String, formats[ext], "\(ext): output_format")
            let expectedVirtual = ext == "tar.gz" ? Int(Disk.gib) : Int(ConvertMatrixTests.sourceSize)
            XCTAssertEqual(obj["virtual_size"] as? Int, expectedVirtual, "\(ext): virtual_size")
            XCTAssertEqual(obj["output_bytes"] as? Int, Int(Disk.size(out)), "\(ext): output_bytes is the file length")
            let data = obj["data_bytes"] as? Int ?? -1
            XCTAssertGreaterThan(data, 7 << 20, "\(ext): data_bytes")
            XCTAssertLessThanOrEqual(data, Int(ConvertMatrixTests.sourceSize), "\(ext): data_bytes")
            dataBytes.insert(data)
            XCTAssertGreaterThanOrEqual((obj["seconds"] as? Double) ?? -1, 0, "\(ext): seconds")
        }
        XCTAssertLessThanOrEqual(dataBytes.count, 1, "data_bytes differs between output formats of one input: \(dataBytes)")
    }

    /// `--json` (and `--verbose`) may come before the subcommand, as users type them.
    func testGlobalFlagsAreAcceptedBeforeTheSubcommand() throws {
        let before = try CLI.run(["--json", "inspect", source])
        let after = try CLI.run(["inspect", source, "--json"])
        XCTAssertEqual(before.status, 0, before.stderr)
        XCTAssertEqual(before.stdout, after.stdout)
        XCTAssertNotNil(try JSONSerialization.jsonObject(with: Data(before.stdout.utf8)) as? [String: Any])
        // A subcommand without the flag says so, as a usage error.
        let unknown = try CLI.run(["--json", "workload", "check", "--help-not-a-flag"])
        XCTAssertEqual(unknown.status, 64, unknown.stderr)
        let verbose = try CLI.run(["--verbose", "golden", "verify", "/nonexistent.json", "/nonexistent.pem"])
        XCTAssertEqual(verbose.status, 64, "golden verify has no --verbose: \(verbose.stderr)")
        XCTAssertTrue(verbose.stderr.contains("--verbose"), verbose.stderr)
    }

    func testProgressIsSilentWhenStderrIsNotATerminal() throws {
        let dir = try Disk.tempDir(self).path
        let r = try convertOK(source, dir + "/out.img")
        XCTAssertEqual(r.stderr, "", "no progress when stderr is a file")
        XCTAssertEqual(r.stdout.split(separator: "\n").count, 1, "one summary line: \(r.stdout)")
        XCTAssertTrue(r.stdout.contains(dir + "/out.img"), r.stdout)
    }

    /// Under a pseudo-terminal (`script`) progress appears, except with --json.
    func testProgressShowsOnATerminal() throws {
        let dir = try Disk.tempDir(self).path
        let cli = try CLI.binary()
        let plain = try CLI.tool("script", ["-qec", "'\(cli)' convert '\(source)' '\(dir)/a.img'", "/dev/null"])
        XCTAssertTrue(plain.stdout.contains("convert:"), "no progress line on a terminal: \(plain.stdout)")
        let json = try CLI.tool("script", ["-qec", "'\(cli)' convert --json '\(source)' '\(dir)/b.img'", "/dev/null"])
        XCTAssertFalse(json.stdout.contains("convert:"), "progress mixed into --json output: \(json.stdout)")
    }

    // MARK: helpers

    private func ours(_ ext: String) throws -> String {
        let path = try Disk.tempDir(self).path + "/disk.\(ext)"
        try convertOK(source, path)
        return path
    }

    private func checkInspect(_ path: String, format: String, qemuFormat: String?,
                              file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try CLI.run(["inspect", "--json", path])
        guard r.status == 0 else {
            XCTFail("inspect \(path) exited \(r.status): \(r.stderr)", file: file, line: line)
            return
        }
        XCTAssertEqual(r.stderr, "", file: file, line: line)
        guard let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
            XCTFail("not a JSON object: \(r.stdout)", file: file, line: line)
            return
        }
        let want = try XCTUnwrap(Self.expected)
        XCTAssertEqual(Set(obj.keys), ["format", "virtual_size", "allocated_bytes", "disk_guid", "partitions"], file: file, line: line)
        XCTAssertEqual(obj["format"] as? String, format, file: file, line: line)
        let virtualSize: Int
        if let qemuFormat {
            virtualSize = try Disk.qemuInfo(path, format: qemuFormat)["virtual-size"] as? Int ?? -1
        } else {
            virtualSize = Int(Disk.gib)    // tar.gz: the member, rounded up to a GiB
        }
        XCTAssertEqual(obj["virtual_size"] as? Int, virtualSize, "virtual_size vs qemu-img info", file: file, line: line)
        let allocated = obj["allocated_bytes"] as? Int ?? -1
        XCTAssertGreaterThanOrEqual(allocated, 7 << 20, "allocated_bytes covers the data written", file: file, line: line)
        XCTAssertLessThanOrEqual(allocated, virtualSize, "allocated_bytes", file: file, line: line)
        XCTAssertEqual(obj["disk_guid"] as? String, want.diskGUID, file: file, line: line)

        let parts = obj["partitions"] as? [[String: Any]] ?? []
        XCTAssertEqual(parts.count, want.partitions.count, "partitions", file: file, line: line)
        for (i, (p, w)) in zip(parts, want.partitions).enumerated() {
            let what = "partition \(i + 1)"
            XCTAssertEqual(Set(p.keys), ["index", "name", "type_guid", "unique_guid", "first_lba", "last_lba", "size", "filesystem"], what, file: file, line: line)
            XCTAssertEqual(p["index"] as? Int, i + 1, what, file: file, line: line)
            XCTAssertEqual(p["name"] as? String, w.name, what, file: file, line: line)
            XCTAssertEqual((p["type_guid"] as? String)?.uppercased(), w.typeGUID, what, file: file, line: line)
            XCTAssertEqual((p["unique_guid"] as? String)?.uppercased(), w.uniqueGUID, what, file: file, line: line)
            XCTAssertEqual((p["first_lba"] as? Int).map(UInt64.init), w.firstLBA, what, file: file, line: line)
            XCTAssertEqual((p["last_lba"] as? Int).map(UInt64.init), w.lastLBA, what, file: file, line: line)
            XCTAssertEqual((p["size"] as? Int).map(UInt64.init), w.size, what, file: file, line: line)
            if w.name == "data" {
                let fs = p["filesystem"] as? [String: Any] ?? [:]
                XCTAssertEqual(Set(fs.keys), ["type", "label", "uuid"], what, file: file, line: line)
                XCTAssertEqual(fs["type"] as? String, want.isExt4 ? "ext4" : "?", what, file: file, line: line)
                XCTAssertEqual(fs["label"] as? String, want.label, what, file: file, line: line)
                XCTAssertEqual(fs["uuid"] as? String, want.uuid, what, file: file, line: line)
            } else {
                XCTAssertTrue(p["filesystem"] is NSNull, "\(what): filesystem must be null: \(String(describing: p["filesystem"]))", file: file, line: line)
            }
        }
    }

    /// Reads the partitions with `sgdisk -p` / `sgdisk -i N` and the filesystem with `dumpe2fs -h`.
    private static func askOracles(_ disk: String) throws -> Expected {
        func value(_ text: String, _ key: String) -> String {
            guard let l = text.split(separator: "\n").first(where: { $0.hasPrefix(key) }) else { return "" }
            return l.dropFirst(key.count).trimmingCharacters(in: .whitespaces)
        }
        let table = try CLI.tool("sgdisk", ["-p", disk]).stdout
        var partitions: [Expected.Partition] = []
        for n in 1...3 {
            let info = try CLI.tool("sgdisk", ["-i", String(n), disk]).stdout
            let first = UInt64(value(info, "First sector:").split(separator: " ").first ?? "") ?? 0
            let last = UInt64(value(info, "Last sector:").split(separator: " ").first ?? "") ?? 0
            let sectors = UInt64(value(info, "Partition size:").split(separator: " ").first ?? "") ?? 0
            let name = value(info, "Partition name:").trimmingCharacters(in: CharacterSet(charactersIn: "'"))
            partitions.append(.init(name: name,
                                    typeGUID: String(value(info, "Partition GUID code:").prefix(36)),
                                    uniqueGUID: value(info, "Partition unique GUID:"),
                                    firstLBA: first, lastLBA: last, size: sectors * 512))
        }
        let fsImage = disk + ".p3"
        defer { unlink(fsImage) }
        let p3 = partitions[2]
        try CLI.tool("dd", ["if=\(disk)", "of=\(fsImage)", "bs=512", "skip=\(p3.firstLBA)",
                            "count=\(Disk.filesystemSize / 512)", "status=none"])
        let sb = try CLI.tool("dumpe2fs", ["-h", fsImage]).stdout
        return Expected(diskGUID: value(table, "Disk identifier (GUID):"), partitions: partitions,
                        label: value(sb, "Filesystem volume name:"), uuid: value(sb, "Filesystem UUID:"),
                        isExt4: value(sb, "Filesystem features:").split(separator: " ").contains("extent"))
    }
}
