import CVMSupport
import Foundation

/// A trusted execution environment a confidential VM runs in.
public enum TEE: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case sevSNP = "SEV-SNP"
    case tdx = "TDX"

    /// Accepts `SEV-SNP`, `sev-snp`, `snp`, `sevsnp`, `TDX`, `tdx`.
    public init(parsing text: String, flag: String = "--tee") throws {
        switch text.lowercased().replacingOccurrences(of: "_", with: "-") {
        case "sev-snp", "snp", "sevsnp", "amd-sev-snp": self = .sevSNP
        case "tdx", "intel-tdx": self = .tdx
        default: throw CVMError.usage("\(flag) '\(text)': not a TEE cvm-cli knows; expected SEV-SNP or TDX")
        }
    }

    public var description: String { rawValue }
}

/// The clouds the matrix covers.
public enum CloudName: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case aws, azure, gcp

    public init(parsing text: String) throws {
        guard let c = CloudName(rawValue: text.lowercased()) else {
            throw CVMError.usage("cloud '\(text)' is not known; expected aws, gcp or azure")
        }
        self = c
    }

    public var description: String { rawValue }
}

/// One confidential-VM instance family of a cloud: its TEE and where it is offered.
public struct CVMFamily: Sendable, Codable, Equatable {
    public var family: String
    public var tee: TEE
    /// A regular expression every vm_type name of the family matches (whole name).
    public var vmTypePattern: String
    public var example: String
    /// Regions (AWS), locations (Azure, ARM names) or zones (GCP).
    public var regions: [String]

    enum CodingKeys: String, CodingKey {
        case family, tee, example, regions
        case vmTypePattern = "vm_type_pattern"
    }

    public func matches(vmType: String) -> Bool {
        guard let regex = try? NSRegularExpression(pattern: vmTypePattern) else { return false }
        let range = NSRange(vmType.startIndex..., in: vmType)
        return regex.firstMatch(in: vmType, range: range).map { $0.range == range } ?? false
    }
}

/// The matrix of one cloud, as in `providers/<cloud>.json`.
public struct CloudMatrix: Sendable, Codable, Equatable {
    public var cloud: CloudName
    /// What `regions` hold: `region`, `location` or `zone` (for messages).
    public var regionKind: String
    public var families: [CVMFamily]

    enum CodingKeys: String, CodingKey {
        case cloud, families
        case regionKind = "region_kind"
    }
}

/// The outcome of a check that passed.
public struct MatrixCheck: Sendable, Equatable {
    public var family: String?
    public var tee: TEE
    /// Set when `--allow-unlisted` let an unlisted combination through: what was wrong.
    public var warning: String?
}

/// The confidential-VM matrix of all clouds: loads it, checks vm_type × region × TEE.
public struct CVMMatrix: Sendable, Equatable {
    public let clouds: [CloudMatrix]

    /// The copy built into the binary (from `providers/*.json`).
    public static func embedded() throws -> CVMMatrix {
        try CVMMatrix(files: EmbeddedProviders.files.sorted { $0.key < $1.key }.map { ($0.key, Array($0.value.utf8)) })
    }

