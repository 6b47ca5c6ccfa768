import Foundation
import Yams

/// Checks of `docker-compose.yml` that podman-compose in the guest would otherwise fail on
/// at boot, far from the user.
enum ComposeCheck {
    static func run(_ folder: WorkloadFolder, into out: inout [WorkloadDiagnostic]) {
        let name = "docker-compose.yml"
        let file = folder.display(name)
        guard case .file = folder.entry(name)?.kind else {
            out.append(.init(.error, file: file, "missing; a workload needs a docker-compose.yml at its top level"))
            return
        }
        let text: String
        do { text = try String(contentsOf: folder.url(name), encoding: .utf8) } catch {
            out.append(.init(.error, file: file, "cannot be read as UTF-8 text"))
            return
        }
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                out.append(.init(.error, file: file, "is empty; expected a mapping with `services`"))
                return
            }
            root = node
        } catch let error as YamlError {
            out.append(.init(.error, file: file, "is not valid YAML: \(oneLine(error))"))
            return
        } catch {
            out.append(.init(.error, file: file, "is not valid YAML: \(error)"))
            return
        }
        guard let top = root.mapping else {
            out.append(.init(.error, file: file, "the top level must be a mapping with `services`"))
            return
        }
        guard let servicesNode = top["services"] else {
            out.append(.init(.error, file: file, path: "services", "missing; declare at least one service"))
            return
        }
        guard let services = servicesNode.mapping, !services.isEmpty else {
            out.append(.init(.error, file: file, path: "services", "must be a mapping of at least one service"))
            return
        }
        for (key, value) in services {
            let service = key.string ?? "?"
            let path = "services.\(service)"
            guard let svc = value.mapping else {
                out.append(.init(.error, file: file, path: path, "must be a mapping (image, ports, volumes, ...)"))
                continue
            }
            if svc["image"] == nil && svc["build"] == nil {
                out.append(.init(.error, file: file, path: path, "has neither `image` nor `build`; a service needs one"))
            }
            if let imageNode = svc["image"] {
                if let image = imageNode.string, !image.isEmpty {
                    if !isFullyQualified(image) {
                        out.append(.init(.warning, file: file, path: path + ".image",
                                         "'\(image)' is not fully qualified; podman needs the registry, e.g. 'docker.io/\(image.contains("/") ? image : "library/" + image)'"))
                    }
                } else {
                    out.append(.init(.error, file: file, path: path + ".image", "must be a non-empty string"))
                }
            }
            if let deps = svc["depends_on"]?.mapping {
                for (depKey, depValue) in deps where depValue.mapping?["condition"] != nil {
                    let dep = depKey.string ?? "?"
                    out.append(.init(.warning, file: file, path: "\(path).depends_on.\(dep).condition",
                                     "podman-compose ignores depends_on conditions; '\(service)' may start before '\(dep)' is ready"))
                }
            }
            if let volumes = svc["volumes"]?.sequence {
                for (i, v) in volumes.enumerated() {
                    let source: String?
                    if let s = v.string { source = s.split(separator: ":", maxSplits: 1).first.map(String.init) }
                    else { source = v.mapping?["source"]?.string }
                    if let source, let rel = secretPath(source), !exists(folder, rel) {
                        out.append(.init(.warning, file: file, path: "\(path).volumes[\(i)]",
                                         "mounts '\(source)', which does not exist in \(folder.displayName)/"))
                    }
                }
            }
        }
        if let secrets = top["secrets"]?.mapping {
            for (key, value) in secrets {
                guard let f = value.mapping?["file"]?.string else { continue }
                let rel = normalize(f)
                if !exists(folder, rel) {
                    out.append(.init(.warning, file: file, path: "secrets.\(key.string ?? "?").file",
                                     "'\(f)' does not exist in \(folder.displayName)/; the service will not start"))
                }
            }
        }
    }

    /// `docker.io/library/nginx:1`, `ghcr.io/o/i`, `localhost/x` are qualified; `nginx`, `library/nginx` are not.
    static func isFullyQualified(_ image: String) -> Bool {
        guard let slash = image.firstIndex(of: "/") else { return false }
        let first = image[..<slash]
        return first.contains(".") || first.contains(":") || first == "localhost"
    }

    /// A compose source path inside `secrets/`, relative to the workload folder.
    static func secretPath(_ source: String) -> String? {
        let rel = normalize(source)
        return rel.hasPrefix("secrets/") ? rel : nil
    }

    static func normalize(_ p: String) -> String {
        var s = p
        while s.hasPrefix("./") { s.removeFirst(2) }
        return s
    }

    static func exists(_ folder: WorkloadFolder, _ rel: String) -> Bool {
        folder.entry(rel) != nil || folder.entry(rel.hasSuffix("/") ? String(rel.dropLast()) : rel) != nil
    }

    static func oneLine(_ e: Error) -> String {
        "\(e)".split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.prefix(2).joined(separator: " ")
    }
}
