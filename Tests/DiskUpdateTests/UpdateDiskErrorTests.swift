import Foundation
import XCTest
import CVMSupport
import DiskImage
@testable import DiskUpdate

/// Refusals (bad workload, workload too big, no or several data partitions), `--partition`,
/// and `--json`, through the built cvm-cli where the exit status matters.
final class UpdateDiskErrorTests: XCTestCase {
    static let time: UInt64 = 1_600_000_000
    let env = ["SOURCE_DATE_EPOCH": "\(UpdateDiskErrorTests.time)"]

    func options(_ workload: String, partition: Int? = nil) -> UpdateDisk.Options {
        var o = UpdateDisk.Options()
        o.workloadPath = workload
        o.partitionIndex = partition
        o.timestamp = Self.time
        return o
    }

    /// The CVMError `body` throws (fails the test when it does not throw one).
    func cvmError(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> CVMError? {
        do {
            try body()
            XCTFail("expected an error", file: file, line: line)
        } catch let e as CVMError {
            return e
        } catch {
            XCTFail("expected a CVMError, got \(error)", file: file, line: line)
        }
        return nil
    }

    func testWorkloadWithErrorsWritesNothing() throws {
        let dir = try Files.tempDir(self)
        let disk = dir + "/disk.raw", workload = dir + "/workload"
        try BaseDisk.make(at: disk)
        try Workloads.make(at: workload)
        try Files.write("services: [not, a, mapping\n", to: workload + "/docker-compose.yml")
        let sha = try Files.sha256(disk)
        let r = try Run.cli(["update-disk", disk, "--workload", workload], environment: env)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("docker-compose.yml"), r.stderr)
        XCTAssertTrue(r.stderr.contains("nothing was written"), r.stderr)
        XCTAssertEqual(r.stdout, "")
        XCTAssertEqual(try Files.sha256(disk), sha)
        XCTAssertEqual(Files.leftovers(in: dir), [])

        // --format without --output would re-encode the disk under its old name: refused.
        let format = try Run.cli(["update-disk", disk, "--workload", workload, "--format", "vmdk"], environment: env)
        XCTAssertEqual(format.status, 64, format.stderr)
        XCTAssertTrue(format.stderr.contains("--output"), format.stderr)
        XCTAssertEqual(try Files.sha256(disk), sha)

        // A missing workload folder is a usage error.
        let missing = try Run.cli(["update-disk", disk, "--workload", dir + "/nope"], environment: env)
        XCTAssertEqual(missing.status, 64, missing.stderr)
        XCTAssertTrue(missing.stderr.contains("nope"), missing.stderr)
        XCTAssertEqual(try Files.sha256(disk), sha)
    }

    func testWorkloadTooBigNamesTheSizesAndWritesNothing() throws {
        let dir = try Files.tempDir(self)
        let disk = dir + "/disk.raw", workload = dir + "/workload"
        try BaseDisk.make(at: disk)   // 22 MiB data partition
        try Workloads.make(at: workload)
        try Files.write(Files.pseudoRandomBytes(count: 30 << 20, seed: 5), to: workload + "/config/big.bin", at: 0)
        for (name, convertTo) in [("disk.raw", nil), ("disk.vmdk", "disk.vmdk")] as [(String, String?)] {
            let path = dir + "/" + name
            if let convertTo {
                let c = try Run.cli(["convert", disk, dir + "/" + convertTo, "--force"])
                XCTAssertEqual(c.status, 0, c.stderr)
            }
            let sha = try Files.sha256(path)
            let r = try Run.cli(["update-disk", path, "--workload", workload], environment: env)
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("30.0 MiB"), "the workload's size: \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("22.0 MiB"), "the partition's size: \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("do not fit"), r.stderr)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "one line: \(r.stderr)")
            XCTAssertEqual(try Files.sha256(path), sha, "\(name) must be unchanged")
            XCTAssertEqual(Files.leftovers(in: dir), [])
        }
    }

