import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif
import CVMSupport
import DiskImage

/// Crash safety: cvm-cli update-disk killed with SIGKILL at random moments never damages the
/// disk, and the next run leaves no temporary files behind.
final class UpdateDiskKillTests: XCTestCase {
    func testSIGKILLAtRandomMomentsLeavesTheVMDKIntact() throws {
        try killLoop(ext: "vmdk", rounds: 20)
    }

    /// tar.gz takes another path (the disk is unpacked to a scratch file first).
    func testSIGKILLAtRandomMomentsLeavesTheTarGzIntact() throws {
        // Unpacking and rebuilding dominate the run here, so few kills land in the output phase.
        try killLoop(ext: "tar.gz", rounds: 8, requireTemporaries: false)
    }

    func killLoop(ext: String, rounds: Int, requireTemporaries: Bool = true) throws {
        let dir = try Files.tempDir(self)
        let raw = dir + "/base.raw", disk = dir + "/disk.\(ext)", workload = dir + "/workload"
        // A VMDK (compression makes the run long enough to be hit anywhere) with a data
        // partition big enough that the rebuild also takes a while.
        try BaseDisk.make(at: raw, sizeMiB: 160, fileSystems: [.init(gptName: "data", label: "data", sizeMiB: 100)])
        try Files.write(Files.pseudoRandomBytes(count: 16 << 20, seed: 9), to: raw, at: 9 << 20)
        try Workloads.make(at: workload)
        try Files.write(Files.pseudoRandomBytes(count: 40 << 20, seed: 11), to: workload + "/config/model.bin", at: 0)
        let c = try Run.cli(["convert", raw, disk, "--force"])
        XCTAssertEqual(c.status, 0, c.stderr)
        let env = ["SOURCE_DATE_EPOCH": "1700000000"]
        let args = ["update-disk", disk, "--workload", workload]

        // The expected result and how long a run takes, on a copy.
        let pristine = dir + "/pristine.\(ext)", probe = dir + "/probe.\(ext)"
        try Files.copy(disk, pristine)
        try Files.copy(disk, probe)
        let start = Date()
        let full = try Run.cli(["update-disk", probe, "--workload", workload], environment: env)
        let runTime = Date().timeIntervalSince(start)
        XCTAssertEqual(full.status, 0, full.stderr)
        let updatedSHA = try Files.sha256(probe)
        unlink(probe)
        let originalSHA = try Files.sha256(disk)

        var rng = SystemRandomNumberGenerator()
        var killed = 0, finished = 0, leftTemporaries = 0
        // Kill moments up to 80% of the probe's run time; a run that finished first shows runs are
        // now faster (the machine's load changed), so later moments stay below that one.
        var latest = max(0.1, runTime * 0.8)
        for round in 0..<rounds {
            let delay = Double.random(in: 0.02...latest, using: &rng)
            let child = try Child(executable: try Run.binary(), args: args, environment: env)
            usleep(useconds_t(delay * 1_000_000))
            child.send(SIGKILL)
            let r = try child.wait()
            let sha = try Files.sha256(disk)
            if r.signal == SIGKILL {
                killed += 1
                // Killed before the rename: the original; after it: the complete new disk.
                XCTAssertTrue(sha == originalSHA || sha == updatedSHA,
                              "round \(round): killed after \(delay) s, the disk is neither the original nor the result")
            } else {
                finished += 1
                latest = max(0.05, delay * 0.8)
                XCTAssertEqual(r.status, 0, "round \(round): \(r.stderr)")
                XCTAssertEqual(sha, updatedSHA, "round \(round)")
            }
            if sha != originalSHA { try Files.copy(pristine, disk) }
            // Only the disk, its pristine copy and killed runs' temporaries are in the folder.
            let others = (try FileManager.default.contentsOfDirectory(atPath: dir))
                .filter { !["base.raw", "disk.\(ext)", "pristine.\(ext)", "workload"].contains($0) && !$0.contains(".cvm-tmp-") }
            XCTAssertEqual(others, [], "round \(round)")
            if !Files.leftovers(in: dir).isEmpty { leftTemporaries += 1 }
        }
        XCTAssertGreaterThanOrEqual(killed, rounds * 3 / 5, "most rounds should have been killed mid-run (run time \(runTime) s)")

        // A normal run completes, gives the expected disk and cleans up the killed runs' files.
        let last = try Run.cli(args, environment: env)
        XCTAssertEqual(last.status, 0, last.stderr)
        XCTAssertEqual(try Files.sha256(disk), updatedSHA)
        XCTAssertEqual(Files.leftovers(in: dir), [], "temporaries left after a normal run")
        if requireTemporaries { XCTAssertGreaterThan(leftTemporaries, 0, "no round left a temporary output: the cleanup was not exercised") }
        print("SIGKILL loop (\(ext)): \(killed) killed, \(finished) finished, \(leftTemporaries) left a temporary; one run \(String(format: "%.2f", runTime)) s")
    }
}
