import CVMSupport
import Foundation
import Transport
import XCTest

/// Large bodies: a streamed 64 MiB upload with flat memory, a cut connection mid-body, downloads.
final class TransportStreamingTests: XCTestCase {
    nonisolated(unsafe) static var server: FaultServer!
    nonisolated(unsafe) static var bigFile: String!
    nonisolated(unsafe) static var bigSHA256: String!
    static let bigSize = 64 << 20

    override class func setUp() {
        super.setUp()
        server = try! FaultServer()
        // 64 MiB of non-repeating data, written 1 MiB at a time.
        let path = NSTemporaryDirectory() + "cvm-transport-upload-\(getpid()).bin"
        let fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0o600)
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var x: UInt64 = 0x1234_5678
        for block in 0..<(bigSize >> 20) {
            for i in 0..<chunk.count {
                x = x &* 6364136223846793005 &+ 1442695040888963407
                chunk[i] = UInt8(truncatingIfNeeded: x >> 33)
            }
            _ = chunk.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(block << 20)) }
        }
        close(fd)
        bigFile = path
        bigSHA256 = String(try! runTool("sha256sum", [path]).prefix(64))
    }

    override class func tearDown() {
        server?.stop()
        if let f = bigFile { unlink(f) }
        super.tearDown()
    }

    var server: FaultServer { Self.server }

    func testStreamed64MiBUploadArrivesIntactWithFlatMemory() throws {
        let client = HTTPClient(configuration: testConfiguration(deadline: 120))
        let file = try FileDescriptor.openForReading(Self.bigFile)
        let body = try FileRangeBody(file: file)
        let baseline = residentBytes()
        let peak = Recorder<UInt64>()
        let lastSent = Recorder<UInt64>()
        let r = try client.send(HTTPRequest(method: "PUT", url: "\(server.base)/upload", body: body)) { sent, total in
            XCTAssertEqual(total, UInt64(Self.bigSize))
            lastSent.append(sent)
            if sent % (8 << 20) < (1 << 16) { peak.append(residentBytes()) }
        }
        let echo = try Echo.decode(r)
        XCTAssertEqual(echo.length, Self.bigSize)
        XCTAssertEqual(echo.sha256, Self.bigSHA256)
        XCTAssertNil(echo.header("expect"), "no 100-continue round trip")
        XCTAssertEqual(echo.header("content-length"), "\(Self.bigSize)")
        XCTAssertEqual(lastSent.all.last, UInt64(Self.bigSize))
        let growth = (peak.all + [residentBytes()]).max()! &- baseline
        XCTAssertLessThan(Int64(bitPattern: growth), 24 << 20, "memory grew by \(growth) bytes during a 64 MiB upload")
    }

    func testConnectionCutMidBodyIsRetriedAndNothingIsLost() throws {
        let client = HTTPClient(configuration: testConfiguration(deadline: 60))
        let file = try FileDescriptor.openForReading(Self.bigFile)
        let body = FileRangeBody(file: file, range: (3 << 20)..<(11 << 20))
        let expected = try runTool("sh", ["-c", "tail -c +\((3 << 20) + 1) '\(Self.bigFile!)' | head -c \(8 << 20) | sha256sum"]).prefix(64)
        let k = "cut" + UUID().uuidString.prefix(8)
        let r = try client.send(HTTPRequest(method: "PUT", url: "\(server.base)/plan/\(k)/drop,ok", body: body))
        XCTAssertEqual(r.attempts, 2)
        let echo = try Echo.decode(r)
        XCTAssertEqual(echo.length, 8 << 20)
        XCTAssertEqual(echo.sha256, String(expected))
    }

    func testStreamedDownloadReachesTheSinkIntact() throws {
        let client = HTTPClient(configuration: testConfiguration(deadline: 60))
        let sink = PatternSink()
        let size = 8 << 20
        let r = try client.send(HTTPRequest(method: "GET", url: "\(server.base)/download/\(size)"), streamingTo: sink)
        XCTAssertEqual(r.status, 200)
        XCTAssertTrue(r.body.isEmpty)
        XCTAssertEqual(sink.received, UInt64(size))
        XCTAssertNil(sink.mismatch)
    }

    func testBodyReadErrorIsNotRetried() throws {
        struct FailingBody: RequestBody {
            var size: UInt64 { 1 << 20 }
            func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
                throw CVMError.io("disk.vhd: read failed at byte \(offset): Input/output error")
            }
        }
        let client = HTTPClient(configuration: testConfiguration())
        let k = "rb" + UUID().uuidString.prefix(8)
        XCTAssertThrowsError(try client.send(HTTPRequest(method: "PUT", url: "\(server.base)/plan/\(k)/ok", body: FailingBody()))) {
            XCTAssertTrue("\($0)".contains("disk.vhd: read failed at byte 0"), "\($0)")
        }
    }
}
