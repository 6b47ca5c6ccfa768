import CVMSupport
import Foundation
import Transport
import XCTest

/// Secrets (signatures, tokens, SAS parameters, caller-marked headers) never reach logs or errors.
final class TransportRedactionTests: XCTestCase {
    nonisolated(unsafe) static var server: FaultServer!

    override class func setUp() {
        super.setUp()
        server = try! FaultServer()
    }

    override class func tearDown() {
        server?.stop()
        super.tearDown()
    }

    static let signature = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    static let credential = "AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request"
    static let token = "FQoGZXIvYXdzEBYaDSECRETSESSIONTOKEN"
    static let sas = "SASsig0123456789abcdefSECRET%3D"
    static let customSecret = "my-very-private-header-value"
    static let markedValue = "literal-secret-in-a-query-xyz"

    /// The secrets as a server or a log could show them (raw and percent-decoded).
    static var secrets: [String] {
        [signature, credential, "AKIDEXAMPLE/20150830", token, sas, "SASsig0123456789abcdefSECRET=", customSecret,
         markedValue, "Signature=\(signature)"]
    }

    func request(_ plan: String) -> HTTPRequest {
        let k = "sec" + UUID().uuidString.prefix(8)
        let url = "\(Self.server.base)/plan/\(k)/\(plan)?X-Amz-Credential=\(Self.credential)&sv=2023-01-03&se=2030-01-01&sp=rw"
            + "&sig=\(Self.sas)&comp=page&mine=\(Self.markedValue)"
        var r = HTTPRequest(method: "PUT", url: url, body: BytesBody("data"))
        r.headers.add("x-amz-security-token", Self.token)
        r.headers.add("x-my-secret", Self.customSecret)
        r.secretHeaderNames = ["X-My-Secret"]
        r.secretQueryParameters = ["mine"]
        r.sign = { s in
            s.headers.set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=\(Self.signature)")
            s.url += "&X-Amz-Signature=\(Self.signature)"
        }
        return r
    }

    func assertNoSecrets(_ text: String, file: StaticString = #filePath, line: UInt = #line) {
        for secret in Self.secrets {
            XCTAssertFalse(text.contains(secret), "secret \(secret) leaked in: \(text)", file: file, line: line)
        }
    }

    func testSecretsStayOutOfLogsAndErrorsOnSuccessRetryAndFailure() throws {
        let logs = LogCapture()
        let client = HTTPClient(configuration: testConfiguration(), logger: logs.logger())

        // Success after a retry: the server did receive the secrets (they are real credentials) …
        let ok = try client.send(request("500,ok"))
        let echo = try Echo.decode(ok)
        XCTAssertEqual(echo.header("x-my-secret"), Self.customSecret)
        XCTAssertTrue(echo.query.contains("X-Amz-Signature=\(Self.signature)"))

        // … and a failure whose body echoes the Authorization header and the token back.
        var failure = ""
        XCTAssertThrowsError(try client.send(request("sig403"))) { failure = "\($0)" }
        XCTAssertTrue(failure.contains("HTTP 403 SignatureDoesNotMatch"), failure)
        XCTAssertTrue(failure.contains("(request id REQ-403-ABC)"), failure)
        XCTAssertTrue(failure.contains("check the system clock and the key"), failure)
        XCTAssertTrue(failure.contains("sig=[redacted]"), failure)
        XCTAssertTrue(failure.contains("comp=page"), failure)   // harmless parameters stay visible
        XCTAssertFalse(failure.contains("\n"))

        // A transport failure (cut connection, deadline) carries the URL too.
        var deadlineClient = testConfiguration(deadline: 0.5)
        deadlineClient.lowSpeedTime = 1
        let shortClient = HTTPClient(configuration: deadlineClient, logger: logs.logger())
        var cut = ""
        XCTAssertThrowsError(try shortClient.send(request("drop"))) { cut = "\($0)" }

        let logText = logs.text
        XCTAssertTrue(logText.contains("retrying in"), logText)
        XCTAssertTrue(logText.contains("X-Amz-Signature=[redacted]"), logText)
        for text in [logText, failure, cut] { assertNoSecrets(text) }
    }

    func testRedactorURL() {
        let r = Redactor(secretQueryParameters: ["uploadKey"])
        XCTAssertEqual(r.url("https://u:p@h.example/p?a=1&X-Amz-Signature=abc&Sig=x&uploadkey=k&empty"),
                       "https://[redacted]@h.example/p?a=1&X-Amz-Signature=[redacted]&Sig=[redacted]&uploadkey=[redacted]&empty")
        XCTAssertEqual(r.url("https://h/p"), "https://h/p")
        XCTAssertEqual(r.header("Authorization", "Bearer t"), "[redacted]")
        XCTAssertEqual(r.header("Content-Type", "x"), "x")
        let v = Redactor(secretValues: ["s3cr3t-value"])
        XCTAssertEqual(v.text("got s3cr3t-value back"), "got [redacted] back")
        // A URL quoted inside a server's message.
        XCTAssertEqual(v.text("bad request /c/b?comp=page&SIG=abc&x=1"), "bad request /c/b?comp=page&SIG=[redacted]&x=1")
    }
}
