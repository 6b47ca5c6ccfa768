import Foundation

/// One REST call a deploy makes (or, with `--dry-run`, would make).
public struct PlannedCall: Sendable, Equatable, Encodable {
    public var method: String
    public var endpoint: String
    /// `service:Operation`, e.g. `ec2:RegisterImage`.
    public var operation: String
    /// The parameters that matter, in order (no secrets).
    public var parameters: [String: String]
    /// False for reads (describe/list), which a dry run does make.
    public var mutating: Bool

    public init(method: String, endpoint: String, operation: String, parameters: [(String, String)], mutating: Bool) {
        self.method = method
        self.endpoint = endpoint
        self.operation = operation
        self.parameters = Dictionary(parameters, uniquingKeysWith: { a, _ in a })
        self.mutating = mutating
        order = parameters.map(\.0)
    }

    private var order: [String]

    enum CodingKeys: String, CodingKey { case method, endpoint, operation, parameters, mutating }

    /// `POST https://ec2.us-east-2.amazonaws.com/  ec2:RegisterImage  Name=… BootMode=uefi`.
    public var line: String {
        var seen = Set<String>()
        let params = order.filter { seen.insert($0).inserted }.map { "\($0)=\(parameters[$0] ?? "")" }
        return "\(method) \(endpoint)  \(operation)" + (params.isEmpty ? "" : "  " + params.joined(separator: " "))
    }
}

/// Collects the mutating calls a dry run skips (and, for a real run, what was done), thread-safe.
public final class DeployPlan: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [PlannedCall] = []

    public init() {}

    public func add(_ call: PlannedCall) { lock.withLock { items.append(call) } }
    public var calls: [PlannedCall] { lock.withLock { items } }
}
