import CVMSupport
import Foundation

/// A container engine of the image together with the compose implementation that drives it.
/// The agent runs the workload through these programs, as a user would by hand; it does not
/// reimplement compose.
public struct ContainerEngine: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case podman, docker }

    public let kind: Kind
    /// The engine's executable (`podman load`, `podman ps`).
    public let executable: String
    /// The compose command line before its own arguments, e.g. `["/usr/bin/podman-compose"]` or
    /// `["/usr/bin/docker", "compose"]`.
    public let compose: [String]

    public enum Detection: Sendable, Equatable {
        case found(ContainerEngine)
        /// No usable engine; the reason names what is missing and the package that provides it.
        case none(reason: String)
    }

    /// Finds the engine the policy names (`container_api.container_engine`), or podman then
    /// docker when it names none. A policy that names one engine never gets the other: the
    /// workload was written and tested for it.
    /// `locate` finds an executable by name; `answers` runs a probe command and says whether
    /// it exited 0 (`docker compose version` is a CLI plugin, not a file on PATH).
    public static func detect(policy: Kind?,
                              locate: (String) -> String? = ExternalTool.locate,
                              answers: ([String]) -> Bool = ContainerEngine.exitsZero) -> Detection {
        let kinds = policy.map { [$0] } ?? Kind.allCases
        var reasons: [String] = []
        for kind in kinds {
            guard let executable = locate(kind.rawValue) else {
                reasons.append("\(kind.rawValue) not found")
                continue
            }
            if let compose = composeCommand(kind, executable: executable, locate: locate, answers: answers) {
                return .found(ContainerEngine(kind: kind, executable: executable, compose: compose))
            }
            reasons.append("\(executable) found but no compose for it (" + (kind == .podman
                ? "install podman-compose, or podman ≥ 4.7 with a compose provider)"
                : "install the docker compose plugin or docker-compose)"))
        }
        let what = policy.map { "the policy's container engine (\($0.rawValue)) is not" } ?? "no container engine (podman or docker) is"
        return .none(reason: "\(what) usable in this image: " + reasons.joined(separator: "; "))
    }

    static func composeCommand(_ kind: Kind, executable: String, locate: (String) -> String?,
                               answers: ([String]) -> Bool) -> [String]? {
        switch kind {
        case .podman:
            if let path = locate("podman-compose") { return [path] }
            if answers([executable, "compose", "version"]) { return [executable, "compose"] }
        case .docker:
            if answers([executable, "compose", "version"]) { return [executable, "compose"] }
            if let path = locate("docker-compose") { return [path] }
        }
        return nil
    }

    public static func exitsZero(_ command: [String]) -> Bool {
        guard let first = command.first else { return false }
        // A CLI that hangs (a docker client waiting on a dead daemon) must not stall the agent's start.
        return (try? ExternalTool(path: first).runCapturing(Array(command.dropFirst()), timeout: 10))?.status == 0
    }

    public var description: String {
        "\(kind.rawValue) (\(executable)) with \(compose.map { ($0 as NSString).lastPathComponent }.joined(separator: " "))"
    }
}
