import CloudAuth
import CVMSupport
import Deploy
import Foundation
import Transport

/// An error answer of the EC2 query API.
public struct EC2Error: Error, Sendable, Equatable {
    public var action: String
    public var status: Int
    public var code: String
    public var message: String
    public var requestID: String?

    /// True for "that resource does not exist" codes (`InvalidInstanceID.NotFound`, …).
    public var isNotFound: Bool {
        code.hasSuffix(".NotFound") || code == "InvalidAMIID.Unavailable"
    }

    /// One line for the user: the action, the code, AWS's message and what to do about it.
    public var cvmError: CVMError {
        var line = "EC2 \(action): \(code): \(message)"
        if let requestID, !requestID.isEmpty { line += " (request id \(requestID))" }
        if let hint = Self.hint(code: code, action: action) { line += "; \(hint)" }
        let kind: CVMError.Kind = code == "UnsupportedOperation" ? .unsupported : .io
        return CVMError(kind, line)
    }

    static func hint(code: String, action: String) -> String? {
        switch code {
        case "UnsupportedOperation", "Unsupported":
            return "this instance type or region may not support the requested feature (SEV-SNP runs on m6a, c6a and r6a in us-east-2 and eu-west-1: see `cvm-cli matrix --cloud aws`)"
        case "InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable":
            return "the image is missing or not ready; rerun deploy-aws to register it again"
        case "InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded":
            return "an account quota is reached: stop unused instances or request a quota increase (Service Quotas, EC2 On-Demand vCPUs)"
        case "AddressLimitExceeded":
            return "the Elastic IP quota is reached: release unused addresses or request a quota increase"
        case "ResourceLimitExceeded", "SecurityGroupLimitExceeded", "RulesPerSecurityGroupLimitExceeded":
            return "an account quota is reached: remove unused resources or request a quota increase"
        case "InsufficientInstanceCapacity":
            return "AWS has no capacity for this type here right now: retry later, or use another size or region from `cvm-cli matrix --cloud aws`"
        case "UnauthorizedOperation", "AuthFailure", "OptInRequired", "Blocked":
            return "the credentials lack permission for ec2:\(action) (or the account is not enabled for it)"
        case "VPCIdNotSpecified", "InvalidVpcID.NotFound":
            return "the region has no default VPC: create one (ec2:CreateDefaultVpc) and rerun"
        case "InvalidParameterValue", "InvalidParameterCombination", "InvalidParameter", "MissingParameter":
            return "AWS refused a parameter of \(action)"
        default:
            return nil
        }
    }
}

/// The EC2 query API (`Action=…&Version=2016-11-15`, form-encoded POST, SigV4 with the body's
/// SHA-256 in `x-amz-content-sha256`, XML answers). Reads always go out; with `dryRun` every
/// mutating call is recorded in `plan` instead of sent.
public final class EC2Client: @unchecked Sendable {
    public static let apiVersion = "2016-11-15"
    let session: AWSSession
    public let dryRun: Bool
    public let plan: DeployPlan
    /// Longest wall-clock wait for one call, retries of throttling included.
    public var deadline: Double = 300

    public init(session: AWSSession, dryRun: Bool, plan: DeployPlan) {
        self.session = session
        self.dryRun = dryRun
        self.plan = plan
    }

    public var endpoint: String { (try? session.endpoint("ec2")) ?? "https://ec2.\(session.region).amazonaws.com" }

    /// A describe/list call; throws the mapped error.
    public func read(_ action: String, _ params: [(String, String)] = [], retrying codes: Set<String> = []) throws -> EC2XMLElement {
        if dryRun {
            plan.add(PlannedCall(method: "POST", endpoint: endpoint + "/", operation: "ec2:\(action)", parameters: params, mutating: false))
        }
        return try result(action, params, retrying: codes).value()
    }

    /// A call that changes state: in a dry run it is recorded and nil returned.
    @discardableResult
    public func write(_ action: String, _ params: [(String, String)], retrying codes: Set<String> = []) throws -> EC2XMLElement? {
        if dryRun {
            plan.add(PlannedCall(method: "POST", endpoint: endpoint + "/", operation: "ec2:\(action)",
                                 parameters: params, mutating: true))
            return nil
        }
        return try result(action, params, retrying: codes).value()
    }

