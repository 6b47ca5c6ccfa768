import XCTest
@testable import DiskImage
import CVMSupport

final class RawTests: XCTestCase {
    func testRawToRawKeepsContentAndHoles() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: src)
        let dst = dir.appendingPathComponent("copy.img").path
        let stats = try TestSupport.convert(src, to: dst, format: .raw)
        try TestSupport.assertSameContent(src, "raw", dst, "raw")
        XCTAssertLessThan(stats.bytesRead, 64 << 20, "holes must not be read")
        // The output is sparse: far fewer blocks allocated than its size.
        var st = stat()
        XCTAssertEqual(stat(dst, &st), 0)
        XCTAssertEqual(UInt64(st.st_size), 64 << 20)
        XCTAssertLessThan(UInt64(st.st_blocks) * 512, 40 << 20)
    }
}
