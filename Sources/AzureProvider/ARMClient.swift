import CloudAuth
import CVMSupport
import Deploy
import Foundation
import Transport

/// Where ARM is and which token audience it takes. `AZURE_RESOURCE_MANAGER_ENDPOINT` overrides
/// the public cloud's `https://management.azure.com` (sovereign clouds, Azure Stack, local fakes),
/// as the Azure SDKs' cloud configuration does; `AZURE_RESOURCE_MANAGER_AUDIENCE` overrides the
/// token scope's audience, which otherwise stays the public cloud's (`…/.default`).
public struct ARMEndpoint: Sendable, Equatable {
    public var baseURL: String
    public var scope: String

    public static let publicCloud = "https://management.azure.com"

    public init(environment: [String: String]) throws {
        var base = environment["AZURE_RESOURCE_MANAGER_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 } ?? Self.publicCloud
        while base.hasSuffix("/") { base.removeLast() }
        let lower = base.lowercased()
        guard lower.hasPrefix("https://") || lower.hasPrefix("http://") else {
            throw CVMError.usage("AZURE_RESOURCE_MANAGER_ENDPOINT '\(base)' is not an http(s) URL; expected e.g. \(Self.publicCloud)")
        }
        baseURL = base
        var audience = environment["AZURE_RESOURCE_MANAGER_AUDIENCE"].flatMap { $0.isEmpty ? nil : $0 } ?? Self.publicCloud
        while audience.hasSuffix("/") { audience.removeLast() }
        scope = audience + "/.default"
    }
}

/// Entra ID access tokens for one scope from a client secret, cached and fetched again five
/// minutes before they expire. Thread-safe; the token and secret never reach a log line.
public final class EntraTokenSource: @unchecked Sendable {
    let credentials: EntraClientCredentials
    let scope: String
    let client: HTTPClient
    private let lock = NSLock()
    private var token: String?
    private var expires: Double = 0
    /// Every token handed out, so outputs can be scrubbed of them.
    private var issued: [String] = []

    public init(credentials: EntraClientCredentials, scope: String, client: HTTPClient) {
        self.credentials = credentials
        self.scope = scope
        self.client = client
    }

    /// A token valid for at least five more minutes.
    public func accessToken() throws -> String {
        try lock.withLock {
            if let token, monotonicSeconds() < expires - 300 { return token }
            let form = credentials.tokenRequest(scope: scope)
            var headers = HTTPHeaders()
            headers.add("Content-Type", form.contentType)
            headers.add("Accept", "application/json")
            var request = HTTPRequest(method: "POST", url: form.url, headers: headers, body: BytesBody(form.body))
            request.secretValues = [credentials.clientSecret, PercentEncoding.encode(credentials.clientSecret)]
            let started = monotonicSeconds()
            let response: HTTPResponse
            do {
                response = try client.send(request)
            } catch let error as CVMError {
                throw CVMError(error.kind, "Entra ID token for \(credentials.clientId) at \(credentials.tokenURL): \(error.message); check AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_AUTHORITY_HOST")
            }
            guard let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
                  let value = object["access_token"] as? String, !value.isEmpty else {
                throw CVMError.io("Entra ID token endpoint \(credentials.tokenURL) answered without an access_token")
            }
            let lifetime = (object["expires_in"] as? Double) ?? (object["expires_in"] as? String).flatMap(Double.init) ?? 3600
            token = value
            expires = started + lifetime
            issued.append(value)
            return value
        }
    }

    var issuedTokens: [String] { lock.withLock { issued } }
}

/// One ARM answer: status, headers and the JSON body (an empty object when there was none).
public struct ARMResponse: @unchecked Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var json: [String: Any]
}

/// ARM REST over the shared Transport: bearer tokens from `EntraTokenSource` on every attempt,
/// `api-version` pinned per resource type by the caller, long-running operations polled through
/// `Azure-AsyncOperation` (else `Location`) honouring `Retry-After` until a wall-clock deadline.
/// In a dry run, reads are sent and each mutating call is recorded in `plan` instead.
public final class ARMClient: @unchecked Sendable {
    public let endpoint: ARMEndpoint
    public let subscription: String
    let tokens: EntraTokenSource
    let client: HTTPClient
    let dryRun: Bool
    let plan: DeployPlan
    /// Wall-clock budget of one long-running operation, polls included.
    public var operationDeadline: Double = 3600
    /// First and largest pause between polls when the service gives no Retry-After.
    public var pollInterval: (first: Double, maximum: Double) = (2, 30)

