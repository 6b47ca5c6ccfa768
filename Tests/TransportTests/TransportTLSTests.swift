import CVMSupport
import Foundation
import Transport
import XCTest

/// HTTPS against a self-signed server: refused unless its CA is given.
final class TransportTLSTests: XCTestCase {
    func testSelfSignedCertificateNeedsTheCABundle() throws {
        let dir = NSTemporaryDirectory() + "cvm-tls-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try runTool("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                                "-keyout", "\(dir)/key.pem", "-out", "\(dir)/cert.pem"])
        let server = try FaultServer(certificate: ("\(dir)/cert.pem", "\(dir)/key.pem"))
        defer { server.stop() }
        let url = "https://127.0.0.1:\(server.port)/echo"

        var untrusted = testConfiguration(deadline: 5)
        untrusted.environment = [:]   // no SSL_CERT_FILE from the test environment
        XCTAssertThrowsError(try HTTPClient(configuration: untrusted).send(HTTPRequest(method: "GET", url: url))) {
            let text = "\($0)"
            XCTAssertTrue(text.contains("certificate"), text)
            XCTAssertTrue(text.contains("CA bundle"), text)
            XCTAssertFalse(text.contains("gave up"), "a certificate failure is not retried: \(text)")
        }

        var trusted = testConfiguration(deadline: 5)
        trusted.caBundlePath = "\(dir)/cert.pem"
        let echo = try Echo.decode(HTTPClient(configuration: trusted).send(HTTPRequest(method: "POST", url: url, body: BytesBody("tls"))))
        XCTAssertEqual(echo.length, 3)

        var fromEnvironment = testConfiguration(deadline: 5)
        fromEnvironment.environment = ["SSL_CERT_FILE": "\(dir)/cert.pem"]
        XCTAssertEqual(try HTTPClient(configuration: fromEnvironment).send(HTTPRequest(method: "GET", url: url)).status, 200)
    }
}