    /// Loads every `*.json` of a `providers/` folder.
    public static func load(directory: String) throws -> CVMMatrix {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".json") }.sorted()
        } catch {
            throw CVMError.io("\(directory): cannot list the providers folder: \(error.localizedDescription)")
        }
        return try CVMMatrix(files: names.map { name in
            let path = directory + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else {
                throw CVMError.io("\(path): cannot read it")
            }
            return (path, Array(data))
        })
    }

    /// Parses and validates the files (name for messages, contents).
    public init(files: [(String, [UInt8])]) throws {
        var clouds: [CloudMatrix] = []
        for (name, bytes) in files {
            let m: CloudMatrix
            do {
                m = try JSONDecoder().decode(CloudMatrix.self, from: Data(bytes))
            } catch {
                throw CVMError.invalid("\(name): not a valid CVM matrix file: \(Self.describe(error))")
            }
            try Self.validate(m, name: name)
            if clouds.contains(where: { $0.cloud == m.cloud }) {
                throw CVMError.invalid("\(name): cloud '\(m.cloud)' is described twice")
            }
            clouds.append(m)
        }
        self.clouds = clouds.sorted { $0.cloud.rawValue < $1.cloud.rawValue }
    }

    public func matrix(for cloud: CloudName) throws -> CloudMatrix {
        guard let m = clouds.first(where: { $0.cloud == cloud }) else {
            throw CVMError.invalid("the CVM matrix has no entry for \(cloud)")
        }
        return m
    }

    /// Checks that `vmType` in `region` runs `tee` (nil: the family's TEE) on `cloud`. Throws a
    /// usage error listing the valid alternatives, unless `allowUnlisted`, which returns the
    /// same text as a warning.
    public func check(cloud: CloudName, vmType: String, region: String, tee: TEE? = nil,
                      allowUnlisted: Bool = false) throws -> MatrixCheck {
        let m = try matrix(for: cloud)
        let problem: String
        let family = m.families.first { $0.matches(vmType: vmType) }
        if let tee, !m.families.contains(where: { $0.tee == tee }) {
            problem = "\(cloud) offers no \(tee) confidential VMs; it has \(Self.summary(m))"
        } else if let family {
            if let tee, tee != family.tee {
                let others = m.families.filter { $0.tee == tee }
                problem = "\(vmType) is a \(family.tee) type, not \(tee); \(tee) on \(cloud): "
                    + others.map { "\($0.family) (e.g. \($0.example)) in \(Self.list($0.regions))" }.joined(separator: "; ")
            } else if family.regions.contains(where: { Self.sameRegion($0, region) }) {
                return MatrixCheck(family: family.family, tee: family.tee, warning: nil)
            } else {
                problem = "\(vmType) is \(family.tee) capable in \(Self.list(family.regions)), not in \(m.regionKind) '\(region)'"
            }
        } else {
            let wanted = tee.map { t in m.families.filter { $0.tee == t } } ?? m.families
            problem = "vm_type '\(vmType)' is not a confidential-VM type on \(cloud); expected "
                + wanted.map { "\($0.family) (\($0.tee), e.g. \($0.example))" }.joined(separator: ", ")
        }
        if allowUnlisted {
            return MatrixCheck(family: family?.family, tee: tee ?? family?.tee ?? .sevSNP,
                               warning: problem + " (going ahead: --allow-unlisted)")
        }
        throw CVMError.usage(problem + "; pass --allow-unlisted if \(cloud) added it since")
    }

    /// `us-east-2`, `East US` and `eastus` compare equal (Azure display vs ARM names).
    static func sameRegion(_ a: String, _ b: String) -> Bool {
        func norm(_ s: String) -> String { s.lowercased().filter { $0 != " " } }
        return norm(a) == norm(b)
    }

    /// "a", "a and b", "a, b and c".
    static func list(_ items: [String]) -> String {
        guard items.count > 1 else { return items.first ?? "" }
        return items.dropLast().joined(separator: ", ") + " and " + items.last!
    }

    static func summary(_ m: CloudMatrix) -> String {
        TEE.allCases.compactMap { tee -> String? in
            let f = m.families.filter { $0.tee == tee }
            return f.isEmpty ? nil : "\(tee) on " + list(f.map(\.family))
        }.joined(separator: "; ")
    }

    static func validate(_ m: CloudMatrix, name: String) throws {
        guard !m.families.isEmpty else { throw CVMError.invalid("\(name): no families listed") }
        var seen = Set<String>()
        for f in m.families {
            guard !f.family.isEmpty, seen.insert(f.family).inserted else {
                throw CVMError.invalid("\(name): family '\(f.family)' is empty or listed twice")
            }
            guard (try? NSRegularExpression(pattern: f.vmTypePattern)) != nil else {
                throw CVMError.invalid("\(name): family \(f.family): vm_type_pattern '\(f.vmTypePattern)' is not a regular expression")
            }
            guard f.matches(vmType: f.example) else {
                throw CVMError.invalid("\(name): family \(f.family): example '\(f.example)' does not match its vm_type_pattern")
            }
            guard !f.regions.isEmpty, Set(f.regions).count == f.regions.count,
                  f.regions.allSatisfy({ !$0.isEmpty }) else {
                throw CVMError.invalid("\(name): family \(f.family): regions must be a non-empty list without repeats")
            }
        }
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, let c):
            return "missing '\(key.stringValue)' at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        case DecodingError.dataCorrupted(let c), DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            return "\(c.debugDescription) at '\(c.codingPath.map(\.stringValue).joined(separator: "."))'"
        default:
            return "\(error)"
        }
    }
}