    func testMissingDataPartitionListsThePartitions() throws {
        let dir = try Files.tempDir(self)
        let disk = dir + "/disk.raw", workload = dir + "/workload"
        try BaseDisk.make(at: disk, fileSystems: [.init(gptName: "other", label: "stuff", sizeMiB: 16, withTree: false)])
        try Workloads.make(at: workload)
        let sha = try Files.sha256(disk)
        let e = cvmError { _ = try UpdateDisk.run(disk: disk, options: options(workload)) }
        let message = e?.message ?? ""
        for part in ["1 'esp'", "2 'root'", "3 'other' (ext4 label 'stuff')", "--partition", "no partition named 'data'"] {
            XCTAssertTrue(message.contains(part), "'\(part)' missing from: \(message)")
        }
        let r = try Run.cli(["update-disk", disk, "--workload", workload], environment: env)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("3 'other'"), r.stderr)
        XCTAssertEqual(try Files.sha256(disk), sha)

        // --partition makes it explicit.
        let forced = try Run.cli(["update-disk", disk, "--workload", workload, "--partition", "3", "--json"], environment: env)
        XCTAssertEqual(forced.status, 0, forced.stderr)
        let fs = dir + "/p3.fs"
        let p3 = try XCTUnwrap(try GPTInfo.partitions(disk).first { $0.index == 3 })
        try Files.extract(disk, offset: p3.offset, length: p3.size, to: fs)
        try Debugfs.assertClean(fs)
        XCTAssertEqual(try Debugfs.identity(fs).label, "stuff")
        try Checks.assertWorkload(in: fs, equals: workload, time: Self.time, scratch: dir)
    }

    func testAmbiguousDataPartitionAndPartitionOverride() throws {
        let dir = try Files.tempDir(self)
        let disk = dir + "/disk.raw", workload = dir + "/workload"
        // p3 is named "data", p4 is labelled "data": both could be the data partition.
        try BaseDisk.make(at: disk, fileSystems: [.init(gptName: "data", label: "first", sizeMiB: 16),
                                                  .init(gptName: "second", label: "data", sizeMiB: 16)])
        try Workloads.make(at: workload)
        let before = dir + "/before.raw"
        try Files.copy(disk, before)
        let e = cvmError { _ = try UpdateDisk.run(disk: disk, options: options(workload)) }
        let message = e?.message ?? ""
        for part in ["several partitions", "(3, 4)", "3 'data' (ext4 label 'first')", "4 'second' (ext4 label 'data')", "--partition N"] {
            XCTAssertTrue(message.contains(part), "'\(part)' missing from: \(message)")
        }
        XCTAssertEqual(try Files.sha256(disk), try Files.sha256(before))

        // --partition 4 rebuilds p4 only.
        let r = try UpdateDisk.run(disk: disk, options: options(workload, partition: 4))
        XCTAssertEqual(r.partition.index, 4)
        XCTAssertEqual(r.partition.name, "second")
        let parts = try GPTInfo.partitions(disk)
        let p3 = parts[2], p4 = parts[3]
        try Checks.assertOutsideUnchanged(before: before, after: disk, partition: p4)
        XCTAssertEqual(try Files.sha256(disk, offset: p3.offset, length: p3.size),
                       try Files.sha256(before, offset: p3.offset, length: p3.size), "p3 must not change")
        let fs = dir + "/p4.fs", old = dir + "/p4-old.fs"
        try Files.extract(disk, offset: p4.offset, length: p4.size, to: fs)
        try Files.extract(before, offset: p4.offset, length: p4.size, to: old)
        try Debugfs.assertClean(fs)
        try Checks.assertWorkload(in: fs, equals: workload, time: Self.time, scratch: dir)
        try Checks.assertKeptTree(old: old, new: fs, scratch: dir)

        // Partitions that cannot be the data partition.
        let none = try Run.cli(["update-disk", disk, "--workload", workload, "--partition", "9"], environment: env)
        XCTAssertEqual(none.status, 64, none.stderr)
        XCTAssertTrue(none.stderr.contains("no partition 9") && none.stderr.contains("4 'second'"), none.stderr)
        let esp = try Run.cli(["update-disk", disk, "--workload", workload, "--partition", "1"], environment: env)
        XCTAssertEqual(esp.status, 1, esp.stderr)
        XCTAssertTrue(esp.stderr.contains("no ext4"), esp.stderr)
        let zero = try Run.cli(["update-disk", disk, "--workload", workload, "--partition", "0"], environment: env)
        XCTAssertEqual(zero.status, 64, zero.stderr)
        XCTAssertEqual(Files.leftovers(in: dir), [])
    }

    func testJSONOutput() throws {
        let dir = try Files.tempDir(self)
        let disk = dir + "/disk.vhd", raw = dir + "/disk.raw", workload = dir + "/workload"
        try BaseDisk.make(at: raw)
        try Workloads.make(at: workload)
        let c = try Run.cli(["convert", raw, disk, "--force"])
        XCTAssertEqual(c.status, 0, c.stderr)
        let data = try XCTUnwrap(try GPTInfo.partitions(raw).first { $0.name == "data" })

        let r = try Run.cli(["update-disk", disk, "--workload", workload, "--json"], environment: env)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout.split(separator: "\n").count, 1, "one JSON line: \(r.stdout)")
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(Set(json.keys), ["disk", "output", "format", "partition", "partition_name", "filesystem_uuid",
                                        "used_bytes", "partition_size", "pcr23", "workload_events", "warnings", "seconds"])
        XCTAssertEqual(json["disk"] as? String, disk)
        XCTAssertEqual(json["output"] as? String, disk)
        XCTAssertEqual(json["format"] as? String, DiskFormat.vhdFixed.rawValue)
        XCTAssertEqual(json["partition"] as? Int, 3)
        XCTAssertEqual(json["partition_name"] as? String, "data")
        XCTAssertEqual(json["filesystem_uuid"] as? String, BaseDisk.uuid)
        XCTAssertEqual((json["partition_size"] as? NSNumber)?.uint64Value, data.size)
        let used = (json["used_bytes"] as? NSNumber)?.uint64Value ?? 0
        XCTAssertTrue(used > 0 && used < data.size, "used_bytes \(used)")
        XCTAssertNotNil(json["seconds"] as? Double)
        XCTAssertEqual((json["warnings"] as? [Any])?.count, 0)

        // pcr23 and the events are those of `workload measure`.
        let m = try Run.cli(["workload", "measure", workload, "--json"])
        XCTAssertEqual(m.status, 0, m.stderr)
        let measure = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(m.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(json["pcr23"] as? String, measure["pcr23"] as? String)
        let events = try XCTUnwrap(json["workload_events"] as? [[String: String]])
        XCTAssertEqual(events, measure["workload_events"] as? [[String: String]])
        XCTAssertEqual(events.first?["name"], "docker-compose.yml")
        XCTAssertTrue(events.allSatisfy { $0["digest"]?.count == 64 && $0["content_sha256"]?.count == 64 })

        // Without --json: the same measurement as text, warnings on stderr.
        try Files.write("services:\n  web:\n    image: nginx\n", to: workload + "/docker-compose.yml")
        let text = try Run.cli(["update-disk", disk, "--workload", workload], environment: env)
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("PCR 23: "), text.stdout)
        XCTAssertTrue(text.stderr.contains("not fully qualified"), text.stderr)
        let withWarning = try Run.cli(["update-disk", disk, "--workload", workload, "--json"], environment: env)
        let json2 = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(withWarning.stdout.utf8)) as? [String: Any])
        XCTAssertEqual((json2["warnings"] as? [Any])?.count, 1, withWarning.stdout)
    }
}
