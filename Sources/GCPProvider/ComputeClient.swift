import CloudAuth
import CVMSupport
import Deploy
import Foundation
import Transport

/// The Compute Engine v1 REST API (`{base}projects/{project}/…`, JSON both ways, OAuth bearer
/// token on every attempt). Reads always go out; with `dryRun` each mutating call is recorded in
/// `plan` (as `compute.images.insert` etc.) instead of sent. Every mutating call returns an
/// Operation, which is waited for with `operations/{op}/wait` under `operationDeadline`.
public final class ComputeClient: @unchecked Sendable {
    let client: HTTPClient
    let tokens: GoogleAccessTokenSource
    /// `https://compute.googleapis.com/compute/v1/` or `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`.
    public let base: String
    public let project: String
    public let dryRun: Bool
    public let plan: DeployPlan
    /// Wall-clock budget of one request with its retries.
    public var requestDeadline: Double = 300
    /// Wall-clock budget for one Operation to reach DONE.
    public var operationDeadline: Double = 1800
    /// Pause before asking again when `wait` answered at once without DONE: first, doubled up to
    /// the maximum.
    public var pollInterval: (first: Double, maximum: Double) = (0.5, 5)
    /// Polled while waiting for an Operation.
    public var isCancelled: (@Sendable () -> Bool)?

    public init(client: HTTPClient, tokens: GoogleAccessTokenSource, base: String, project: String,
                dryRun: Bool, plan: DeployPlan) {
        self.client = client
        self.tokens = tokens
        self.base = base.hasSuffix("/") ? base : base + "/"
        self.project = project
        self.dryRun = dryRun
        self.plan = plan
    }

    /// `projects/{project}/` + rest.
    public func url(_ path: String, query: [(String, String)] = []) -> String {
        var u = base + "projects/" + PercentEncoding.encode(project) + "/" + path
        if !query.isEmpty {
            u += "?" + query.map { "\(PercentEncoding.encode($0.0))=\(PercentEncoding.encode($0.1))" }.joined(separator: "&")
        }
        return u
    }

    // MARK: calls

    /// A GET; nil when the resource does not exist (404).
    public func get(_ path: String, operation: String) throws -> [String: Any]? {
        let (status, object) = try send("GET", url(path), body: nil, operation: operation)
        if status == 404 { return nil }
        return try check(status, object, operation: operation)
    }

    /// A mutating call (insert, patch, delete, start): sent with a fresh `requestId` (retries of
    /// the same request are recognised by the server), then its Operation is waited for.
    /// Returns the finished Operation, or nil in a dry run. `notFoundIsFine` makes a 404 answer
    /// return nil too (deletes of parts already gone).
    @discardableResult
    public func mutate(_ method: String, _ path: String, body: [String: Any]?, operation: String,
                       parameters: [(String, String)], notFoundIsFine: Bool = false) throws -> [String: Any]? {
        if dryRun {
            plan.add(PlannedCall(method: method, endpoint: url(path), operation: operation, parameters: parameters, mutating: true))
            return nil
        }
        let requestID = UUID().uuidString.lowercased()
        let (status, object) = try send(method, url(path, query: [("requestId", requestID)]), body: body, operation: operation)
        if status == 404 && notFoundIsFine { return nil }
        let op = try check(status, object, operation: operation)
        plan.add(PlannedCall(method: method, endpoint: url(path), operation: operation, parameters: parameters, mutating: true))
        return try wait(op, operation: operation)
    }

    /// Waits for an Operation with `…/operations/{name}/wait` (zone, region or global, as the
    /// Operation says) until DONE; an Operation that finished with errors is one clear error.
    public func wait(_ operation: [String: Any], operation call: String) throws -> [String: Any] {
        var op = operation
        let start = monotonicSeconds()
        var pause = pollInterval.first
        while (op["status"] as? String) != "DONE" {
            guard let name = op["name"] as? String, !name.isEmpty else {
                throw CVMError.io("GCE \(call): the answer is not an Operation (no name); expected kind compute#operation")
            }
            if monotonicSeconds() - start > operationDeadline {
                throw CVMError.io("GCE \(call): gave up waiting for operation \(name) after \(Int(monotonicSeconds() - start)) s (still \(op["status"] as? String ?? "?")); rerun to pick up from there")
            }
            if let isCancelled, isCancelled() {
                throw CVMError(.interrupted, "interrupted while waiting for GCE operation \(name) (\(call)); rerun to pick up from there")
            }
            let path = Self.scopePath(of: op) + "operations/\(PercentEncoding.encode(name))/wait"
            let asked = monotonicSeconds()
            let (status, object) = try send("POST", url(path), body: nil, operation: "compute.operations.wait")
            op = try check(status, object, operation: "\(call) (waiting for operation \(name))")
            // `wait` holds the call until DONE or about 2 minutes; one that came back at once
            // without DONE is not asked again at once.
            if (op["status"] as? String) != "DONE", monotonicSeconds() - asked < 1 {
                Thread.sleep(forTimeInterval: pause)
                pause = min(pause * 2, pollInterval.maximum)
            }
        }
        if let error = Self.operationError(op, call: call) { throw error }
        return op
    }

