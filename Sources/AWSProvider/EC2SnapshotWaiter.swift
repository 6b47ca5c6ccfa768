import CloudAuth
import CVMSupport
import Foundation
import Transport

/// Polls EC2 DescribeSnapshots (query API, XML answers) until a snapshot is `completed`,
/// against a wall-clock deadline rather than a number of attempts.
struct EC2SnapshotWaiter {
    static let apiVersion = "2016-11-15"
    let session: AWSSession
    let options: AWSUploadOptions

    /// The state and progress of one snapshot.
    struct SnapshotState: Equatable {
        var state: String
        var progress: String?
        var message: String?
    }

    func waitUntilCompleted(_ snapshotID: String) throws {
        let start = monotonicSeconds()
        var pause = options.pollInterval.first
        while true {
            let current = try describe(snapshotID)
            options.log?("DescribeSnapshots: \(snapshotID) \(current.state)\(current.progress.map { " \($0)" } ?? "")")
            switch current.state {
            case "completed":
                return
            case "error":
                throw CVMError.io("EC2 DescribeSnapshots: snapshot \(snapshotID) failed (state 'error'\(current.message.map { ": \($0)" } ?? ""))")
            default:
                break   // pending, recoverable, recovering
            }
            let elapsed = monotonicSeconds() - start
            if elapsed + pause > options.completionDeadline {
                throw CVMError.io("EC2 DescribeSnapshots: snapshot \(snapshotID) still '\(current.state)' after \(Int(elapsed)) s (deadline \(Int(options.completionDeadline)) s); it may still complete — check it later")
            }
            Thread.sleep(forTimeInterval: pause)
            pause = min(pause * 2, options.pollInterval.maximum)
        }
    }

    /// The query parameters of DescribeSnapshots for one snapshot.
    static func describeParameters(_ snapshotID: String) -> [(String, String)] {
        [("Action", "DescribeSnapshots"), ("Version", apiVersion), ("SnapshotId.1", snapshotID)]
    }

    /// One DescribeSnapshots call for `snapshotID`.
    func describe(_ snapshotID: String) throws -> SnapshotState {
        let body = Array(PercentEncoding.formBody(Self.describeParameters(snapshotID)).utf8)
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
        var request = session.request("ec2", method: "POST", url: try session.endpoint("ec2") + "/",
                                      headers: headers, body: BytesBody(body), payloadSHA256: sha256Hex(body))
        // A new snapshot may not be visible to EC2 at once.
        var classifier = session.client.configuration.classifier
        classifier.retryableCodes.insert("InvalidSnapshot.NotFound")
        request.retryClassifier = classifier
        request.deadline = min(session.client.configuration.deadline, 300)
        let response = try session.send("EC2 DescribeSnapshots \(snapshotID)", request)
        return try Self.parse(response.body, snapshotID: snapshotID)
    }

    /// Reads `<snapshotSet><item>` of a DescribeSnapshots answer and picks `snapshotID`.
    static func parse(_ body: [UInt8], snapshotID: String) throws -> SnapshotState {
        guard let xml = XMLFields(body) else {
            throw CVMError.io("EC2 DescribeSnapshots \(snapshotID): the answer is not XML: \(String(decoding: body.prefix(200), as: UTF8.self))")
        }
        // Children end before their item does: collect them, decide at the item's end.
        let item = "DescribeSnapshotsResponse/snapshotSet/item"
        var current: SnapshotState?
        var fields = [String: String]()
        for field in xml.fields {
            if field.path == item {
                if fields["snapshotId"] == snapshotID, let state = fields["status"] {
                    current = SnapshotState(state: state, progress: fields["progress"], message: fields["stateMessage"])
                }
                fields = [:]
            } else if field.path.hasPrefix(item + "/") {
                let name = field.path.dropFirst(item.count + 1)
                if !name.contains("/") { fields[String(name)] = field.text }
            }
        }
        guard let current else {
            throw CVMError.io("EC2 DescribeSnapshots: snapshot \(snapshotID) is not in the answer")
        }
        return current
    }
}