    public init(endpoint: ARMEndpoint, subscription: String, tokens: EntraTokenSource, client: HTTPClient,
                dryRun: Bool, plan: DeployPlan) throws {
        let ok = !subscription.isEmpty && subscription.allSatisfy { $0.isASCII && ($0.isHexDigit || $0 == "-") }
        guard ok else {
            throw CVMError.usage("subscription '\(subscription)': expected a subscription id (a GUID) from AZURE_SUBSCRIPTION_ID or --subscription")
        }
        self.endpoint = endpoint
        self.subscription = subscription
        self.tokens = tokens
        self.client = client
        self.dryRun = dryRun
        self.plan = plan
    }

    /// `/subscriptions/<id>`.
    public var subscriptionPath: String { "/subscriptions/\(subscription)" }

    func url(_ path: String, apiVersion: String) -> String {
        let full = path.hasPrefix("http://") || path.hasPrefix("https://") ? path : endpoint.baseURL + path
        return full + (full.contains("?") ? "&" : "?") + "api-version=" + apiVersion
    }

    private func request(_ method: String, _ url: String, body: [String: Any]?) throws -> HTTPRequest {
        var headers = HTTPHeaders()
        headers.add("Accept", "application/json")
        var data: [UInt8]?
        if let body {
            data = Array(try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes]))
            headers.add("Content-Type", "application/json")
        }
        let tokens = self.tokens
        var request = HTTPRequest(method: method, url: url, headers: headers, body: data.map { BytesBody($0) }) { r in
            r.headers.set("Authorization", "Bearer " + (try tokens.accessToken()))
        }
        request.secretValues = tokens.issuedTokens
        return request
    }

    private func send(_ operation: String, _ request: HTTPRequest) throws -> ARMResponse {
        let response: HTTPResponse
        do {
            response = try client.send(request)
        } catch let error as CVMError {
            throw CVMError(error.kind, "ARM \(operation): \(error.message)")
        }
        let json = response.body.isEmpty ? [:]
            : ((try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:])
        return ARMResponse(status: response.status, headers: response.headers, json: json)
    }

    /// GET; nil when the resource (or its parent) does not exist.
    public func get(_ path: String, apiVersion: String) throws -> [String: Any]? {
        var r = try request("GET", url(path, apiVersion: apiVersion), body: nil)
        r.acceptedStatuses = Set(200..<300).union([404])
        let answer = try send("GET \(path)", r)
        return answer.status == 404 ? nil : answer.json
    }

    /// A read-only POST (e.g. `listKeys`), made in a dry run too.
    public func postRead(_ path: String, apiVersion: String) throws -> [String: Any] {
        let r = try request("POST", url(path, apiVersion: apiVersion), body: nil)
        return try send("POST \(path)", r).json
    }

    /// PUT a resource and wait for it to be provisioned; returns its final state (nil in a dry run).
    @discardableResult
    public func put(_ path: String, apiVersion: String, operation: String, body: [String: Any]) throws -> [String: Any]? {
        let target = url(path, apiVersion: apiVersion)
        plan.add(PlannedCall(method: "PUT", endpoint: target, operation: operation,
                             parameters: [("name", String(path.split(separator: "/").last ?? ""))], mutating: true))
        if dryRun { return nil }
        let answer = try send("PUT \(path)", try request("PUT", target, body: body))
        if let done = try waitIfLongRunning(answer, what: "PUT \(path)") {
            // Location-style operations end with the resource itself.
            if done.status == 200 || done.status == 201, !done.json.isEmpty, done.json["id"] != nil { return done.json }
        } else if !answer.json.isEmpty, !Self.isProvisioning(answer.json) {
            return answer.json
        }
        // Without an operation to follow, the resource's own provisioningState tells when it is done.
        let start = monotonicSeconds()
        var pause = pollInterval.first
        while true {
            guard let final = try get(path, apiVersion: apiVersion) else {
                throw CVMError.io("ARM PUT \(path): the operation succeeded but the resource cannot be read back")
            }
            if let state = Self.provisioningState(final), state == "Failed" || state == "Canceled" {
                throw CVMError.io("ARM PUT \(path): provisioningState \(state)")
            }
            if !Self.isProvisioning(final) { return final }
            let elapsed = monotonicSeconds() - start
            if elapsed + pause > operationDeadline {
                throw CVMError.io("ARM PUT \(path): still provisioning after \(Int(elapsed)) s (deadline \(Int(operationDeadline)) s); rerun to pick up from there")
            }
            if let cancelled = client.configuration.isCancelled, cancelled() {
                throw CVMError(.interrupted, "interrupted while waiting for ARM PUT \(path); rerun to pick up from there")
            }
            Thread.sleep(forTimeInterval: pause)
            pause = min(pause * 2, pollInterval.maximum)
        }
    }

    /// DELETE and wait; false when there was nothing to delete. In a dry run, records the call
    /// (when the resource exists) and returns whether it exists.
    @discardableResult
    public func delete(_ path: String, apiVersion: String, operation: String) throws -> Bool {
        let target = url(path, apiVersion: apiVersion)
        if dryRun {
            guard try get(path, apiVersion: apiVersion) != nil else { return false }
            plan.add(PlannedCall(method: "DELETE", endpoint: target, operation: operation, parameters: [], mutating: true))
            return true
        }
        var r = try request("DELETE", target, body: nil)
        r.acceptedStatuses = Set(200..<300).union([404])
        let answer = try send("DELETE \(path)", r)
        // ARM answers 204 (or 404 when the parent is gone) for nothing to delete.
        if answer.status == 404 || answer.status == 204 { return false }
        plan.add(PlannedCall(method: "DELETE", endpoint: target, operation: operation, parameters: [], mutating: true))
        _ = try waitIfLongRunning(answer, what: "DELETE \(path)")
        return true
    }

    static func provisioningState(_ json: [String: Any]) -> String? {
        (json["properties"] as? [String: Any])?["provisioningState"] as? String
    }

    static func isProvisioning(_ json: [String: Any]) -> Bool {
        guard let s = provisioningState(json) else { return false }
        return !["Succeeded", "Failed", "Canceled"].contains(s)
    }

    /// Follows a 201/202 answer's `Azure-AsyncOperation` (else `Location`) to the end. Returns
    /// the final Location answer (or nil when there was nothing to follow or the status URL was used).
    private func waitIfLongRunning(_ answer: ARMResponse, what: String) throws -> ARMResponse? {
        let start = monotonicSeconds()
        var pause = pollInterval.first
        func wait(after response: ARMResponse) throws {
            let hinted = response.headers["Retry-After"].flatMap { Double($0.trimmingCharacters(in: .whitespaces)) }
            let delay = min(hinted ?? pause, 120)
            pause = min(pause * 2, pollInterval.maximum)
            let elapsed = monotonicSeconds() - start
            if elapsed + delay > operationDeadline {
                throw CVMError.io("ARM \(what): still running after \(Int(elapsed)) s (deadline \(Int(operationDeadline)) s); rerun to pick up from there")
            }
            let end = monotonicSeconds() + delay
            while monotonicSeconds() < end {
                if let cancelled = client.configuration.isCancelled, cancelled() {
                    throw CVMError(.interrupted, "interrupted while waiting for ARM \(what); rerun to pick up from there")
                }
                Thread.sleep(forTimeInterval: min(0.1, max(0, end - monotonicSeconds())))
            }
        }
        if let status = answer.headers["Azure-AsyncOperation"], !status.isEmpty {
            var last = answer
            while true {
                try wait(after: last)
                last = try send("\(what) (operation status)", try request("GET", status, body: nil))
                switch last.json["status"] as? String {
                case "Succeeded": return nil
                case "Failed", "Canceled":
                    throw CVMError.io("ARM \(what): \(last.json["status"] as? String ?? "")\(Self.describe(error: last.json["error"]))")
                default: continue
                }
            }
        }
        if answer.status == 202 || answer.status == 201, let location = answer.headers["Location"], !location.isEmpty {
            var last = answer
            while true {
                try wait(after: last)
                var r = try request("GET", location, body: nil)
                r.acceptedStatuses = Set(200..<300)
                last = try send("\(what) (operation result)", r)
                if last.status != 202 { return last }
            }
        }
        return nil
    }

    /// ": Code: message (target t)" from an ARM error object, details included.
    static func describe(error: Any?) -> String {
        guard let e = error as? [String: Any] else { return "" }
        var text = ""
        if let code = e["code"] as? String { text += ": \(code)" }
        if let message = e["message"] as? String { text += ": \(message)" }
        if let target = e["target"] as? String, !target.isEmpty { text += " (target \(target))" }
        for detail in (e["details"] as? [[String: Any]] ?? []).prefix(3) { text += ";" + describe(error: detail).dropFirst() }
        return text
    }

    /// The transport's error parser for ARM: the generic one, plus the error's `target` and first
    /// detail (ARM puts the useful part there, e.g. which property was refused).
    public static let errorParser: CloudErrorParser = { status, headers, body in
        var details = GenericCloudErrorParser.parse(status: status, headers: headers, body: body)
        if let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
           let e = object["error"] as? [String: Any] {
            var message = details?.message ?? ""
            if let target = e["target"] as? String, !target.isEmpty { message += " (target \(target))" }
            if let first = (e["details"] as? [[String: Any]])?.first, let m = first["message"] as? String {
                message += "; " + ((first["code"] as? String).map { "\($0): " } ?? "") + m
            }
            details?.message = message
        }
        if let id = headers["x-ms-correlation-request-id"], details?.requestID == nil { details?.requestID = id }
        return details
    }
}
