import CVMSupport
import Deploy
import XCTest

final class PortListTests: XCTestCase {
    func testPortsAndRanges() throws {
        XCTAssertEqual(try PortRange.parseList(""), [])
        XCTAssertEqual(try PortRange.parseList(" "), [])
        XCTAssertEqual(try PortRange.parseList("80,443"), [PortRange(80), PortRange(443)])
        XCTAssertEqual(try PortRange.parseList(" 1, 9000-9010 ,65535,80,80"), [PortRange(1), PortRange(9000, 9010), PortRange(65535), PortRange(80)])
        XCTAssertEqual(try PortRange.parseList("7-7"), [PortRange(7)])
        XCTAssertEqual(PortRange(9000, 9010).description, "9000-9010")
    }

    func testBadPortsNameTheFlagAndTheEntry() {
        let bad: [(String, String)] = [
            ("0", "'0' is not a valid port"), ("65536", "'65536'"), ("80,,443", "empty entry"), ("http", "'http'"),
            ("-5", "'-5'"), ("10-5", "range '10-5' goes down"), ("1-2-3", "'1-2-3'"), ("80,", "empty entry"),
            ("+80", "'+80'"), ("8O", "'8O'"), ("99999999999999999999", "not a valid port"),
        ]
        for (text, expected) in bad {
            XCTAssertThrowsError(try PortRange.parseList(text), text) { e in
                let err = e as! CVMError
                XCTAssertEqual(err.kind, .usage)
                XCTAssertTrue(err.message.hasPrefix("--additional_ports"), err.message)
                XCTAssertTrue(err.message.contains(expected), "\(text): \(err.message)")
            }
        }
    }
}
