import CVMSupport
import Foundation
import WorkloadRuntime

/// Runs the measured compose workload with the image's container engine, and says exactly why
/// when it does not (no engine, a policy it cannot honour, an engine error).
final class WorkloadRunner: @unchecked Sendable {
    enum State: Equatable {
        case notRunning(String)
        case starting
        case running
        case stopping
        case failed(String)

        var word: String {
            switch self {
            case .notRunning: "not running"
            case .starting: "starting"
            case .running: "running"
            case .stopping: "stopping"
            case .failed: "failed"
            }
        }
    }

    /// nil when the workload must not or cannot run; `state` then says why.
    let compose: ComposeWorkload?
    let engine: ContainerEngine?
    let warnings: [String]
    private let lock = NSLock()
    private var current: State
    /// Start and stop run one at a time, in the order asked (an update's stop waits for a start
    /// still in progress).
    private let queue = DispatchQueue(label: "cvm-agent.workload-runner")

    init(policy: AgentPolicy, detection: ContainerEngine.Detection) {
        var warnings: [String] = []
        switch detection {
        case .none(let reason):
            engine = nil
            compose = nil
            current = .notRunning("measured, not running: \(reason)")
        case .found(let found):
            engine = found
            if policy.imageSignatureVerification {
                // Fail closed: a policy that asks for signed images must not get unsigned ones.
                compose = nil
                current = .notRunning("not started: the policy enables workload_config.image_signature_verification, which this agent cannot enforce")
            } else {
                compose = ComposeWorkload(engine: found)
                current = .notRunning("not started yet")
            }
            if let owner = policy.containerOwner, !owner.isEmpty, owner != "root" {
                warnings.append("containers run as root: the policy's container_owner '\(owner)' is not applied (this agent drives a rootful engine)")
            }
        }
        self.warnings = warnings
    }

    var state: State { lock.withLock { current } }

    private func set(_ state: State) { lock.withLock { current = state } }

    /// Starts the workload in `folder` in the background (image loads and pulls take time; the
    /// agent serves meanwhile).
    func start(folder: String) {
        guard let compose else { return }
        set(.starting)
        queue.async { [self] in
            log("starting the workload with \(compose.engine.description)")
            do {
                let started = try compose.start(workload: folder)
                if !started.loaded.isEmpty { log("images loaded: \(started.loaded.joined(separator: ", "))") }
                set(.running)
                log("workload running: \(started.containers.map(\.name).joined(separator: ", "))")
            } catch {
                // CVMError describes itself by its message.
                set(.failed("\(error)"))
                log("WORKLOAD NOT RUNNING: \(error)")
            }
        }
    }

    /// Stops the workload that `folder` describes and waits for it (before that folder is
    /// replaced: the containers mount files from it).
    func stop(folder: String) {
        guard let compose else { return }
        queue.sync {
            set(.stopping)
            do {
                try compose.stop(workload: folder)
                set(.notRunning("stopped for a workload update"))
                log("workload stopped")
            } catch {
                set(.failed("\(error)"))
                log("workload stop failed: \(error)")
            }
        }
    }

    /// The report in `GET /golden-measurement`.
    var report: [String: Any] {
        let state = self.state
        var json: [String: Any] = [
            "container_engine": engine.map { ["kind": $0.kind.rawValue, "executable": $0.executable, "compose": $0.compose.joined(separator: " ")] } ?? NSNull(),
            "workload_status": state.word,
        ]
        switch state {
        case .notRunning(let why), .failed(let why): json["workload_detail"] = why
        default: break
        }
        if let compose {
            do {
                let containers = try compose.containers()
                json["containers"] = containers.map(\.json)
                // Started fine, but a container has stopped since: say so, not "running".
                let stopped = containers.filter { $0.state != "running" }
                if state == .running && !stopped.isEmpty {
                    json["workload_status"] = "degraded"
                    json["workload_detail"] = "not running: " + stopped.map { "\($0.name) (\($0.status))" }.joined(separator: ", ")
                }
            } catch {
                json["containers_error"] = "\(error)"
            }
        }
        if !warnings.isEmpty { json["workload_warnings"] = warnings }
        return json
    }
}
