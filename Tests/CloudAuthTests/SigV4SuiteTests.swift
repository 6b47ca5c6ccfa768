import CloudAuth
import Foundation
import XCTest

/// Every case of the official SigV4 test suite (awslabs/aws-c-auth tests/aws-signing-test-suite/v4),
/// in both header and presigned-query form.
final class SigV4SuiteTests: XCTestCase {
    struct SuiteCase {
        var name: String
        var request: SignableRequest
        var body: [UInt8]
        var credentials: AWSCredentials
        var region: String
        var service: String
        var date: Date
        var expires: Int
        var normalize: Bool
        var signBody: Bool
        var omitSessionToken: Bool
    }

    static func loadCase(_ dir: URL) throws -> SuiteCase {
        let context = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("context.json"))) as! [String: Any]
        let credentials = context["credentials"] as! [String: Any]
        let raw = try String(decoding: Data(contentsOf: dir.appendingPathComponent("request.txt")), as: UTF8.self)
        // request.txt: request line, headers (continuation lines start with whitespace), blank line, body.
        var lines = raw.components(separatedBy: "\n")
        let requestLine = lines.removeFirst()
        let method = String(requestLine.prefix { $0 != " " })
        let target = String(requestLine.dropFirst(method.count + 1).dropLast(" HTTP/1.1".count))
        var headers = [HTTPHeader]()
        var bodyLines = [String]()
        var inBody = false
        for line in lines {
            if inBody { bodyLines.append(line); continue }
            if line.isEmpty { inBody = true; continue }
            if line.first == " " || line.first == "\t", !headers.isEmpty {
                headers[headers.count - 1].value += "\n" + line
                continue
            }
            let colon = line.firstIndex(of: ":")!
            headers.append(HTTPHeader(String(line[..<colon]), String(line[line.index(after: colon)...])))
        }
        var path = target
        var query = [QueryParameter]()
        if let mark = target.firstIndex(of: "?") {
            path = String(target[..<mark])
            for pair in target[target.index(after: mark)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query.append(QueryParameter(PercentEncoding.decode(String(parts[0])),
                                            PercentEncoding.decode(parts.count > 1 ? String(parts[1]) : "")))
            }
        }
        let host = headers.first { $0.name.lowercased() == "host" }?.value ?? ""
        let date = ISO8601DateFormatter().date(from: context["timestamp"] as! String)!
        return SuiteCase(
            name: dir.lastPathComponent,
            request: SignableRequest(method: method, host: host, path: path, query: query, headers: headers),
            body: Array(bodyLines.joined(separator: "\n").utf8),
            credentials: AWSCredentials(accessKeyId: credentials["access_key_id"] as! String,
                                        secretAccessKey: credentials["secret_access_key"] as! String,
                                        sessionToken: credentials["token"] as? String),
            region: context["region"] as! String, service: context["service"] as! String, date: date,
            expires: context["expiration_in_seconds"] as! Int, normalize: context["normalize"] as! Bool,
            signBody: context["sign_body"] as! Bool, omitSessionToken: context["omit_session_token"] as? Bool ?? false)
    }

    static func signer(for c: SuiteCase) -> AWSSigV4Signer {
        var options = AWSSigV4Signer.Options(service: c.service)
        options.headerSelection = .allExceptUnsignable
        options.encodePath = true
        options.normalizePath = c.normalize
        options.sendContentSHA256 = c.signBody
        options.signSessionToken = !c.omitSessionToken
        return AWSSigV4Signer(credentials: c.credentials, region: c.region, service: c.service, options: options)
    }

    func read(_ dir: URL, _ file: String) throws -> String {
        try String(decoding: Data(contentsOf: dir.appendingPathComponent(file)), as: UTF8.self)
    }

    func testEveryOfficialCase() throws {
        let root = CloudAuthTestSupport.fixtures.appendingPathComponent("sigv4")
        let dirs = try FileManager.default.contentsOfDirectory(at: root, includingPropertiesForKeys: nil)
            .filter { $0.hasDirectoryPath }.sorted { $0.path < $1.path }
        XCTAssertEqual(dirs.count, 38, "the v4 suite has 38 cases")
        for dir in dirs {
            let c = try Self.loadCase(dir)
            let signer = Self.signer(for: c)

            let signed = signer.signHeaders(c.request, payload: .bytes(c.body), at: c.date)
            XCTAssertEqual(signed.canonicalRequest, try read(dir, "header-canonical-request.txt"), "\(c.name): header canonical request")
            XCTAssertEqual(signed.signature, try read(dir, "header-signature.txt").trimmingCharacters(in: .whitespacesAndNewlines), "\(c.name): header signature")
            if let token = c.credentials.sessionToken {
                XCTAssertEqual(signed.headers.first { $0.name == "X-Amz-Security-Token" }?.value, token, c.name)
            }

            let presigned = try signer.presign(c.request, payload: .bytes(c.body), expires: c.expires, at: c.date)
            XCTAssertEqual(presigned.canonicalRequest, try read(dir, "query-canonical-request.txt"), "\(c.name): query canonical request")
            XCTAssertEqual(presigned.signature, try read(dir, "query-signature.txt").trimmingCharacters(in: .whitespacesAndNewlines), "\(c.name): query signature")
            XCTAssertEqual(presigned.query.last, QueryParameter("X-Amz-Signature", presigned.signature))
        }
    }
}
