import CVMSupport
import Foundation
import Logging
import Transport
import XCTest

/// Requests against the local fault server: echo, keep-alive, retries, Retry-After, deadline.
final class TransportRetryTests: XCTestCase {
    nonisolated(unsafe) static var server: FaultServer!

    override class func setUp() {
        super.setUp()
        server = try! FaultServer()
    }

    override class func tearDown() {
        server?.stop()
        server = nil
        super.tearDown()
    }

    var server: FaultServer { Self.server }
    func key() -> String { "k" + UUID().uuidString.prefix(8).lowercased() }

    func testEchoCarriesMethodHeadersBodyAndExactLength() throws {
        let client = HTTPClient(configuration: testConfiguration())
        var request = HTTPRequest(method: "POST", url: "\(server.base)/echo?a=1",
                                  headers: HTTPHeaders([("Content-Type", "text/plain"), ("X-Custom", "v")]),
                                  body: BytesBody("hello transport"))
        request.headers.add("Content-Length", "999")   // ignored: Transport sets the real length
        let echo = try Echo.decode(client.send(request))
        XCTAssertEqual(echo.method, "POST")
        XCTAssertEqual(echo.query, "a=1")
        XCTAssertEqual(echo.length, 15)
        XCTAssertEqual(echo.header("content-length"), "15")
        XCTAssertEqual(echo.header("x-custom"), "v")
        XCTAssertEqual(echo.header("content-type"), "text/plain")
        XCTAssertNil(echo.header("expect"))
        XCTAssertEqual(echo.sha256, "7cfc4d4bbf5beefda25c86bed117396c99dd52a50dd360d587dc4bd485e66dbb")

        // A POST without a body still says Content-Length: 0; a GET sends none; HEAD works.
        let emptyPost = try Echo.decode(client.send(HTTPRequest(method: "POST", url: "\(server.base)/echo")))
        XCTAssertEqual(emptyPost.header("content-length"), "0")
        let get = try Echo.decode(client.send(HTTPRequest(method: "GET", url: "\(server.base)/echo")))
        XCTAssertNil(get.header("content-length"))
        XCTAssertEqual(get.method, "GET")
        let delete = try Echo.decode(client.send(HTTPRequest(method: "DELETE", url: "\(server.base)/echo")))
        XCTAssertEqual(delete.method, "DELETE")
        let head = try client.send(HTTPRequest(method: "HEAD", url: "\(server.base)/echo"))
        XCTAssertEqual(head.status, 200)
        XCTAssertTrue(head.body.isEmpty)
    }

    func testSequentialRequestsReuseOneConnection() throws {
        let client = HTTPClient(configuration: testConfiguration())
        let k = key()
        for _ in 0..<5 {
            _ = try client.send(HTTPRequest(method: "PUT", url: "\(server.base)/plan/\(k)/ok", body: BytesBody("x")))
        }
        let stats = try server.stats(k)
        XCTAssertEqual(stats.count, 5)
        XCTAssertEqual(Set(stats.ports).count, 1, "keep-alive: all five requests on one connection")
    }

