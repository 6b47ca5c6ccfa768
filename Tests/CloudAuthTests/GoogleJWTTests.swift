import CloudAuth
import CVMCrypto
import CVMSupport
import Foundation
import XCTest

/// Service-account JWT assertions verified by Python `cryptography` with the key's public half.
final class GoogleJWTTests: XCTestCase {
    /// A fresh 2048-bit RSA key (PKCS#8) and its PKCS#1 form, made by openssl.
    func makeKeys() throws -> (dir: URL, pkcs8: String, pkcs1: String) {
        let dir = try CloudAuthTestSupport.temporaryDirectory(self)
        let pkcs8 = dir.appendingPathComponent("key.pem").path
        let pkcs1 = dir.appendingPathComponent("key-rsa.pem").path
        let made = try CloudAuthTestSupport.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pkcs8])
        XCTAssertEqual(made.status, 0, made.stderr)
        let converted = try CloudAuthTestSupport.run(["openssl", "rsa", "-in", pkcs8, "-traditional", "-out", pkcs1])
        XCTAssertEqual(converted.status, 0, converted.stderr)
        return (dir, try String(contentsOfFile: pkcs8, encoding: .utf8), try String(contentsOfFile: pkcs1, encoding: .utf8))
    }

    static func keyFile(pem: String, tokenURI: String? = "https://oauth2.googleapis.com/token", kid: String = "0123456789abcdef0123456789abcdef01234567") throws -> [UInt8] {
        var object: [String: Any] = [
            "type": "service_account", "project_id": "cvm-test", "private_key_id": kid, "private_key": pem,
            "client_email": "uploader@cvm-test.iam.gserviceaccount.com", "client_id": "1234567890",
        ]
        if let tokenURI { object["token_uri"] = tokenURI }
        return Array(try JSONSerialization.data(withJSONObject: object))
    }

    func testAssertionVerifiesAndClaimsAreRight() throws {
        let keys = try makeKeys()
        let date = Date(timeIntervalSince1970: 1_700_000_000)
        var jwts = [String]()
        var loadedKeys = [RSAPrivateKey]()
        for (pem, tokenURI) in [(keys.pkcs8, "http://127.0.0.1:8089/token"), (keys.pkcs1, "https://oauth2.googleapis.com/token")] {
            guard case .serviceAccount(let account) = try GoogleCredentials.parse(json: try Self.keyFile(pem: pem, tokenURI: tokenURI), source: "key.json") else {
                return XCTFail("expected a service account")
            }
            XCTAssertEqual(account.privateKey.bits, 2048)
            loadedKeys.append(account.privateKey)
            jwts.append(try account.assertion(scopes: ["https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/devstorage.read_write"], at: date))
        }
        // PKCS#1 v1.5 is deterministic: both encodings of one key give one signature.
        XCTAssertEqual(try loadedKeys[0].signSHA256(Array("abc".utf8)), try loadedKeys[1].signSHA256(Array("abc".utf8)))
        // A tampered token must fail, or the verification proves nothing.
        var parts = jwts[0].split(separator: ".").map(String.init)
        parts[1] = Base64.urlEncode(#"{"iss":"attacker"}"#)
        jwts.append(parts.joined(separator: "."))

        let results = try CloudAuthTestSupport.python("jwt_verify.py", input: [
            "key_path": keys.dir.appendingPathComponent("key.pem").path, "jwts": jwts,
        ]) as! [[String: Any]]
        XCTAssertEqual(results.map { $0["valid"] as? Bool }, [true, true, false])
        for (index, aud) in [(0, "http://127.0.0.1:8089/token"), (1, "https://oauth2.googleapis.com/token")] {
            let header = results[index]["header"] as! [String: Any]
            let claims = results[index]["claims"] as! [String: Any]
            XCTAssertEqual(header["alg"] as? String, "RS256")
            XCTAssertEqual(header["typ"] as? String, "JWT")
            XCTAssertEqual(header["kid"] as? String, "0123456789abcdef0123456789abcdef01234567")
            XCTAssertEqual(claims["iss"] as? String, "uploader@cvm-test.iam.gserviceaccount.com")
            XCTAssertEqual(claims["scope"] as? String, "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/devstorage.read_write")
            XCTAssertEqual(claims["aud"] as? String, aud)
            XCTAssertEqual(claims["iat"] as? Int, 1_700_000_000)
            XCTAssertEqual(claims["exp"] as? Int, 1_700_003_600)
            XCTAssertEqual(claims.count, 5)
        }
    }

    func testTokenRequestBodies() throws {
        let keys = try makeKeys()
        let credentials = try GoogleCredentials.parse(json: try Self.keyFile(pem: keys.pkcs8, tokenURI: nil), source: "key.json")
        let request = try credentials.tokenRequest(at: Date(timeIntervalSince1970: 1_700_000_000))
        XCTAssertEqual(request.url, "https://oauth2.googleapis.com/token")
        XCTAssertEqual(request.contentType, "application/x-www-form-urlencoded")
        let form = Self.decodeForm(request.body)
        XCTAssertEqual(form.map(\.0), ["grant_type", "assertion"])
        XCTAssertEqual(form[0].1, "urn:ietf:params:oauth:grant-type:jwt-bearer")
        XCTAssertEqual(form[1].1.split(separator: ".").count, 3)

        let user = try GoogleCredentials.parse(json: Array(#"{"type":"authorized_user","client_id":"764086051850-abc.apps.googleusercontent.com","client_secret":"d-FL95Q19q7MQmFpd7hHD0Ty","refresh_token":"1//0refresh+token/x=","quota_project_id":"q"}"#.utf8), source: "adc.json")
        let refresh = try user.tokenRequest(at: Date())
        XCTAssertEqual(refresh.url, "https://oauth2.googleapis.com/token")
        XCTAssertEqual(Self.decodeForm(refresh.body).map { "\($0.0)=\($0.1)" },
                       ["grant_type=refresh_token", "client_id=764086051850-abc.apps.googleusercontent.com",
                        "client_secret=d-FL95Q19q7MQmFpd7hHD0Ty", "refresh_token=1//0refresh+token/x="])
        XCTAssertFalse(refresh.body.contains("+"), "a literal + in a form body decodes as a space")
    }

    func testBadKeyFiles() throws {
        let dir = try CloudAuthTestSupport.temporaryDirectory(self)
        let ecPath = dir.appendingPathComponent("ec.pem").path
        XCTAssertEqual(try CloudAuthTestSupport.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", ecPath]).status, 0)
        let ec = try String(contentsOfFile: ecPath, encoding: .utf8)
        let cases: [(String, [UInt8])] = [
            ("not JSON", Array("{".utf8)),
            ("array", Array("[]".utf8)),
            ("unknown type", Array(#"{"type":"external_account"}"#.utf8)),
            ("missing email", Array(try JSONSerialization.data(withJSONObject: ["type": "service_account", "private_key": ec]))),
            ("EC key", try Self.keyFile(pem: ec)),
            ("garbage key", try Self.keyFile(pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")),
        ]
        for (name, json) in cases {
            XCTAssertThrowsError(try GoogleCredentials.parse(json: json, source: "/tmp/key.json"), name) { error in
                let text = "\(error)"
                XCTAssertTrue(text.hasPrefix("/tmp/key.json"), "\(name): \(text)")
                XCTAssertFalse(text.contains("BEGIN"), "\(name): \(text)")
                XCTAssertFalse(text.contains("\n"), "\(name): one line: \(text)")
            }
        }
    }

    static func decodeForm(_ body: String) -> [(String, String)] {
        body.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (PercentEncoding.decode(String(parts[0])), PercentEncoding.decode(parts.count > 1 ? String(parts[1]) : ""))
        }
    }
}
