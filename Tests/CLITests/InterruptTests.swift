import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Ctrl-C (SIGINT) or SIGTERM during a long conversion: exit 128+signal, and neither the
/// output nor its temporary file is left behind.
final class InterruptTests: XCTestCase {
    /// A 2 GiB disk holding 1 GiB of random data (slow to compress), built once for the class.
    nonisolated(unsafe) static var shared: URL?
    var disk: String { Self.shared!.path + "/random.raw" }

    override func setUpWithError() throws {
        if Self.shared == nil {
            let dir = try Disk.makeDir()
            let path = dir.path + "/random.raw"
            try CLI.tool("dd", ["if=/dev/urandom", "of=\(path)", "bs=1M", "count=1024", "seek=64", "status=none"])
            try Disk.setSize(path, 2 * Disk.gib)
            Self.shared = dir
        }
    }

    override class func tearDown() {
        if let dir = shared { try? FileManager.default.removeItem(at: dir) }
        shared = nil
        super.tearDown()
    }

    func testSIGINTWhileWritingVMDKLeavesNothing() throws {
        try interrupt(with: SIGINT, expectedStatus: 130, output: "aws_disk.vmdk")
    }

    func testSIGTERMWhileWritingVMDKLeavesNothing() throws {
        try interrupt(with: SIGTERM, expectedStatus: 143, output: "aws_disk.vmdk")
    }

    func testSIGTERMWhileWritingTarGzLeavesNothing() throws {
        try interrupt(with: SIGTERM, expectedStatus: 143, output: "gcp_disk.tar.gz")
    }

    private func interrupt(with signal: Int32, expectedStatus: Int32, output name: String,
                           file: StaticString = #filePath, line: UInt = #line) throws {
        let outDir = try Disk.tempDir(self).path
        let inputStamp = try CLI.tool("stat", ["-c", "%s %Y", disk]).stdout   // size + mtime: hashing 2 GiB is slow
        let child = try Child(executable: CLI.binary(), args: ["convert", disk, outDir + "/" + name])
        // Wait until the conversion is under way: the temp file exists and has grown.
        let deadline = Date().addingTimeInterval(60)
        var started = false
        while Date() < deadline {
            if let r = try child.poll() {
                XCTFail("convert finished before the signal (status \(r.status)): \(r.stderr)", file: file, line: line)
                return
            }
            if let temp = Disk.listing(outDir).first(where: { $0.contains(".cvm-tmp-") }),
               Disk.size(outDir + "/" + temp) > 0 {
                started = true
                break
            }
            usleep(20_000)
        }
        XCTAssertTrue(started, "no temp file appeared in \(outDir) within 60 s", file: file, line: line)
        usleep(300_000)
        if let r = try child.poll() {
            XCTFail("convert finished before the signal (status \(r.status)); make the test disk larger: \(r.stderr)", file: file, line: line)
            return
        }
        child.send(signal)
        let r = try child.wait(timeout: 30)
        XCTAssertNil(r.signal, "killed by the signal instead of handling it: \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.status, expectedStatus, "exit status after signal \(signal); stderr: \(r.stderr)", file: file, line: line)
        XCTAssertFalse(r.stderr.contains("Fatal error"), r.stderr, file: file, line: line)
        XCTAssertEqual(Disk.listing(outDir), [], "output or temp file left behind", file: file, line: line)
        XCTAssertEqual(try CLI.tool("stat", ["-c", "%s %Y", disk]).stdout, inputStamp, "input touched", file: file, line: line)
    }
}
