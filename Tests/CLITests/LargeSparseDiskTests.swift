import Foundation
import XCTest

/// A 30 GiB sparse disk holding the same data as the 64 MiB test disk converts in flat memory:
/// the converting process's peak RSS (`/usr/bin/time`'s %M, i.e. wait4's ru_maxrss of a child
/// forked from a small process) stays ≤ 64 MiB, about what the small disk needs.
final class LargeSparseDiskTests: XCTestCase {
    static let largeSize: UInt64 = 30 << 30
    static let rssLimitMiB = 64.0
    /// How much more the 30 GiB conversion may use than the 64 MiB one ("flat").
    static let rssGrowthLimitMiB = 16.0

    nonisolated(unsafe) static var shared: URL?
    var large: String { Self.shared!.path + "/large.raw" }
    var small: String { Self.shared!.path + "/small.raw" }

    override func setUpWithError() throws {
        if Self.shared == nil {
            let dir = try Disk.makeDir()
            try Disk.makeGPTDisk(at: dir.path + "/large.raw", size: Self.largeSize)
            try Disk.makeGPTDisk(at: dir.path + "/small.raw")
            Self.shared = dir
        }
    }

    override class func tearDown() {
        if let dir = shared { try? FileManager.default.removeItem(at: dir) }
        shared = nil
        super.tearDown()
    }

    func testThirtyGiBToVMDKInFlatMemory() throws {
        let out = try convertBoth("vmdk")
        try Disk.assertSameContent(large, "raw", out, "vmdk", "30 GiB raw → vmdk")
    }

    func testThirtyGiBToVHDInFlatMemory() throws {
        let out = try convertBoth("vhd")
        XCTAssertEqual(Disk.size(out), Self.largeSize + 512)
        try Disk.assertSameContent(large, "raw", out, "vpc", "30 GiB raw → vhd")
    }

    /// 30 GiB of mostly zeros through deflate must be fast: zero chunks are compressed once
    /// and reused. Checked: the first tar header names disk.raw with the full size.
    func testThirtyGiBToTarGzInFlatMemory() throws {
        let out = try convertBoth("tar.gz", timeLimit: 180)
        let list = try CLI.shell(#"gzip -dc "$1" 2>/dev/null | head -c 65536 | tar -tvf - 2>/dev/null; true"#, [out])
        let fields = list.stdout.split(separator: "\n").first?.split(separator: " ") ?? []
        XCTAssertEqual(fields.last.map(String.init), "disk.raw", "tar listing: \(list.stdout)")
        XCTAssertEqual(fields.count > 2 ? UInt64(fields[2]) : nil, Self.largeSize, "member size: \(list.stdout)")
    }

    /// Converts the small and the large disk to `ext`, checks peak RSS; returns the large output.
    private func convertBoth(_ ext: String, timeLimit: Double = 120,
                             file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let dir = try Disk.tempDir(self).path
        let smallRun = try convertOK(small, dir + "/small.\(ext)", measureRSS: true, file: file, line: line)
        unlink(dir + "/small.\(ext)")
        let out = dir + "/large.\(ext)"
        let r = try convertOK(large, out, measureRSS: true, file: file, line: line)
        print("30 GiB raw → \(ext): \(String(format: "%.1f", r.seconds)) s, peak RSS \(String(format: "%.1f", r.peakRSSMiB)) MiB "
              + "(64 MiB disk: \(String(format: "%.1f", smallRun.peakRSSMiB)) MiB); output \(Disk.size(out)) bytes")
        XCTAssertLessThanOrEqual(r.peakRSSMiB, Self.rssLimitMiB, "raw → \(ext): peak RSS of the 30 GiB conversion", file: file, line: line)
        XCTAssertLessThanOrEqual(r.peakRSSMiB - smallRun.peakRSSMiB, Self.rssGrowthLimitMiB,
                                 "raw → \(ext): memory grows with the disk size (\(smallRun.peakRSSMiB) → \(r.peakRSSMiB) MiB)", file: file, line: line)
        XCTAssertLessThan(r.seconds, timeLimit, "raw → \(ext): 30 GiB of mostly holes took \(r.seconds) s", file: file, line: line)
        return out
    }
}
