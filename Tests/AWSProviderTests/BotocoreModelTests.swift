@testable import AWSProvider
import CVMCrypto
import CVMSupport
import Foundation
@testable import Transport
import AWSTestSupport
import XCTest

/// Our EBS and EC2 request parts against botocore's own service models: the StartSnapshot body
/// validated and re-serialized by botocore, the header names and values botocore's serializer
/// produces for PutSnapshotBlock/CompleteSnapshot, and its EC2 query parameters for
/// DescribeSnapshots. (moto accepts more than AWS does; the model is the contract.)
final class BotocoreModelTests: XCTestCase {
    static let script = #"""
import json, sys
import botocore.session
from botocore.serialize import create_serializer
from botocore.validate import ParamValidator

mine = json.loads(sys.argv[1])
session = botocore.session.get_session()
out = {}

def serialize(service, operation, params):
    model = session.get_service_model(service)
    op = model.operation_model(operation)
    report = ParamValidator().validate(params, op.input_shape)
    if report.has_errors():
        raise SystemExit(f"{operation}: {report.generate_report()}")
    return create_serializer(model.metadata["protocol"]).serialize_to_request(params, op)

start = json.loads(mine["startBody"])
req = serialize("ebs", "StartSnapshot", start)
out["startBody"] = json.loads(req["body"])
out["startPath"] = req["url_path"]

req = serialize("ebs", "PutSnapshotBlock", {"SnapshotId": "snap-1", "BlockIndex": 7, "BlockData": b"",
    "DataLength": 524288, "Checksum": mine["digest"], "ChecksumAlgorithm": "SHA256"})
out["putHeaders"] = {k.lower(): v for k, v in req["headers"].items() if k.lower().startswith("x-amz-")}
out["putPath"] = req["url_path"]

req = serialize("ebs", "CompleteSnapshot", {"SnapshotId": "snap-1", "ChangedBlocksCount": mine["count"],
    "Checksum": mine["aggregate"], "ChecksumAlgorithm": "SHA256", "ChecksumAggregationMethod": "LINEAR"})
out["completeHeaders"] = {k.lower(): v for k, v in req["headers"].items() if k.lower().startswith("x-amz-")}
out["completePath"] = req["url_path"]

req = serialize("ec2", "DescribeSnapshots", {"SnapshotIds": ["snap-1"]})
out["describe"] = req["body"]
print(json.dumps(out))
"""#

    func testRequestsMatchBotocoreServiceModels() throws {
        let check = try MotoServer.python(["-c", "import botocore"], allowFailure: true)
        if check.status != 0 { throw XCTSkip("botocore is not installed") }

        var options = AWSUploadOptions()
        options.clientToken = "token-1"
        let startBody = try EBSSnapshotUpload.startSnapshotBody(volumeGiB: 30, options: options)
        let digest = SHA256.hash([1, 2, 3])
        let aggregate = SHA256.hash(digest)
        let mine: [String: Any] = [
            "startBody": String(decoding: startBody, as: UTF8.self),
            "digest": Base64.encode(digest), "aggregate": Base64.encode(aggregate), "count": 12,
        ]
        let input = String(decoding: try JSONSerialization.data(withJSONObject: mine), as: UTF8.self)
        let r = try MotoServer.python(["-c", Self.script, input])
        let theirs = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stderr)

        // StartSnapshot: botocore validates our body and serializes it back unchanged.
        let ours = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(startBody)) as? NSDictionary)
        XCTAssertEqual(theirs["startBody"] as? NSDictionary, ours)
        XCTAssertEqual(theirs["startPath"] as? String, "/snapshots")

        func lowered(_ h: HTTPHeaders) -> [String: String] {
            Dictionary(uniqueKeysWithValues: h.fields.map { ($0.name.lowercased(), $0.value) })
        }
        XCTAssertEqual(theirs["putHeaders"] as? [String: String],
                       lowered(EBSSnapshotUpload.putBlockHeaders(length: 524_288, digest: digest)))
        XCTAssertEqual(theirs["putPath"] as? String, "/snapshots/snap-1/blocks/7")
        XCTAssertEqual(theirs["completeHeaders"] as? [String: String],
                       lowered(EBSSnapshotUpload.completeHeaders(changedBlocks: 12, aggregate: aggregate)))
        XCTAssertEqual(theirs["completePath"] as? String, "/snapshots/completion/snap-1")

        let describe = try XCTUnwrap(theirs["describe"] as? [String: String])
        let ourDescribe = Dictionary(uniqueKeysWithValues: EC2SnapshotWaiter.describeParameters("snap-1"))
        XCTAssertEqual(describe, ourDescribe)
    }
}