    func testServerErrorsAreRetriedWithFreshSignatureAndLogged() throws {
        let logs = LogCapture()
        let client = HTTPClient(configuration: testConfiguration(), logger: logs.logger())
        let k = key()
        let attempts = Recorder<Int>()
        var request = HTTPRequest(method: "PUT", url: "\(server.base)/plan/\(k)/500,html502,ok", body: BytesBody("abc"))
        request.sign = { signing in
            attempts.append(signing.attempt)
            XCTAssertEqual(signing.contentLength, 3)
            signing.headers.set("x-test-stamp", "attempt-\(signing.attempt)")
        }
        let response = try client.send(request)
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.attempts, 3)
        XCTAssertEqual(attempts.all, [1, 2, 3])
        XCTAssertEqual(try server.stats(k).stamps, ["attempt-1", "attempt-2", "attempt-3"])
        let retryLines = logs.all.filter { $0.contains("retrying in") }
        XCTAssertEqual(retryLines.count, 2, logs.text)
        XCTAssertTrue(retryLines[0].contains("HTTP 500 InternalError"), logs.text)
        XCTAssertTrue(retryLines[1].contains("HTTP 502"), logs.text)
        XCTAssertTrue(logs.text.contains("-> 200"), logs.text)
        XCTAssertTrue(logs.text.contains("attempt 3"), logs.text)
    }

    func testRetryAfterSecondsIsRespected() throws {
        let client = HTTPClient(configuration: testConfiguration())
        let k = key()
        let start = monotonicSeconds()
        let r = try client.send(HTTPRequest(method: "PUT", url: "\(server.base)/plan/\(k)/503ra1,ok", body: BytesBody("a")))
        let elapsed = monotonicSeconds() - start
        XCTAssertEqual(r.attempts, 2)
        XCTAssertGreaterThanOrEqual(elapsed, 0.95)
        XCTAssertLessThan(elapsed, 3)
        let times = try server.stats(k).times
        XCTAssertGreaterThanOrEqual(times[1] - times[0], 0.95)
    }

    func testRetryAfterHTTPDateIsRespected() throws {
        let client = HTTPClient(configuration: testConfiguration())
        let k = key()
        let start = monotonicSeconds()
        let r = try client.send(HTTPRequest(method: "GET", url: "\(server.base)/plan/\(k)/503date2,ok"))
        let elapsed = monotonicSeconds() - start
        XCTAssertEqual(r.attempts, 2)
        // The date has one-second resolution: the wait is between 1 and 2 s.
        XCTAssertGreaterThanOrEqual(elapsed, 0.9)
        XCTAssertLessThan(elapsed, 4)
    }

    func testTooManyRequestsIsRetriedAndHalvesConcurrency() throws {
        var c = testConfiguration()
        c.maxConcurrentTransfers = 8
        let client = HTTPClient(configuration: c)
        let k = key()
        let r = try client.send(HTTPRequest(method: "GET", url: "\(server.base)/plan/\(k)/429,ok"))
        XCTAssertEqual(r.attempts, 2)
        XCTAssertEqual(client.limiter.currentLimit, 4)
    }

    func testThrottlingCodeIn400IsRetried() throws {
        let client = HTTPClient(configuration: testConfiguration())
        let k = key()
        let r = try client.send(HTTPRequest(method: "POST", url: "\(server.base)/plan/\(k)/throttle400,throttle400,ok",
                                            body: BytesBody("Action=RunInstances")))
        XCTAssertEqual(r.attempts, 3)
    }

    func testCallerClassifierAddsRetryableCode() throws {
        let client = HTTPClient(configuration: testConfiguration())
        // Without the extra code a 404 fails at once …
        let k1 = key()
        XCTAssertThrowsError(try client.send(HTTPRequest(method: "GET", url: "\(server.base)/plan/\(k1)/gone404,ok"))) {
            XCTAssertTrue("\($0)".contains("HTTP 404 ResourceNotFoundException: snapshot does not exist"), "\($0)")
        }
        XCTAssertEqual(try server.stats(k1).count, 1)
        // … with it, the "does not exist yet" answer is retried.
        let k2 = key()
        var request = HTTPRequest(method: "GET", url: "\(server.base)/plan/\(k2)/gone404,gone404,ok")
        request.retryClassifier = RetryClassifier(retryableCodes: ["ResourceNotFoundException"])
        XCTAssertEqual(try client.send(request).attempts, 3)
    }

    func testNonRetryable4xxFailsAtOnceWithCodeMessageAndRequestID() throws {
        let client = HTTPClient(configuration: testConfiguration())
        let k = key()
        let start = monotonicSeconds()
        XCTAssertThrowsError(try client.send(HTTPRequest(method: "GET", url: "\(server.base)/plan/\(k)/notfound,ok"))) { error in
            let e = error as? CVMError
            XCTAssertEqual(e?.kind, .io)
            XCTAssertEqual(e?.message, "GET \(server.base)/plan/\(k)/notfound,ok: HTTP 404 NoSuchKey: The specified key does not exist. (request id REQ-404-XYZ)")
        }
        XCTAssertLessThan(monotonicSeconds() - start, 2)
        XCTAssertEqual(try server.stats(k).count, 1)

        let k2 = key()
        XCTAssertThrowsError(try client.send(HTTPRequest(method: "PUT", url: "\(server.base)/plan/\(k2)/json400", body: BytesBody("{}")))) {
            XCTAssertTrue("\($0)".hasSuffix("HTTP 400 InvalidParameter: The value of size is invalid. (request id REQ-400-JSON)"), "\($0)")
        }
    }

    func testDeadlineStopsRetrying() throws {
        let logs = LogCapture()
        let client = HTTPClient(configuration: testConfiguration(deadline: 1.5), logger: logs.logger())
        let k = key()
        let start = monotonicSeconds()
        XCTAssertThrowsError(try client.send(HTTPRequest(method: "GET", url: "\(server.base)/plan/\(k)/500"))) {
            XCTAssertTrue("\($0)".contains("HTTP 500 InternalError"), "\($0)")
            XCTAssertTrue("\($0)".contains("gave up after"), "\($0)")
        }
        let elapsed = monotonicSeconds() - start
        XCTAssertLessThan(elapsed, 3.5)
        XCTAssertGreaterThan(try server.stats(k).count, 2)
        XCTAssertTrue(logs.text.contains("deadline"), logs.text)
    }

    func testRetryAfterBeyondDeadlineStopsAtOnce() throws {
        let client = HTTPClient(configuration: testConfiguration(deadline: 2))
        let k = key()
        let start = monotonicSeconds()
        XCTAssertThrowsError(try client.send(HTTPRequest(method: "GET", url: "\(server.base)/plan/\(k)/503ra5,ok"))) {
            XCTAssertTrue("\($0)".contains("HTTP 503 SlowDown"), "\($0)")
        }
        XCTAssertLessThan(monotonicSeconds() - start, 1)
    }

    func testConnectionRefusedIsRetriedUntilDeadline() throws {
        // A port that was free a moment ago: nothing listens there.
        let spare = try FaultServer()
        let url = "\(spare.base)/x"
        spare.stop()
        let client = HTTPClient(configuration: testConfiguration(deadline: 1))
        XCTAssertThrowsError(try client.send(HTTPRequest(method: "GET", url: url))) {
            XCTAssertTrue("\($0)".contains("connection failed"), "\($0)")
            XCTAssertTrue("\($0)".contains("gave up after"), "\($0)")
        }
    }

    func testLowSpeedTimeoutAbortsTheAttemptAndRetries() throws {
        var c = testConfiguration()
        c.lowSpeedLimit = 100
        c.lowSpeedTime = 1
        let client = HTTPClient(configuration: c)
        let k = key()
        let start = monotonicSeconds()
        let r = try client.send(HTTPRequest(method: "GET", url: "\(server.base)/plan/\(k)/slow,ok"))
        XCTAssertEqual(r.attempts, 2)
        let elapsed = monotonicSeconds() - start
        XCTAssertGreaterThanOrEqual(elapsed, 0.9)
        XCTAssertLessThan(elapsed, 6)
    }

    func testResponseLargerThanLimitIsAnError() throws {
        let client = HTTPClient(configuration: testConfiguration())
        var request = HTTPRequest(method: "GET", url: "\(server.base)/download/100000")
        request.maxResponseBytes = 1000
        XCTAssertThrowsError(try client.send(request)) {
            XCTAssertTrue("\($0)".contains("larger than 1000 bytes"), "\($0)")
        }
    }

    func testAcceptedStatusIsReturned() throws {
        let client = HTTPClient(configuration: testConfiguration())
        var request = HTTPRequest(method: "GET", url: "\(server.base)/plan/\(key())/notfound")
        request.acceptedStatuses = [200, 404]
        let r = try client.send(request)
        XCTAssertEqual(r.status, 404)
        XCTAssertTrue(r.bodyText.contains("<Code>NoSuchKey</Code>"))
    }

    func testProxyFromTheEnvironmentIsUsed() throws {
        // The fault server plays the proxy: libcurl sends it the absolute URL. The target host
        // does not exist and is never contacted.
        let client = HTTPClient(configuration: testConfiguration())
        let saved = (ProcessInfo.processInfo.environment["http_proxy"], ProcessInfo.processInfo.environment["no_proxy"])
        setenv("http_proxy", server.base, 1)
        setenv("no_proxy", "", 1)
        defer {
            if let p = saved.0 { setenv("http_proxy", p, 1) } else { unsetenv("http_proxy") }
            setenv("no_proxy", saved.1 ?? "127.0.0.1,localhost", 1)
        }
        let echo = try Echo.decode(client.send(HTTPRequest(method: "GET", url: "http://cvm-test.invalid/through-proxy")))
        XCTAssertEqual(echo.path, "http://cvm-test.invalid/through-proxy")
    }

    func testCancellationStopsTransferAndBackoff() throws {
        var c = testConfiguration(deadline: 120)
        c.retry = RetryPolicy(baseDelay: 30, maxDelay: 30, random: JitterSource(seed: 3))
        let cancelAfter = monotonicSeconds() + 0.3
        c.isCancelled = { monotonicSeconds() > cancelAfter }
        let client = HTTPClient(configuration: c)
        let start = monotonicSeconds()
        XCTAssertThrowsError(try client.send(HTTPRequest(method: "GET", url: "\(server.base)/plan/\(key())/500"))) {
            XCTAssertEqual(($0 as? CVMError)?.kind, .interrupted, "\($0)")
        }
        XCTAssertLessThan(monotonicSeconds() - start, 2)
    }

    func testParallelTransfersUnderThrottlingAllSucceed() throws {
        var c = testConfiguration()
        c.maxConcurrentTransfers = 6
        let client = HTTPClient(configuration: c)
        let prefix = key()
        let results = Recorder<Int>()
        let limits = Recorder<Int>()
        try client.forEachConcurrently(24) { i in
            // Every third block is throttled once.
            let plan = i % 3 == 0 ? "503ra0,ok" : "ok"
            let r = try client.send(HTTPRequest(method: "PUT", url: "\(Self.server.base)/plan/\(prefix)-\(i)/\(plan)",
                                                body: BytesBody([UInt8](repeating: UInt8(i), count: 4096))))
            results.append(r.status)
            limits.append(client.limiter.currentLimit)
        }
        XCTAssertEqual(results.all.count, 24)
        XCTAssertTrue(results.all.allSatisfy { $0 == 200 })
        // The 503s halved the allowance; successes then won it back step by step.
        XCTAssertLessThanOrEqual(limits.all.min() ?? 6, 3, "\(limits.all)")
    }
}
