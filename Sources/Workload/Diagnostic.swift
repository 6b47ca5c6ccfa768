/// One finding of `workload check`: where (file and YAML/JSON path) and what is wrong.
public struct WorkloadDiagnostic: Sendable, Equatable, Codable, CustomStringConvertible {
    public enum Severity: String, Sendable, Codable { case error, warning }

    public let severity: Severity
    /// Path of the file, relative to the workload folder's parent (e.g. `workload/docker-compose.yml`).
    public let file: String
    /// YAML/JSON path inside the file (`services.web.image`, `cvm_config.firewall.allowed_ports[1].port`), if any.
    public let path: String?
    public let message: String

    public init(_ severity: Severity, file: String, path: String? = nil, _ message: String) {
        self.severity = severity
        self.file = file
        self.path = path
        self.message = message
    }

    public var description: String {
        "\(severity.rawValue): \(file)\(path.map { ": \($0)" } ?? ""): \(message)"
    }
}
