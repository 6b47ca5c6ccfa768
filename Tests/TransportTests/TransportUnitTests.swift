import CVMSupport
import Foundation
import Transport
import XCTest

/// Pure parts: backoff, Retry-After, classifier, error parser, limiter.
final class TransportUnitTests: XCTestCase {
    func testFullJitterBackoffIsSeededAndBounded() {
        let a = RetryPolicy(baseDelay: 0.5, maxDelay: 8, random: JitterSource(seed: 7))
        let b = RetryPolicy(baseDelay: 0.5, maxDelay: 8, random: JitterSource(seed: 7))
        var delays: [Double] = []
        for attempt in 1...12 {
            let d = a.backoff(afterAttempt: attempt)
            XCTAssertEqual(d, b.backoff(afterAttempt: attempt))
            XCTAssertGreaterThanOrEqual(d, 0)
            XCTAssertLessThanOrEqual(d, min(8, 0.5 * pow(2, Double(attempt - 1))))
            delays.append(d)
        }
        XCTAssertGreaterThan(Set(delays).count, 10, "jitter varies")
        XCTAssertEqual(a.delay(afterAttempt: 3, retryAfter: 4), 4)
        XCTAssertEqual(a.delay(afterAttempt: 3, retryAfter: 1000), a.maxRetryAfter)
    }

    func testRetryAfterParsing() {
        let now = Date(timeIntervalSince1970: 784_111_777)   // Sun, 06 Nov 1994 08:49:37 GMT
        XCTAssertEqual(parseRetryAfter("120", now: now), 120)
        XCTAssertEqual(parseRetryAfter(" 0 ", now: now), 0)
        XCTAssertEqual(parseRetryAfter("Sun, 06 Nov 1994 08:49:47 GMT", now: now), 10)
        XCTAssertEqual(parseRetryAfter("Sunday, 06-Nov-94 08:49:57 GMT", now: now), 20)
        XCTAssertEqual(parseRetryAfter("Sun, 06 Nov 1994 08:00:00 GMT", now: now), 0)   // past: now
        XCTAssertNil(parseRetryAfter("soon", now: now))
        XCTAssertNil(parseRetryAfter(nil, now: now))
    }

    func testClassifier() {
        let c = RetryClassifier()
        let h = HTTPHeaders()
        XCTAssertEqual(c.decide(status: 503, headers: h, error: nil), .throttle)
        XCTAssertEqual(c.decide(status: 429, headers: h, error: nil), .throttle)
        for s in [500, 502, 504] { XCTAssertEqual(c.decide(status: s, headers: h, error: nil), .retry) }
        for s in [400, 401, 403, 404, 409, 412, 501] { XCTAssertEqual(c.decide(status: s, headers: h, error: nil), .fail) }
        for code in ["SlowDown", "RequestLimitExceeded", "Throttling", "ThrottlingException", "ServerBusy",
                     "RequestThrottled", "TooManyRequests"] {
            XCTAssertEqual(c.decide(status: 400, headers: h, error: CloudErrorDetails(code: code)), .throttle, code)
        }
        XCTAssertEqual(c.decide(status: 400, headers: h, error: CloudErrorDetails(code: "InvalidParameterValue")), .fail)
        let custom = RetryClassifier(custom: { status, _, _ in status == 409 ? .retry : nil })
        XCTAssertEqual(custom.decide(status: 409, headers: h, error: nil), .retry)
        XCTAssertEqual(custom.decide(status: 503, headers: h, error: nil), .throttle)
    }

