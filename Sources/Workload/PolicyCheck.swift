import CVMSupport
import Foundation

/// The shape of `config/cvm_agent/cvm_agent_policy.json`, checked key by key.
indirect enum PolicySchema: Sendable {
    case object([(String, PolicySchema)])
    case array(PolicySchema)
    case bool
    case string
    case oneOf([String])
    /// A TCP/UDP port as a decimal string, "1"–"65535".
    case portString
    /// A signal name such as "SIGUSR2".
    case signalName

    static let policy: PolicySchema = .object([
        ("cvm_config", .object([
            ("emulation_mode", .object([
                ("enable", .bool),
                ("cloud_provider", .oneOf(["azure", "gcp", "aws"])),
                ("tee_type", .oneOf(["snp", "tdx"])),
                ("emulation_data_path", .string),
                ("enable_emulation_data_update", .bool),
            ])),
            ("firewall", .object([
                ("allowed_ports", .array(.object([
                    ("name", .string), ("protocol", .oneOf(["tcp", "udp"])), ("port", .portString),
                ]))),
                ("maintenance_mode_host_port", .portString),
            ])),
            ("https_server", .object([
                ("enable_workload_update_endpoint", .bool),
                ("enable_maintenance_endpoint", .bool),
                ("enable_tls", .bool),
                ("enable_workload_update_auth", .bool),
            ])),
            ("container_api", .object([
                ("container_engine", .oneOf(["podman", "docker"])),
                ("container_owner", .string),
            ])),
            ("maintenance_mode", .object([("signal", .signalName)])),
        ])),
        ("workload_config", .object([
            ("image_signature_verification", .object([
                ("enable", .bool),
                ("auth_info", .object([("user_name", .string), ("password", .string)])),
                ("signature_verification_policy_path", .string),
            ])),
        ])),
    ])

    /// Appends one diagnostic per mismatch, each with its JSON path.
    func check(_ value: JSONValue, path: String, file: String, into out: inout [WorkloadDiagnostic]) {
        func fail(_ message: String) { out.append(.init(.error, file: file, path: path.isEmpty ? "$" : path, message)) }
        switch self {
        case .object(let fields):
            guard case .object(let dict) = value else { return fail("must be an object, found \(value.typeName)") }
            for (key, schema) in fields {
                let sub = path.isEmpty ? key : "\(path).\(key)"
                if let v = dict[key] { schema.check(v, path: sub, file: file, into: &out) }
                else { out.append(.init(.error, file: file, path: sub, "missing")) }
            }
            let known = Set(fields.map(\.0))
            for key in dict.keys.sorted() where !known.contains(key) {
                out.append(.init(.error, file: file, path: path.isEmpty ? key : "\(path).\(key)",
                                 "unknown key; expected one of: \(fields.map(\.0).joined(separator: ", "))"))
            }
        case .array(let element):
            guard case .array(let items) = value else { return fail("must be an array, found \(value.typeName)") }
            for (i, item) in items.enumerated() { element.check(item, path: "\(path)[\(i)]", file: file, into: &out) }
        case .bool:
            guard case .bool = value else { return fail("must be true or false, found \(value.typeName)") }
        case .string:
            guard case .string = value else { return fail("must be a string, found \(value.typeName)") }
        case .oneOf(let allowed):
            guard case .string(let s) = value, allowed.contains(s) else {
                return fail("must be one of \(allowed.map { "\"\($0)\"" }.joined(separator: ", ")), found \(describe(value))")
            }
        case .portString:
            guard case .string(let s) = value else {
                return fail("must be a port number as a decimal string (\"1\"–\"65535\"), found \(describe(value))")
            }
            guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = Int(s), (1...65535).contains(n), !s.hasPrefix("0") else {
                return fail("must be a port number as a decimal string (\"1\"–\"65535\"), found \"\(s)\"")
            }
        case .signalName:
            guard case .string(let s) = value, s.hasPrefix("SIG"), s.count > 3,
                  s.dropFirst(3).allSatisfy({ $0.isUppercase || $0.isNumber }) else {
                return fail("must be a signal name such as \"SIGUSR2\", found \(describe(value))")
            }
        }
    }

    private func describe(_ v: JSONValue) -> String {
        switch v {
        case .string(let s): return "\"\(s)\""
        case .number(let n): return n == n.rounded() && abs(n) < 1e15 ? "\(Int(n)) (a number)" : "\(n) (a number)"
        case .bool(let b): return "\(b)"
        default: return v.typeName
        }
    }
}

enum PolicyCheck {
    static let relativePath = "config/cvm_agent/cvm_agent_policy.json"

    static func run(_ folder: WorkloadFolder, into out: inout [WorkloadDiagnostic]) {
        let file = folder.display(relativePath)
        guard case .file = folder.entry(relativePath)?.kind else {
            out.append(.init(.error, file: file, "missing; the agent reads its security policy from here (see workload/README.md for the default)"))
            return
        }
        let value: JSONValue
        do {
            let data = try Data(contentsOf: folder.url(relativePath))
            value = try CanonicalJSON.parse(Array(data))
        } catch let error as JSONSyntaxError {
            out.append(.init(.error, file: file, "is not valid JSON at \(error)"))
            return
        } catch {
            out.append(.init(.error, file: file, "cannot be read: \(error.localizedDescription)"))
            return
        }
        PolicySchema.policy.check(value, path: "", file: file, into: &out)
    }
}
