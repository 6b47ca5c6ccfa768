import CVMSupport
import Foundation
import XCTest

final class ExternalToolTests: XCTestCase {
    func testRunCapturingStopsAToolThatOutlivesItsTimeout() throws {
        let sh = try ExternalTool.find("sh", package: "dash", purpose: "this test")
        let started = Date()
        // The child ignores SIGTERM: only the SIGKILL that follows ends it.
        let result = try sh.runCapturing(["-c", "trap '' TERM; echo begun; sleep 30"], timeout: 0.5)
        XCTAssertTrue(result.timedOut)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertEqual(result.stdout, "begun\n")
        XCTAssertLessThan(Date().timeIntervalSince(started), 15)

        let quick = try sh.runCapturing(["-c", "echo out; echo err >&2; exit 3"], timeout: 10)
        XCTAssertFalse(quick.timedOut)
        XCTAssertEqual(quick.status, 3)
        XCTAssertEqual(quick.stdout, "out\n")
        XCTAssertEqual(quick.stderr, "err\n")
    }
}
