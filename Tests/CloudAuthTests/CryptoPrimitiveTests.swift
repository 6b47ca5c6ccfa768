@testable import CloudAuth
import CVMCrypto
import Foundation
import XCTest

/// Known answers for the primitives the signers build on.
final class CryptoPrimitiveTests: XCTestCase {
    func testHMACSHA256KnownAnswers() {
        // RFC 4231 test cases 1 and 2.
        XCTAssertEqual(hexString(HMACSHA256.mac(key: [UInt8](repeating: 0x0b, count: 20), message: "Hi There")),
                       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        XCTAssertEqual(hexString(HMACSHA256.mac(key: Array("Jefe".utf8), message: "what do ya want for nothing?")),
                       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        // Empty key and message (python3 -c 'import hmac,hashlib; print(hmac.new(b"", b"", hashlib.sha256).hexdigest())').
        XCTAssertEqual(hexString(HMACSHA256.mac(key: [], message: [])),
                       "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")
        // A key longer than the block size is hashed first (RFC 4231 test case 6).
        XCTAssertEqual(hexString(HMACSHA256.mac(key: [UInt8](repeating: 0xaa, count: 131), message: "Test Using Larger Than Block-Size Key - Hash Key First")),
                       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    func testCRC32CCombineEqualsOnePass() {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)   // the CRC-32C check value
        var seed: UInt64 = 7
        let bytes = (0..<(3 << 20) + 123).map { _ -> UInt8 in
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: seed >> 56)
        }
        for cut in [0, 1, 7, 4096, 1 << 20, bytes.count - 1, bytes.count] {
            let a = Array(bytes[..<cut]), b = Array(bytes[cut...])
            XCTAssertEqual(CRC32C.combine(CRC32C.checksum(a), CRC32C.checksum(b), secondLength: UInt64(b.count)),
                           CRC32C.checksum(bytes), "cut at \(cut)")
        }
        // Four 4 MiB-style blocks folded in order, as the upload stream does.
        var whole: UInt32 = 0
        for block in stride(from: 0, to: bytes.count, by: 1 << 20) {
            let piece = Array(bytes[block..<min(bytes.count, block + (1 << 20))])
            whole = CRC32C.combine(whole, CRC32C.checksum(piece), secondLength: UInt64(piece.count))
        }
        XCTAssertEqual(whole, CRC32C.checksum(bytes))
    }

    func testMD5KnownAnswers() {
        XCTAssertEqual(hexString(MD5.hash([UInt8]())), "d41d8cd98f00b204e9800998ecf8427e")
        XCTAssertEqual(hexString(MD5.hash(Array("abc".utf8))), "900150983cd24fb0d6963f7d28e17f72")
        XCTAssertEqual(Base64.encode(MD5.hash(Array("hello".utf8))), "XUFAKrxLKna5cZ2REBfFkg==")
    }

    func testBase64MatchesFoundation() {
        var rng = SplitMix64(seed: 7)
        for length in 0..<70 {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let standard = Data(bytes).base64EncodedString()
            XCTAssertEqual(Base64.encode(bytes), standard)
            XCTAssertEqual(Base64.decode(standard), bytes)
            let url = standard.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
            XCTAssertEqual(Base64.urlEncode(bytes), url)
            XCTAssertEqual(Base64.decode(url), bytes)
        }
        for bad in ["a", "ab=c", "abc*", "ab===", "abcd\n", "a==="] { XCTAssertNil(Base64.decode(bad), bad) }
    }

    func testTimestampsMatchFoundation() {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'|yyyyMMdd'T'HHmmss'Z'"
        var rng = SplitMix64(seed: 9)
        var samples: [Int64] = [0, -1, 951_782_400, 1_440_938_160, 4_107_542_399]  // incl. 2000-02-29 and 2100-02-28
        for _ in 0..<500 { samples.append(Int64(rng.next() % 6_000_000_000) - 1_000_000_000) }
        for seconds in samples {
            let stamp = UTCTimestamp(epochSeconds: seconds)
            XCTAssertEqual("\(stamp.httpDate)|\(stamp.basicDateTime)", formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds))), "\(seconds)")
        }
    }

    func testExtremeClocksDoNotTrap() {
        XCTAssertEqual(UTCTimestamp(.distantFuture).basicDate, "40010101")
        XCTAssertEqual(UTCTimestamp(Date(timeIntervalSince1970: .infinity)).basicDateTime, "19700101T000000Z")
        XCTAssertEqual(UTCTimestamp(Date(timeIntervalSince1970: 1e300)).basicDateTime, "99991231T235959Z")
        XCTAssertEqual(UTCTimestamp(Date(timeIntervalSince1970: -1e300)).basicDateTime, "00010101T000000Z")
    }

    func testPercentEncoding() {
        XCTAssertEqual(PercentEncoding.encode("a b+c/d=é~_.-"), "a%20b%2Bc%2Fd%3D%C3%A9~_.-")
        XCTAssertEqual(PercentEncoding.encodePath("/my dir/ü.vhd"), "/my%20dir/%C3%BC.vhd")
        XCTAssertEqual(PercentEncoding.decode("a%20b+%zz%4"), "a b+%zz%4")
        XCTAssertEqual(PercentEncoding.decode(PercentEncoding.encode("ключ 100%")), "ключ 100%")
    }

    func testRequestFromURL() throws {
        let request = try XCTUnwrap(SignableRequest(method: "PUT", url: "https://Bucket.S3.amazonaws.com:443/my%20key/x?uploadId=a%2Bb&partNumber=1&flag"))
        XCTAssertEqual(request.host, "Bucket.S3.amazonaws.com", "kept as curl will send it")
        XCTAssertEqual(request.path, "/my%20key/x")
        XCTAssertEqual(request.query, [QueryParameter("uploadId", "a+b"), QueryParameter("partNumber", "1"), QueryParameter("flag", "")])
        XCTAssertEqual(request.target, "/my%20key/x?uploadId=a%2Bb&partNumber=1&flag=")
        XCTAssertEqual(SignableRequest(method: "GET", url: "http://127.0.0.1:5000")?.host, "127.0.0.1:5000")
        XCTAssertEqual(SignableRequest(method: "GET", url: "http://127.0.0.1:5000")?.path, "/")
        XCTAssertNil(SignableRequest(method: "GET", url: "ftp://x/"))
        XCTAssertNil(SignableRequest(method: "GET", url: "https://user@x/"))
        XCTAssertNil(SignableRequest(method: "GET", url: "https:///path"))
    }
}
