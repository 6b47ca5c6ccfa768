import Foundation
import XCTest

/// `golden predict`'s flags misused: one error line naming the flag or file, usage status 64
/// (bad input: 1), nothing on standard output.
final class GoldenPredictInputTests: XCTestCase {
    func testBadFlagsAndFilesAreNamed() throws {
        let dir = try Disk.tempDir(self).path
        try Data("not a firmware".utf8).write(to: URL(fileURLWithPath: dir + "/plain.fd"))
        let cases: [(args: [String], status: Int32, names: String)] = [
            (["golden", "predict", dir + "/disk.raw", "--firmware", dir + "/missing_CODE.fd"], 64, "--firmware \(dir)/missing_CODE.fd: no such file"),
            (["golden", "predict", dir + "/disk.raw", "--firmware-vars", dir + "/plain.fd"], 64, "--firmware-vars \(dir)/plain.fd: give --firmware too"),
            (["golden", "predict", dir + "/disk.raw", "--firmware", dir + "/plain.fd"], 64, "no OVMF VARS file next to it"),
            (["golden", "predict", dir + "/disk.raw", "--firmware", dir + "/plain.fd", "--firmware-vars", dir + "/missing.fd"], 64, "--firmware-vars \(dir)/missing.fd: no such file"),
            (["golden", "predict", dir + "/disk.raw"], 1, "\(dir)/disk.raw"),
        ]
        for c in cases {
            let r = try CLI.run(c.args)
            XCTAssertEqual(r.status, c.status, "\(c.args): \(r.stderr)")
            XCTAssertEqual(r.stderrLines.count, 1, "\(c.args): \(r.stderr)")
            XCTAssertTrue(r.stderr.hasPrefix("cvm-cli: error: ") && r.stderr.contains(c.names), "\(c.args): \(r.stderr)")
            XCTAssertEqual(r.stdout, "", "\(c.args)")
        }
    }
}