    /// A mutating call whose "does not exist" answer is fine (clean-up of parts already gone):
    /// returns false then.
    @discardableResult
    public func delete(_ action: String, _ params: [(String, String)]) throws -> Bool {
        if dryRun {
            plan.add(PlannedCall(method: "POST", endpoint: endpoint + "/", operation: "ec2:\(action)",
                                 parameters: params, mutating: true))
            return true
        }
        switch try result(action, params, retrying: []) {
        case .success: return true
        case .failure(let e) where e.ec2.isNotFound: return false
        case .failure(let e): throw e
        }
    }

    /// Sends one call. Answers with an EC2 error code come back as `.failure`; transport
    /// failures (after the transport's own retries) throw.
    public func result(_ action: String, _ params: [(String, String)], retrying codes: Set<String> = []) throws -> Result<EC2XMLElement, EC2Failure> {
        let pairs = [("Action", action), ("Version", Self.apiVersion)] + params
        let body = Array(PercentEncoding.formBody(pairs).utf8)
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
        var request = session.request("ec2", method: "POST", url: try session.endpoint("ec2") + "/",
                                      headers: headers, body: BytesBody(body), payloadSHA256: sha256Hex(body))
        // 4xx answers are read here (the caller decides what a code means); 5xx and throttling
        // are retried by the transport.
        request.acceptedStatuses = Set(200..<300).union(400..<500)
        request.deadline = deadline
        let start = monotonicSeconds()
        var pause = 0.5
        while true {
            let response = try session.send("EC2 \(action)", request)
            if (200..<300).contains(response.status) {
                guard let xml = EC2XMLElement.parse(response.body) else {
                    throw CVMError.io("EC2 \(action): the answer is not XML: \(String(decoding: response.body.prefix(200), as: UTF8.self))")
                }
                return .success(xml)
            }
            let error = Self.parseError(response, action: action)
            let retry = RetryClassifier.defaultThrottlingCodes.contains(error.code) || codes.contains(error.code)
            if retry, monotonicSeconds() - start + pause < deadline {
                session.client.logger.debug("EC2 \(action): \(error.code); retrying in \(pause) s")
                Thread.sleep(forTimeInterval: pause)
                pause = min(pause * 2, 10)
                continue
            }
            return .failure(EC2Failure(ec2: error))
        }
    }

    static func parseError(_ response: HTTPResponse, action: String) -> EC2Error {
        let xml = EC2XMLElement.parse(response.body)
        let error = xml?.at("Errors/Error") ?? xml?.child("Error") ?? xml
        return EC2Error(action: action, status: response.status,
                        code: error?.text("Code") ?? "HTTP\(response.status)",
                        message: error?.text("Message") ?? String(decoding: response.body.prefix(300), as: UTF8.self),
                        requestID: xml?.text("RequestID") ?? xml?.text("RequestId"))
    }

    // MARK: parameter helpers (EC2 query flattening: lists are `Name.N`, from 1)

    /// `Filter.N.Name` / `Filter.N.Value.M`.
    public static func filters(_ filters: [(String, [String])]) -> [(String, String)] {
        var out: [(String, String)] = []
        for (i, f) in filters.enumerated() {
            out.append(("Filter.\(i + 1).Name", f.0))
            for (j, v) in f.1.enumerated() { out.append(("Filter.\(i + 1).Value.\(j + 1)", v)) }
        }
        return out
    }

    /// `TagSpecification.N.ResourceType` / `.Tag.M.Key|Value`.
    public static func tagSpecifications(_ types: [String], tags: [(String, String)]) -> [(String, String)] {
        var out: [(String, String)] = []
        for (i, type) in types.enumerated() {
            out.append(("TagSpecification.\(i + 1).ResourceType", type))
            for (j, t) in tags.enumerated() {
                out.append(("TagSpecification.\(i + 1).Tag.\(j + 1).Key", t.0))
                out.append(("TagSpecification.\(i + 1).Tag.\(j + 1).Value", t.1))
            }
        }
        return out
    }
}

/// An `EC2Error` as a thrown error that prints as the mapped one-line message.
public struct EC2Failure: Error, Sendable, CustomStringConvertible {
    public let ec2: EC2Error
    public var description: String { ec2.cvmError.message }
}

extension Result where Failure == EC2Failure {
    /// The value, or the mapped `CVMError`.
    func value() throws -> Success {
        switch self {
        case .success(let v): return v
        case .failure(let f): throw f.ec2.cvmError
        }
    }
}
