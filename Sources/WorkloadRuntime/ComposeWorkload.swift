import CVMSupport
import Foundation
import Workload

/// One container of the workload as the engine lists it.
public struct WorkloadContainer: Sendable, Equatable {
    public let name: String
    /// The compose service it runs.
    public let service: String
    /// The engine's state word: created, running, exited, …
    public let state: String
    public let image: String
    /// The engine's human status, e.g. "Up 3 seconds" or "Exited (1) 2 seconds ago".
    public let status: String

    public var json: [String: String] { ["name": name, "service": service, "state": state, "image": image, "status": status] }
}

/// Runs a workload folder (docker-compose.yml, image archives, config/) with a container engine:
/// the image archives are loaded first so a workload can run without a registry, then
/// `compose up -d`; `stop` is `compose down`. The containers carry the compose project label,
/// which is how they are listed and told apart from anything else the engine runs.
public struct ComposeWorkload: Sendable {
    public let engine: ContainerEngine
    public let project: String
    /// How long one engine command may take (a compose up may pull images).
    public let commandTimeout: TimeInterval

    public init(engine: ContainerEngine, project: String = "cvm-workload", commandTimeout: TimeInterval = 900) {
        self.engine = engine
        self.project = project
        self.commandTimeout = commandTimeout
    }

    /// The image archives the workload ships, in the measurement's order (docs/measurement.md).
    public static func imageArchives(in workload: String) throws -> [String] {
        WorkloadMeasurement.imageArchives(try WorkloadFolder(path: workload).entries).map { workload + "/" + $0.path }
    }

    /// Loads the image archives and starts the services. Returns the image names the engine
    /// reported as loaded and the running containers. Throws with the engine's own last lines
    /// when a step fails, or when a service is not running afterwards (compose implementations
    /// differ in whether that alone fails `up`).
    @discardableResult
    public func start(workload: String) throws -> (loaded: [String], containers: [WorkloadContainer]) {
        var loaded: [String] = []
        for archive in try Self.imageArchives(in: workload) {
            let output = try run([engine.executable, "load", "-i", archive], step: "loading \((archive as NSString).lastPathComponent)")
            loaded += Self.loadedImages(output)
        }
        try run(composeCommand(workload) + ["up", "-d"], step: "compose up", in: workload)
        let containers = try self.containers()
        if containers.isEmpty {
            throw CVMError.io("compose up: no container of project \(project) exists afterwards")
        }
        let notRunning = containers.filter { $0.state != "running" }
        if !notRunning.isEmpty {
            throw CVMError.io("compose up: not running: " + notRunning.map { "\($0.name) (\($0.status))" }.joined(separator: ", "))
        }
        return (loaded, containers)
    }

    /// Stops and removes the workload's containers (`compose down`) using the folder's compose
    /// file, so services named only there are removed too.
    public func stop(workload: String) throws {
        try run(composeCommand(workload) + ["down"], step: "compose down", in: workload)
    }

    /// The workload's containers, by the compose project label both implementations set.
    public func containers() throws -> [WorkloadContainer] {
        // podman prints one JSON array; docker one JSON object a line.
        let format = engine.kind == .podman ? "json" : "{{json .}}"
        // Listing is quick; a short timeout keeps a hung engine from hanging /golden-measurement.
        let output = try run([engine.executable, "ps", "-a", "--filter", "label=com.docker.compose.project=\(project)",
                              "--format", format], step: "listing containers", timeout: 30)
        return try Self.parseContainers(output).sorted { $0.name < $1.name }
    }

    static func parseContainers(_ output: String) throws -> [WorkloadContainer] {
        let trimmed = output.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty { return [] }
        let objects: [Any]
        if trimmed.hasPrefix("[") {
            objects = (try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [Any]) ?? []
        } else {
            objects = trimmed.split(whereSeparator: \.isNewline).compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) }
        }
        return try objects.map { value in
            guard let o = value as? [String: Any] else { throw CVMError.io("listing containers: unexpected output from the engine") }
            // podman: Names is a list, Labels a mapping; docker: a comma-separated string each.
            let name = (o["Names"] as? [String])?.first ?? (o["Names"] as? String)?.split(separator: ",").first.map(String.init) ?? "?"
            let service = (o["Labels"] as? [String: Any])?["com.docker.compose.service"] as? String
                ?? (o["Labels"] as? String)?.split(separator: ",").first { $0.hasPrefix("com.docker.compose.service=") }
                    .map { String($0.dropFirst("com.docker.compose.service=".count)) }
            return WorkloadContainer(name: name, service: service ?? "", state: (o["State"] as? String ?? "").lowercased(),
                                     image: o["Image"] as? String ?? "", status: o["Status"] as? String ?? "")
        }
    }

    func composeCommand(_ workload: String) -> [String] {
        engine.compose + ["-p", project, "-f", workload + "/docker-compose.yml"]
    }

    /// `Loaded image: x` (docker) and `Loaded image(s): x,y` / `Loaded image: x` (podman).
    static func loadedImages(_ output: String) -> [String] {
        output.split(whereSeparator: \.isNewline).flatMap { line -> [String] in
            guard let colon = line.firstIndex(of: ":"), line.hasPrefix("Loaded image") else { return [] }
            return line[line.index(after: colon)...].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
    }

    /// Runs one engine command; a failure quotes its last output lines (engine messages name
    /// the image, service or file that is wrong).
    @discardableResult
    func run(_ command: [String], step: String, in directory: String? = nil, timeout: TimeInterval? = nil) throws -> String {
        let tool = ExternalTool(path: command[0])
        let limit = timeout ?? commandTimeout
        let result = try tool.runCapturing(Array(command.dropFirst()), currentDirectory: directory, timeout: limit)
        guard result.status == 0 else {
            let lines = (result.stderr + "\n" + result.stdout).split(whereSeparator: \.isNewline)
                .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            let why = result.timedOut ? "timed out after \(Int(limit)) s" : "exit \(result.status)"
            throw CVMError.io("\(step) failed (\(why)): \(lines.suffix(3).joined(separator: " / "))")
        }
        return result.stdout
    }
}
