@testable import CloudAuth
import CVMCrypto
import Foundation
import XCTest

/// SharedKey signatures compared with Microsoft's own implementation
/// (azure-storage-blob's SharedKeyCredentialPolicy) on generated requests.
final class AzureSharedKeyTests: XCTestCase {
    static let account = "cvmtestaccount"

    static func key(_ rng: inout SplitMix64) -> String {
        Base64.encode((0..<64).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
    }

    static let blobNames = ["disk.vhd", "my disk.vhd", "dir/sub dir/ünï.vhd", "a+b=c&d", "100%", "~tilde_-.", "ключ", "x'y(z)!*"]
    static let queryValues = ["", "page", "a b", "a+b/c=", "ü", "2024-01-01T00:00:00.0000000Z", "%41", "x&y=z", "QUJDRA=="]
    static let metaNames = ["x-ms-meta-ab", "x-ms-meta-a-z", "x-ms-meta-a_b", "x-ms-meta-ab1", "x-ms-meta-abc", "x-ms-meta-a-b-c",
                            "x-ms-meta-A1", "x-ms-meta-z", "x-ms-meta-a'b", "x-ms-meta-a.b"]

    func testMatchesMicrosoftImplementation() throws {
        var rng = SplitMix64(seed: 42)
        func pick<T>(_ items: [T]) -> T { items[Int(rng.next() % UInt64(items.count))] }
        func maybe() -> Bool { rng.next() % 2 == 0 }
        let accountKey = Self.key(&rng)
        let credentials = try AzureStorageCredentials(accountName: Self.account, accountKey: accountKey)
        let signer = AzureSharedKeySigner(credentials: credentials)
        var documents = [[String: Any]]()
        var ours = [String]()
        var zeroLength = 0, nonZeroLength = 0
        for _ in 0..<300 {
            let pathStyle = rng.next() % 4 == 0  // emulator-style URL: /<account>/<container>/<blob>
            let host = pathStyle ? "127.0.0.1:10000" : "\(Self.account).blob.core.windows.net"
            var rawPath = "/container-\(rng.next() % 3)"
            if rng.next() % 5 != 0 { rawPath += "/" + pick(Self.blobNames) }
            if pathStyle { rawPath = "/\(Self.account)" + rawPath }
            var query = [QueryParameter]()
            var seen = Set<String>()
            for _ in 0..<Int(rng.next() % 4) {
                let name = pick(["comp", "restype", "timeout", "prefix", "blockid", "marker", "snapshot", "versionid"])
                if seen.insert(name).inserted { query.append(QueryParameter(name, pick(Self.queryValues))) }
            }
            var headers = [HTTPHeader]()
            let length = maybe() ? 0 : Int(1 + rng.next() % 4_194_304)
            if length == 0 { zeroLength += 1 } else { nonZeroLength += 1 }
            if maybe() || length > 0 { headers.append(HTTPHeader("Content-Length", String(length))) }
            if maybe() { headers.append(HTTPHeader("Content-Type", pick(["application/octet-stream", "text/plain; charset=utf-8"]))) }
            if maybe() { headers.append(HTTPHeader("Content-MD5", Base64.encode(MD5.hash(Array("\(rng.next())".utf8))))) }
            if rng.next() % 4 == 0 { headers.append(HTTPHeader("Content-Encoding", "gzip")) }
            if rng.next() % 4 == 0 { headers.append(HTTPHeader("Content-Language", "en-US")) }
            if rng.next() % 4 == 0 { headers.append(HTTPHeader("If-Match", "\"0x8D\(rng.next() % 1_000_000)\"")) }
            if rng.next() % 4 == 0 { headers.append(HTTPHeader("If-None-Match", "*")) }
            if rng.next() % 4 == 0 { headers.append(HTTPHeader("If-Modified-Since", "Mon, 01 Jan 2024 00:00:00 GMT")) }
            if rng.next() % 4 == 0 { headers.append(HTTPHeader("If-Unmodified-Since", "Tue, 02 Jan 2024 00:00:00 GMT")) }
            if maybe() { headers.append(HTTPHeader("x-ms-blob-type", pick(["PageBlob", "BlockBlob"]))) }
            if maybe() {
                let start = (rng.next() % 1000) * 512
                headers.append(HTTPHeader("x-ms-range", "bytes=\(start)-\(start + 4_194_303)"))
                headers.append(HTTPHeader("x-ms-page-write", pick(["update", "clear"])))
            }
            if maybe() { headers.append(HTTPHeader("x-ms-blob-content-length", String((rng.next() % 100_000) * 512))) }
            if maybe() { headers.append(HTTPHeader("x-ms-client-request-id", "\(rng.next())")) }
            if rng.next() % 5 == 0 { headers.append(HTTPHeader("x-ms-version", pick(["2021-08-06", "2023-11-03", "2025-01-05"]))) }
            var metaSeen = Set<String>()
            for _ in 0..<Int(rng.next() % 5) {
                let name = pick(Self.metaNames)
                if metaSeen.insert(name.lowercased()).inserted { headers.append(HTTPHeader(name.lowercased(), pick(["v", "a b", "ü", "x=y"]))) }
            }
            headers.shuffle(using: &rng)
            let request = SignableRequest(method: pick(["GET", "PUT", "HEAD", "DELETE", "POST"]), host: host,
                                          path: PercentEncoding.encodePath(rawPath), query: query, headers: headers)
            let date = Date(timeIntervalSince1970: 1_600_000_000 + Double(rng.next() % 300_000_000))
            let signed = signer.sign(request, at: date)
            ours.append(signed.headers.last!.value)
            let sent = signed.applied(to: request).headers.filter { $0.name != "Authorization" }
            documents.append(["method": request.method, "url": "https://\(host)\(request.target)",
                              "headers": sent.map { [$0.name, $0.value] }])
        }
        XCTAssertGreaterThan(zeroLength, 50)
        XCTAssertGreaterThan(nonZeroLength, 50)
        let theirs = try CloudAuthTestSupport.python("azure_sharedkey.py", input: [
            "account": Self.account, "key": accountKey, "requests": documents,
        ]) as! [String]
        XCTAssertEqual(theirs.count, ours.count)
        for i in 0..<min(theirs.count, ours.count) {
            XCTAssertEqual(ours[i], theirs[i], "request \(i): \(documents[i])")
        }
        // Negative control: another key must give other signatures.
        let other = AzureSharedKeySigner(credentials: try AzureStorageCredentials(accountName: Self.account, accountKey: Self.key(&rng)))
        let request = SignableRequest(method: "GET", host: "h", path: "/c", headers: [HTTPHeader("x-ms-date", "Mon, 01 Jan 2024 00:00:00 GMT")])
        XCTAssertNotEqual(other.sign(request, at: Date()).headers.last, signer.sign(request, at: Date()).headers.last)
    }

    /// The string-to-sign layout on a known request (empty Content-Length line for 0, x-ms-range).
    func testStringToSignLayout() throws {
        let credentials = try AzureStorageCredentials(accountName: "acct", accountKey: Base64.encode(Array("secret-key-bytes".utf8)))
        let request = SignableRequest(method: "PUT", host: "acct.blob.core.windows.net", path: "/c/my%20disk.vhd",
                                      query: [QueryParameter("comp", "page"), QueryParameter("Timeout", "30")],
                                      headers: [HTTPHeader("Content-Length", "0"), HTTPHeader("x-ms-range", "bytes=0-511"),
                                                HTTPHeader("x-ms-page-write", "clear"), HTTPHeader("x-ms-version", "2021-08-06")])
        let signed = AzureSharedKeySigner(credentials: credentials).sign(request, at: Date(timeIntervalSince1970: 1_440_938_160))
        XCTAssertEqual(signed.stringToSign, "PUT\n\n\n\n\n\n\n\n\n\n\n\n"
            + "x-ms-date:Sun, 30 Aug 2015 12:36:00 GMT\nx-ms-page-write:clear\nx-ms-range:bytes=0-511\nx-ms-version:2021-08-06\n"
            + "/acct/c/my%20disk.vhd\ncomp:page\ntimeout:30")
        XCTAssertEqual(signed.headers.map(\.name), ["x-ms-date", "Authorization"])
    }

    func testHeaderCollation() {
        XCTAssertTrue(AzureHeaderOrder.precedes("x-ms-meta-ab", "x-ms-meta-a-z"))
        XCTAssertTrue(AzureHeaderOrder.precedes("x-ms-meta-a_b", "x-ms-meta-ab"))
        XCTAssertTrue(AzureHeaderOrder.precedes("x-ms-date", "x-ms-version"))
        XCTAssertFalse(AzureHeaderOrder.precedes("x-ms-version", "x-ms-date"))
    }
}