    /// `zones/Z/`, `regions/R/` or `global/` from an Operation's `zone`/`region` URLs.
    static func scopePath(of op: [String: Any]) -> String {
        if let zone = op["zone"] as? String, !zone.isEmpty { return "zones/\(lastComponent(zone))/" }
        if let region = op["region"] as? String, !region.isEmpty { return "regions/\(lastComponent(region))/" }
        return "global/"
    }

    static func lastComponent(_ s: String) -> String { String(s.split(separator: "/").last ?? Substring(s)) }

    /// The Operation's `error.errors` as one line, nil when it has none.
    static func operationError(_ op: [String: Any], call: String) -> CVMError? {
        guard let error = op["error"] as? [String: Any] else { return nil }
        let errors = (error["errors"] as? [[String: Any]]) ?? []
        let parts = errors.map { e -> String in
            let code = e["code"] as? String ?? "ERROR"
            let message = (e["message"] as? String ?? "").split(whereSeparator: \.isNewline).joined(separator: " ")
            return message.isEmpty ? code : "\(code): \(message)"
        }
        var line = "GCE \(call) failed (operation \(op["name"] as? String ?? "?")): "
            + (parts.isEmpty ? (op["httpErrorMessage"] as? String ?? "unknown error") : parts.joined(separator: "; "))
        if let hint = hint(errors.compactMap { $0["code"] as? String }) { line += "; \(hint)" }
        return CVMError(errors.contains { ($0["code"] as? String) == "UNSUPPORTED_OPERATION" } ? .unsupported : .io, line)
    }

    static func hint(_ codes: [String]) -> String? {
        for code in codes {
            switch code {
            case "QUOTA_EXCEEDED":
                return "a project quota is reached: free resources or request more (IAM & Admin → Quotas)"
            case "ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "RESOURCE_POOL_EXHAUSTED":
                return "the zone has no capacity for this machine type right now: retry later or pick another zone from `cvm-cli matrix --cloud gcp`"
            case "UNSUPPORTED_OPERATION", "CONDITION_NOT_MET":
                return "the machine type, zone or image may not support this confidential-computing setting (see `cvm-cli matrix --cloud gcp`)"
            case "RESOURCE_NOT_FOUND", "NOT_FOUND":
                return "a resource it refers to is missing; rerun deploy-gcp to create it again"
            default: continue
            }
        }
        return nil
    }

    // MARK: transport

    /// One JSON request; 4xx answers come back as (status, body) for the caller to read, 5xx and
    /// 429 are retried by the transport.
    private func send(_ method: String, _ url: String, body: [String: Any]?, operation: String) throws -> (Int, [String: Any]) {
        var headers = HTTPHeaders()
        headers.add("Accept", "application/json")
        var data: [UInt8]?
        if let body {
            headers.add("Content-Type", "application/json; charset=UTF-8")
            data = Array(try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes]))
        }
        var request = HTTPRequest(method: method, url: url, headers: headers, body: data.map { BytesBody($0) },
                                  sign: tokens.requestSigner)
        request.acceptedStatuses = Set(200..<300).union(400..<500).subtracting([401, 429])
        request.deadline = requestDeadline
        let response: HTTPResponse
        do {
            response = try client.send(request)
        } catch let error as CVMError {
            throw CVMError(error.kind, "GCE \(operation): \(error.message)")
        }
        let object = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:]
        return (response.status, object)
    }

    private func check(_ status: Int, _ object: [String: Any], operation: String) throws -> [String: Any] {
        guard (200..<300).contains(status) else {
            let error = object["error"] as? [String: Any]
            let message = (error?["message"] as? String ?? "no message").split(whereSeparator: \.isNewline).joined(separator: " ")
            let reason = ((error?["errors"] as? [[String: Any]])?.first?["reason"] as? String) ?? (error?["status"] as? String) ?? ""
            var line = "GCE \(operation): HTTP \(status)\(reason.isEmpty ? "" : " \(reason)"): \(message)"
            switch status {
            case 403: line += "; the credentials lack permission for \(operation) in project \(project) (or the Compute Engine API is not enabled)"
            case 404: line += "; check --project_id \(project) and --region"
            default: break
            }
            throw CVMError.io(line)
        }
        return object
    }
}
