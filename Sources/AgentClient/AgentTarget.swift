import CVMSupport
import Foundation

/// Where an agent is and where its pinned certificate fingerprint is recorded: a VM name is
/// looked up in `_artifacts/<cloud>_<vm>.json` (which gives the address and holds the pin as
/// `agent_tls_fingerprint`), a bare `ip[:port]` pins in `_artifacts/known_agents.json`.
public struct AgentTarget: Sendable, Equatable {
    public enum PinRecord: Sendable, Equatable {
        /// The deploy artifact of a VM (member `agent_tls_fingerprint`).
        case artifact(path: String)
        /// `known_agents.json`, member `"host:port"`.
        case knownAgents(path: String, key: String)
    }

    public let host: String
    public let port: Int
    /// The VM's name when the target was one.
    public let vmName: String?
    public let pinRecord: PinRecord
    /// Folder for what this VM's owner keeps locally (the API token).
    public let stateDirectory: String

    public var hostPort: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    public func url(_ path: String, https: Bool = true) -> String { "\(https ? "https" : "http")://\(hostPort)\(path)" }

    /// Clouds whose artifacts name VMs (`<cloud>_<vm>.json`).
    static let artifactPrefixes = ["local", "aws", "gcp", "azure"]

    /// Resolves `target` (`vm_name`, `ip`, `ip:port` or `[v6]:port`). `port` is the guest port
    /// asked for (`--port`, nil for the default `defaultPort`); a local VM maps it to the host
    /// port QEMU forwards.
    public static func resolve(_ target: String, port: Int?, defaultPort: Int,
                               artifactsDirectory: String = "_artifacts") throws -> AgentTarget {
        guard !target.isEmpty else { throw CVMError.usage("expected a VM name or an IP address") }
        if let address = parseAddress(target) {
            if address.port != nil, port != nil, address.port != port {
                throw CVMError.usage("\(target): the address names port \(address.port!) but --port says \(port!); give one")
            }
            let p = address.port ?? port ?? defaultPort
            let key = address.host.contains(":") ? "[\(address.host)]:\(p)" : "\(address.host):\(p)"
            let safe = key.map { $0.isLetter || $0.isNumber || $0 == "." ? $0 : "_" }
            return AgentTarget(host: address.host, port: p, vmName: nil,
                               pinRecord: .knownAgents(path: artifactsDirectory + "/known_agents.json", key: key),
                               stateDirectory: artifactsDirectory + "/agent_" + String(safe))
        }
        guard target.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw CVMError.usage("\(target): expected a VM name (letters, digits, - and _) or an IP address")
        }
        let found = artifactPrefixes.map { "\(artifactsDirectory)/\($0)_\(target).json" }
            .filter { FileManager.default.fileExists(atPath: $0) }
        guard let path = found.first else {
            throw CVMError.usage("\(target): no VM of that name in \(artifactsDirectory)/ (looked for <local|aws|gcp|azure>_\(target).json); give its IP address instead")
        }
        guard found.count == 1 else {
            throw CVMError.usage("\(target): several deployments have this name (\(found.joined(separator: ", "))); give the IP address instead")
        }
        let artifact = try ArtifactJSON.read(path)
        let guestPort = port ?? defaultPort
        let host: String, hostPort: Int
        if path.hasSuffix("/local_\(target).json") {
            // QEMU forwards host ports to the guest's: `ports` lists {host, guest}.
            host = "127.0.0.1"
            let ports = artifact["ports"].flatMap { value -> [JSONValue]? in
                if case .array(let a) = value { return a } else { return nil }
            } ?? []
            let match = ports.first { entry in
                if case .number(let g) = entry["guest"] ?? .null { return Int(g) == guestPort }
                return false
            }
            guard let match, case .number(let h) = match["host"] ?? .null else {
                throw CVMError.usage("\(path): the local VM forwards no host port to guest port \(guestPort); see its \"ports\"")
            }
            hostPort = Int(h)
        } else {
            guard let ip = artifact["public_ip"]?.stringValue, !ip.isEmpty else {
                throw CVMError.usage("\(path): no public_ip recorded yet (the deploy has not finished); give the IP address instead")
            }
            host = ip
            hostPort = guestPort
        }
        return AgentTarget(host: host, port: hostPort, vmName: target, pinRecord: .artifact(path: path),
                           stateDirectory: artifactsDirectory + "/" + target)
    }

    /// `1.2.3.4`, `1.2.3.4:8000`, `[::1]:8000`, `::1`, `localhost[:port]`; nil for a VM name.
    static func parseAddress(_ text: String) -> (host: String, port: Int?)? {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.isEmpty { return (host, nil) }
            guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()), (1...65535).contains(p) else { return nil }
            return (host, p)
        }
        if text.filter({ $0 == ":" }).count > 1 { return (text, nil) }   // bare IPv6
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let host = String(parts[0])
        let isIPv4 = host.split(separator: ".").count == 4 && host.split(separator: ".").allSatisfy { UInt8($0) != nil }
        guard isIPv4 || host == "localhost" || host.contains(".") else { return nil }
        if parts.count == 2 {
            guard let p = Int(parts[1]), (1...65535).contains(p) else { return nil }
            return (host, p)
        }
        return (host, nil)
    }
}

/// Reads and edits JSON records (artifacts, `known_agents.json`) keeping every other member
/// as it was; writes are atomic.
enum ArtifactJSON {
    static func read(_ path: String) throws -> JSONValue {
        let file = try FileDescriptor.openForReading(path)
        defer { file.close() }
        let bytes = try file.read(count: Int(try file.size()), at: 0)
        let value = try CanonicalJSON.parse(bytes, source: path)
        guard case .object = value else { throw CVMError.invalid("\(path): expected a JSON object") }
        return value
    }

    static func write(_ value: JSONValue, to path: String) throws {
        let dir = AtomicOutputFile.directory(of: path)
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let out = try AtomicOutputFile(path: path, overwrite: true)
        do {
            try out.descriptor.write(CanonicalJSON.prettyBytes(value), at: 0)
            try out.commit()
        } catch {
            out.discard()
            throw error
        }
    }
}
