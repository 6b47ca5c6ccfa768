import CVMCrypto
import CVMSupport
@testable import GCPProvider
import XCTest

final class GCPProviderUnitTests: XCTestCase {
    /// RFC 3720 (iSCSI) appendix B.4 vectors, and GCS's documented example.
    func testCRC32CVectors() {
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(CRC32C.checksum((0..<32).map { UInt8($0) }), 0x46DD_794E)
        XCTAssertEqual(CRC32C.checksum((0..<32).map { UInt8(31 - $0) }), 0x113F_DB5C)
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        // Split updates at every alignment equal one update.
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        for cut in [0, 1, 3, 7, 8, 9, 500, 999] {
            var c = CRC32C()
            c.update(Array(data[..<cut]))
            c.update(Array(data[cut...]))
            XCTAssertEqual(c.value, CRC32C.checksum(data), "cut \(cut)")
        }
        var c = CRC32C()
        c.update(Array("123456789".utf8))
        XCTAssertEqual(c.bigEndianBytes, [0xE3, 0x06, 0x92, 0x83])
    }

    func testObjectNames() throws {
        let name = try GCSObjectName(parsing: "gs://cvm-images/dir/disk image.tar.gz")
        XCTAssertEqual(name.bucket, "cvm-images")
        XCTAssertEqual(name.object, "dir/disk image.tar.gz")
        XCTAssertEqual(name.description, "gs://cvm-images/dir/disk image.tar.gz")
        XCTAssertNoThrow(try GCSObjectName(parsing: "gs://my_bucket.example.com/x"))
        for bad in ["gs://bucket", "gs://bucket/", "gs://Bucket/x", "gs://ab/x", "gs://-bucket/x", "gs://bucket/..",
                    "s3://bucket/x", "gs://bucket/a\nb"] {
            XCTAssertThrowsError(try GCSObjectName(parsing: bad), bad) { error in
                XCTAssertEqual((error as? CVMError)?.kind, .usage, bad)
                XCTAssertFalse("\(error)".contains("\n") && !bad.contains("\n"), bad)
            }
        }
    }

    /// The window hands out bodies that read exactly the bytes in order, across chunk seams,
    /// after partial confirmations.
    func testByteWindowBodies() throws {
        let a = Array(0..<100).map { UInt8($0) }, b = Array(100..<250).map { UInt8($0) }
        var window = ByteWindow()
        window.append(a[10...])
        window.append(b[...])
        XCTAssertEqual(window.count, 240)
        func bytes(_ body: SlicesBody, step: Int) throws -> [UInt8] {
            var out = [UInt8]()
            var buffer = [UInt8](repeating: 0, count: step)
            while true {
                let n = try buffer.withUnsafeMutableBytes { try body.read(into: $0, at: UInt64(out.count)) }
                if n == 0 { break }
                out += buffer[0..<n]
            }
            return out
        }
        let body = window.prefix(120)
        XCTAssertEqual(body.size, 120)
        for step in [1, 7, 90, 500] { XCTAssertEqual(try bytes(body, step: step), Array(a[10...]) + Array(b[0..<30])) }
        window.removeFirst(95)
        XCTAssertEqual(window.count, 145)
        XCTAssertEqual(try bytes(window.prefix(145), step: 64), Array(b[5...]))
        window.removeAll()
        XCTAssertEqual(window.prefix(0).size, 0)
    }
}
