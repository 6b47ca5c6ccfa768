@testable import AWSProvider
import CVMSupport
@testable import Transport
import Deploy
import XCTest

final class EC2ClientUnitTests: XCTestCase {
    func testXMLAnswersAreReadWithLibxml2() throws {
        let xml = """
        <?xml version="1.0" encoding="UTF-8"?>
        <DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
          <reservationSet><item><instancesSet>
            <item><instanceId>i-1</instanceId><instanceState><name>running</name></instanceState>
              <tagSet><item><key>cvm-cli:vm</key><value>a &amp; b</value></item></tagSet></item>
            <item><instanceId>i-2</instanceId><instanceState><name>pending</name></instanceState></item>
          </instancesSet></item></reservationSet>
        </DescribeInstancesResponse>
        """
        let root = try XCTUnwrap(EC2XMLElement.parse(Array(xml.utf8)))
        XCTAssertEqual(root.name, "DescribeInstancesResponse")
        let instances = root.items("reservationSet").flatMap { $0.items("instancesSet") }
        XCTAssertEqual(instances.map { $0.text("instanceId") }, ["i-1", "i-2"])
        XCTAssertEqual(instances.map { $0.text("instanceState/name") }, ["running", "pending"])
        XCTAssertEqual(instances[0].tags, ["cvm-cli:vm": "a & b"])
        XCTAssertNil(EC2XMLElement.parse(Array("<a><b></a>".utf8)))
        XCTAssertNil(EC2XMLElement.parse([]))
        // No external entity is fetched or expanded.
        let xxe = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r><v>&x;</v></r>"
        XCTAssertFalse(EC2XMLElement.parse(Array(xxe.utf8))?.text("v")?.contains("root:") ?? false)
    }

    func testErrorCodesBecomeOneClearLine() throws {
        let body = "<Response><Errors><Error><Code>UnsupportedOperation</Code><Message>AMD SEV-SNP is not supported for t3.micro</Message></Error></Errors><RequestID>req-7</RequestID></Response>"
        let e = EC2Client.parseError(HTTPResponse(status: 400, headers: HTTPHeaders(), body: Array(body.utf8), attempts: 1), action: "RunInstances")
        XCTAssertEqual(e.code, "UnsupportedOperation")
        XCTAssertEqual(e.requestID, "req-7")
        XCTAssertEqual(e.cvmError.kind, .unsupported)
        XCTAssertTrue(e.cvmError.message.hasPrefix("EC2 RunInstances: UnsupportedOperation: AMD SEV-SNP is not supported for t3.micro (request id req-7); "), e.cvmError.message)
        XCTAssertTrue(e.cvmError.message.contains("cvm-cli matrix --cloud aws"))
        for (code, words) in [("VcpuLimitExceeded", "quota"), ("InvalidAMIID.NotFound", "image"), ("AddressLimitExceeded", "Elastic IP"),
                              ("InsufficientInstanceCapacity", "capacity"), ("UnauthorizedOperation", "permission")] {
            let err = EC2Error(action: "RunInstances", status: 400, code: code, message: "m", requestID: nil)
            XCTAssertTrue(err.cvmError.message.contains(words), "\(code): \(err.cvmError.message)")
        }
        XCTAssertTrue(EC2Error(action: "X", status: 400, code: "InvalidGroup.NotFound", message: "", requestID: nil).isNotFound)
        XCTAssertFalse(EC2Error(action: "X", status: 400, code: "DependencyViolation", message: "", requestID: nil).isNotFound)
    }

    func testImageNamesOfAVMAreRecognisedExactly() {
        XCTAssertEqual(AWSDeployer.snapshot(fromImageName: "cvm-a-snap-0abc12", vm: "a"), "snap-0abc12")
        XCTAssertNil(AWSDeployer.snapshot(fromImageName: "cvm-a-snap-snap-0abc12", vm: "a"), "that is VM a-snap's image")
        XCTAssertNil(AWSDeployer.snapshot(fromImageName: "cvm-a-other", vm: "a"))
        XCTAssertEqual(AWSDeployer.wantedPermissions([.init(80), .init(9000, 9010), .init(8000)]).map { "\($0.proto):\($0.from)-\($0.to)" },
                       ["tcp:8000-8000", "tcp:80-80", "udp:80-80", "tcp:9000-9010", "udp:9000-9010", "udp:8000-8000"])
    }
}
