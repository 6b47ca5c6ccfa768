@testable import AWSProvider
import CloudAuth
import CVMSupport
import DiskImage
import Foundation
@testable import Transport
import XCTest

/// The pieces that need no server: destinations, part sizes, block selection, XML, signing glue.
final class AWSProviderUnitTests: XCTestCase {
    func testDestinations() throws {
        XCTAssertEqual(try UploadDestination(parsing: "ebs://us-east-2"), .ebsSnapshot(region: "us-east-2"))
        XCTAssertEqual(try UploadDestination(parsing: "s3://my-bucket/a/b c.vmdk"), .s3Object(bucket: "my-bucket", key: "a/b c.vmdk"))
        for bad in ["ebs://", "ebs://US_EAST", "s3://bucket", "s3://b/x", "s3://Bucket/x", "gs://b/x", "/tmp/x"] {
            XCTAssertThrowsError(try UploadDestination(parsing: bad), bad) { error in
                XCTAssertEqual((error as? CVMError)?.kind, .usage, bad)
            }
        }
    }

    func testPartSizeKeepsPartsWithinLimits() throws {
        let mib: UInt64 = 1 << 20
        XCTAssertEqual(try S3MultipartUpload.partSize(forFileSize: 0), 5 * mib)
        XCTAssertEqual(try S3MultipartUpload.partSize(forFileSize: 12 * mib), 5 * mib)
        XCTAssertEqual(try S3MultipartUpload.partSize(forFileSize: 50_000 * mib), 5 * mib)
        XCTAssertEqual(try S3MultipartUpload.partSize(forFileSize: 50_000 * mib + 1), 6 * mib)
        let huge: UInt64 = 4 << 40
        let part = try S3MultipartUpload.partSize(forFileSize: huge)
        XCTAssertLessThanOrEqual((huge + part - 1) / part, 10_000)
        XCTAssertEqual(part % mib, 0)
        XCTAssertThrowsError(try S3MultipartUpload.partSize(forFileSize: 6 << 40))
    }

    func testStoredBlocksAreVisitedOnceInOrder() {
        let k: UInt64 = 1024
        var it = StoredChunkIndices(ranges: [0..<10, 600 * k..<1100 * k, 1500 * k..<1600 * k, 1000 * k..<1030 * k],
                                    chunkSize: 512 * k, limit: 1536 * k)
        var got = [UInt64]()
        while let i = it.next() { got.append(i) }
        XCTAssertEqual(got, [0, 1, 2])   // the range past the limit is clamped away
        XCTAssertTrue(isAllZero([UInt8](repeating: 0, count: 13)))
        var bytes = [UInt8](repeating: 0, count: 13)
        bytes[12] = 1
        XCTAssertFalse(isAllZero(bytes))
    }

    func testDescribeSnapshotsAnswerIsRead() throws {
        let xml = """
        <?xml version="1.0" encoding="UTF-8"?>
        <DescribeSnapshotsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
          <requestId>r-1</requestId>
          <snapshotSet>
            <item><status>pending</status><snapshotId>snap-other</snapshotId><progress>10%</progress></item>
            <item>
              <snapshotId>snap-1</snapshotId><status>error</status><progress>80%</progress>
              <stateMessage>out of &lt;luck&gt;</stateMessage>
              <tagSet><item><key>status</key><value>x</value></item></tagSet>
            </item>
          </snapshotSet>
        </DescribeSnapshotsResponse>
        """
        let state = try EC2SnapshotWaiter.parse(Array(xml.utf8), snapshotID: "snap-1")
        XCTAssertEqual(state, .init(state: "error", progress: "80%", message: "out of <luck>"))
        XCTAssertThrowsError(try EC2SnapshotWaiter.parse(Array(xml.utf8), snapshotID: "snap-2"))
        XCTAssertThrowsError(try EC2SnapshotWaiter.parse(Array("not xml".utf8), snapshotID: "snap-1"))
    }

    func testSigningHookSignsContentHashAndMinimalHeaders() throws {
        let signer = AWSSigV4Signer(credentials: AWSCredentials(accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret"),
                                    region: "us-east-2", service: "ebs")
        var headers = HTTPHeaders()
        headers.add("User-Agent", "cvm-cli")
        headers.add("x-amz-Checksum", "abc=")
        var request = SigningRequest(method: "GET", url: "http://127.0.0.1:9/snapshots/snap-1/blocks?x=a+b",
                                     headers: headers, contentLength: nil, payloadSHA256: nil, body: nil, attempt: 1)
        try signer.requestSigner(&request)
        XCTAssertEqual(request.headers["x-amz-content-sha256"], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        let authorization = try XCTUnwrap(request.headers["Authorization"])
        XCTAssertTrue(authorization.contains("SignedHeaders=host;x-amz-checksum;x-amz-content-sha256;x-amz-date,"), authorization)
        XCTAssertEqual(request.url, "http://127.0.0.1:9/snapshots/snap-1/blocks?x=a%2Bb")
    }

    func testPartsMeetDataRangesByBinarySearch() {
        let data: [Range<UInt64>] = [10..<20, 30..<40, 100..<101]
        for lo in UInt64(0)..<110 {
            for length in UInt64(1)..<15 {
                let part = lo..<(lo + length)
                XCTAssertEqual(S3MultipartUpload.overlapsData(part, data), data.contains { $0.overlaps(part) }, "\(part)")
            }
        }
        XCTAssertFalse(S3MultipartUpload.overlapsData(0..<5, []))
    }
}