    func testGenericErrorParser() {
        func parse(_ body: String, _ headers: [(String, String)] = [], status: Int = 400) -> CloudErrorDetails? {
            GenericCloudErrorParser.parse(status: status, headers: HTTPHeaders(headers), body: Array(body.utf8))
        }
        XCTAssertEqual(parse("<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access &amp; more</Message><RequestId>R1</RequestId></Error>"),
                       CloudErrorDetails(code: "AccessDenied", message: "Access & more", requestID: "R1"))
        XCTAssertEqual(parse("<Response><Errors><Error><Code>InvalidAMIID.Malformed</Code><Message>bad</Message></Error></Errors><RequestID>E2</RequestID></Response>"),
                       CloudErrorDetails(code: "InvalidAMIID.Malformed", message: "bad", requestID: "E2"))
        XCTAssertEqual(parse("{\"error\":{\"code\":\"ResourceNotFound\",\"message\":\"gone\"}}", [("x-ms-request-id", "M3")]),
                       CloudErrorDetails(code: "ResourceNotFound", message: "gone", requestID: "M3"))
        XCTAssertEqual(parse("{\"error\":{\"code\":403,\"message\":\"denied\",\"status\":\"PERMISSION_DENIED\"}}", [("X-GUploader-UploadID", "G4")]),
                       CloudErrorDetails(code: "PERMISSION_DENIED", message: "denied", requestID: "G4"))
        XCTAssertEqual(parse("{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT\"}"),
                       CloudErrorDetails(code: "invalid_grant", message: "Invalid JWT"))
        XCTAssertEqual(parse("{\"__type\":\"com.amazon#ValidationException\",\"message\":\"bad size\"}", [("x-amzn-RequestId", "A5")]),
                       CloudErrorDetails(code: "ValidationException", message: "bad size", requestID: "A5"))
        XCTAssertEqual(parse("", [("x-ms-error-code", "BlobNotFound"), ("x-ms-request-id", "M6")], status: 404),
                       CloudErrorDetails(code: "BlobNotFound", requestID: "M6"))
        XCTAssertEqual(parse("{\"message\":\"x\"}", [("x-amzn-ErrorType", "ThrottlingException:http://internal")]),
                       CloudErrorDetails(code: "ThrottlingException", message: "x"))
        XCTAssertNil(parse("plain text"))
        XCTAssertNil(parse("{not json"))
    }

    func testLimiterHalvesOnThrottlingAndRecoversSlowly() {
        let l = ConcurrencyLimiter(maximum: 8, cooldown: 1)
        l.acquire(); l.acquire()
        XCTAssertEqual(l.release(.throttled, now: 100), 4)
        XCTAssertNil(l.release(.throttled, now: 100.5), "one overload halves once")
        XCTAssertEqual(l.currentLimit, 4)
        l.acquire()
        XCTAssertEqual(l.release(.throttled, now: 102), 2)
        l.acquire()
        XCTAssertEqual(l.release(.throttled, now: 104), 1)
        l.acquire()
        XCTAssertNil(l.release(.throttled, now: 106), "never below one")
        // Recovery: one more slot per `limit` successes.
        var successes = 0
        while l.currentLimit < 8 {
            l.acquire(); l.release(.success); successes += 1
            XCTAssertLessThan(successes, 100)
        }
        XCTAssertEqual(successes, 1 + 2 + 3 + 4 + 5 + 6 + 7)
    }

    func testLimiterBoundsInFlight() throws {
        let l = ConcurrencyLimiter(maximum: 3)
        let lock = NSLock()
        nonisolated(unsafe) var inFlight = 0
        nonisolated(unsafe) var peak = 0
        try runConcurrently(30, threads: 8) { _ in
            l.acquire()
            lock.withLock { inFlight += 1; peak = max(peak, inFlight) }
            usleep(2000)
            lock.withLock { inFlight -= 1 }
            l.release(.neutral)
        }
        XCTAssertEqual(peak, 3)
    }

    func testUnsupportedSchemeIsRefused() {
        let client = HTTPClient(configuration: testConfiguration())
        XCTAssertThrowsError(try client.send(HTTPRequest(method: "GET", url: "ftp://127.0.0.1/x"))) {
            XCTAssertTrue("\($0)".contains("only https://"), "\($0)")
        }
    }
}

final class TransportProgressTests: XCTestCase {
    func testAggregatorSumsTransfersAndUndoesRestarts() {
        let seen = Recorder<UInt64>()
        let total = TransferProgressAggregator { seen.append($0) }
        let a = total.handler(), b = total.handler()
        a(100, 1000)
        b(50, 500)
        a(400, 1000)
        XCTAssertEqual(total.bytesDone, 450)
        a(0, 1000)            // a retry starts over
        XCTAssertEqual(total.bytesDone, 50)
        a(1000, 1000)
        b(500, 500)
        total.add(24)         // skipped zero blocks
        XCTAssertEqual(total.bytesDone, 1524)
        XCTAssertEqual(seen.all.last, 1524)
    }
}
