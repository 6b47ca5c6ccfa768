@testable import AWSProvider
import CVMCrypto
import CVMTestData
import XCTest

final class ContentHasherTests: XCTestCase {
    func testDigestCoversBlocksAndTheZerosAroundThem() {
        let size: UInt64 = (3 << 20) + 100
        var whole = [UInt8](repeating: 0, count: Int(size))
        let hasher = ContentHasher(virtualSize: size)
        for (i, offset) in [UInt64(0), 1 << 19, 5 << 19].enumerated() {
            let block = TestData.pseudoRandomBytes(count: 524_288, seed: UInt64(i + 1))
            let length = Int(min(524_288, size - offset))
            whole.replaceSubrange(Int(offset)..<Int(offset) + length, with: block.prefix(length))
            hasher.push(offset: offset, bytes: block, length: length)
        }
        XCTAssertEqual(hasher.finish(), SHA256.hash(whole))
    }

    func testCancelEndsWithoutADigest() {
        let hasher = ContentHasher(virtualSize: 1 << 40)
        hasher.push(offset: 0, bytes: [1, 2, 3], length: 3)
        hasher.cancel()
        XCTAssertNil(hasher.finish(), "no digest for a failed upload, and no hang over a TiB of zeros")
    }
}
