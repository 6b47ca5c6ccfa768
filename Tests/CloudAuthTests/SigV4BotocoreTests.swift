import CloudAuth
import CVMCrypto
import Foundation
import XCTest

/// Generated requests signed by us and by botocore (the signer moto re-signs with): the
/// Authorization headers and presigned signatures must be identical.
final class SigV4BotocoreTests: XCTestCase {
    struct Generated {
        var request: SignableRequest
        var scheme: String
        var body: [UInt8]
        var payload: AWSPayload
        var credentials: AWSCredentials
        var service: String
        var region: String
        var date: Date
        var presignExpires: Int?
    }

    static let rawNames = ["disk.vhd", "my file.raw", "ünïcödé/ключ", "a+b=c", "100%", "tilde~dash-under_dot.",
                           "sp  ace", "!*'();:@&=+$,", "snap-0123456789abcdef0", "blocks/42"]
    static let rawValues = ["", "x", "a b", "a+b", "a/b", "=&?", "ü", "2024-01-01T00:00:00Z", "~-._", "%41"]

    static func generate(count: Int) -> [Generated] {
        var rng = SplitMix64(seed: 0xC0FFEE)
        func pick<T>(_ items: [T]) -> T { items[Int(rng.next() % UInt64(items.count))] }
        var out = [Generated]()
        for index in 0..<count {
            let service = pick(["s3", "s3", "ebs", "ec2", "sts"])
            let region = pick(["us-east-1", "us-east-2", "eu-west-1"])
            let host = pick(["\(service).\(region).amazonaws.com", "127.0.0.1:5000", "bucket.s3.amazonaws.com"])
            let scheme = pick(["https", "http"])
            var rawPath = "/" + pick(rawNames)
            if rng.next() % 3 == 0 { rawPath += "/" + pick(rawNames) }
            if service != "s3" && rng.next() % 4 == 0 { rawPath = "/a/./b/../" + pick(rawNames) }
            var query = [QueryParameter]()
            var seen = Set<String>()
            for _ in 0..<Int(rng.next() % 4) {
                let name = pick(["Action", "Version", "prefix", "list-type", "uploadId", "partNumber", "x y", "ü"])
                if seen.insert(name).inserted { query.append(QueryParameter(name, pick(rawValues))) }
            }
            let presign = rng.next() % 4 == 0 ? Int(1 + rng.next() % 604_800) : nil
            var body = [UInt8]()
            if presign == nil, rng.next() % 2 == 0 {
                body = (0..<Int(rng.next() % 200)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            }
            var headers = [HTTPHeader]()
            if rng.next() % 2 == 0 { headers.append(HTTPHeader("Content-Type", pick(["application/octet-stream", "application/json", "text/plain;  charset=utf-8"]))) }
            if !body.isEmpty, rng.next() % 2 == 0 { headers.append(HTTPHeader("Content-MD5", Base64.encode(MD5.hash(body)))) }
            if rng.next() % 2 == 0 { headers.append(HTTPHeader("x-amz-Data-Length", "524288")) }
            if rng.next() % 2 == 0 { headers.append(HTTPHeader("x-amz-Checksum", Base64.encode(SHA256.hash(body)))) }
            if rng.next() % 2 == 0 { headers.append(HTTPHeader("X-Amz-Meta-Note", "  two   spaces  ")) }
            // Headers neither signer signs: must not change the signature.
            if rng.next() % 2 == 0 { headers.append(HTTPHeader("User-Agent", "cvm-cli/1.0")) }
            if rng.next() % 2 == 0 { headers.append(HTTPHeader("Expect", "100-continue")) }
            if rng.next() % 2 == 0 { headers.append(HTTPHeader("Connection", "keep-alive")) }
            let unsigned = scheme == "https" && rng.next() % 3 == 0 && (service == "s3" || service == "ebs")
            let payload: AWSPayload = presign != nil && service == "s3" ? .unsigned
                : (unsigned ? .unsigned : (rng.next() % 2 == 0 ? .bytes(body) : .sha256Hex(hexString(SHA256.hash(body)))))
            let token: String? = index % 3 == 0 ? "FwoGZXIvYXdzEXAMPLE//token+with/slashes==" : nil
            let credentials = AWSCredentials(accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\(index)", sessionToken: token)
            let date = Date(timeIntervalSince1970: 1_400_000_000 + Double(rng.next() % 400_000_000))
            out.append(Generated(request: SignableRequest(method: pick(["GET", "PUT", "POST", "HEAD", "DELETE"]), host: host,
                                                          path: PercentEncoding.encodePath(rawPath), query: query, headers: headers),
                                 scheme: scheme, body: body, payload: payload, credentials: credentials, service: service,
                                 region: region, date: date, presignExpires: presign))
        }
        return out
    }

    func testMatchesBotocore() throws {
        let cases = Self.generate(count: 64)
        var documents = [[String: Any]]()
        var ours = [String]()
        for c in cases {
            let signer = AWSSigV4Signer(credentials: c.credentials, region: c.region, service: c.service)
            var doc: [String: Any] = [
                "method": c.request.method, "body_hex": hexString(c.body), "service": c.service, "region": c.region,
                "access_key": c.credentials.accessKeyId, "secret_key": c.credentials.secretAccessKey,
                "timestamp": ISO8601DateFormatter.basic.string(from: c.date), "unsigned": c.payload == .unsigned,
            ]
            if let token = c.credentials.sessionToken { doc["token"] = token }
            let url = "\(c.scheme)://\(c.request.host)\(c.request.target)"
            doc["url"] = url
            if let expires = c.presignExpires {
                let presigned = try signer.presign(c.request, payload: c.payload, expires: expires, at: c.date)
                ours.append(presigned.signature)
                doc["presign_expires"] = expires
                doc["headers"] = c.request.headers.filter { ["content-type", "content-md5"].contains($0.name.lowercased()) || $0.name.lowercased().hasPrefix("x-amz-") }.map { [$0.name, $0.value] }
            } else {
                let signed = signer.signHeaders(c.request, payload: c.payload, at: c.date)
                ours.append(signed.headers.first { $0.name == "Authorization" }!.value)
                // botocore signs every header it is given: give it what we signed plus the ones it never signs.
                let sent = signed.applied(to: c.request).headers.filter { $0.name != "Authorization" }
                doc["headers"] = sent.map { [$0.name, $0.value] }
            }
            documents.append(doc)
        }
        let theirs = try CloudAuthTestSupport.python("botocore_sigv4.py", input: ["requests": documents]) as! [[String: Any]]
        XCTAssertEqual(theirs.count, cases.count)
        var presignedCount = 0
        for (i, c) in cases.enumerated() {
            if c.presignExpires != nil {
                presignedCount += 1
                XCTAssertEqual(ours[i], theirs[i]["signature"] as? String, "case \(i) presigned \(c.service) \(documents[i]["url"]!)")
            } else {
                XCTAssertEqual(ours[i], theirs[i]["authorization"] as? String,
                               "case \(i) \(c.service) \(documents[i]["url"]!)\nbotocore canonical:\n\(theirs[i]["canonical_request"] ?? "")")
            }
        }
        XCTAssertGreaterThan(presignedCount, 5)
        // Negative control: a different secret must not match, or the comparison proves nothing.
        if let first = cases.first(where: { $0.presignExpires == nil }), let i = cases.firstIndex(where: { $0.presignExpires == nil }) {
            var wrong = first.credentials
            wrong.secretAccessKey += "x"
            let signed = AWSSigV4Signer(credentials: wrong, region: first.region, service: first.service)
                .signHeaders(first.request, payload: first.payload, at: first.date)
            XCTAssertNotEqual(signed.headers.last?.value, theirs[i]["authorization"] as? String)
        }
    }
}

extension ISO8601DateFormatter {
    /// `20150830T123600Z`, the SigV4 timestamp form.
    nonisolated(unsafe) static let basic: ISO8601DateFormatter = {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withYear, .withMonth, .withDay, .withTime, .withTimeZone]
        f.timeZone = TimeZone(identifier: "UTC")
        return f
    }()
}
