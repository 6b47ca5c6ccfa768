import CVMCrypto
import CVMSupport
import Foundation

/// One line of the package recipe (images/base-packages.txt): what a package is used for.
public struct RecipeLine: Sendable, Equatable {
    public enum Role: String, Sendable, CaseIterable {
        case kernel, stub, busybox, initrd, root
    }
    public let role: Role
    public let package: String

    /// Parses `ROLE PACKAGE` lines; `#` starts a comment.
    public static func parse(_ text: String, name: String) throws -> [RecipeLine] {
        var out: [RecipeLine] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            if words.isEmpty { continue }
            guard words.count == 2, let role = Role(rawValue: words[0]) else {
                throw CVMError.invalid("\(name):\(n + 1): expected 'ROLE PACKAGE' with ROLE one of \(Role.allCases.map(\.rawValue).joined(separator: ", ")); got '\(line.trimmingCharacters(in: .whitespaces))'")
            }
            out.append(RecipeLine(role: role, package: words[1]))
        }
        for role in [Role.kernel, .stub, .busybox] where out.filter({ $0.role == role }).count != 1 {
            throw CVMError.invalid("\(name): needs exactly one '\(role.rawValue)' package")
        }
        return out
    }
}

/// A Debian package fetched into the cache and unpacked there.
public struct UnpackedPackage: Sendable, Equatable, Codable {
    public let name: String
    public let version: String
    /// The .deb file's SHA-256 (hex).
    public let sha256: String
    /// Folder holding the package's files (`dpkg-deb -x`).
    public let root: String
    public let deb: String

    enum CodingKeys: String, CodingKey { case name, version, sha256 }

    public init(name: String, version: String, sha256: String, root: String, deb: String) {
        self.name = name
        self.version = version
        self.sha256 = sha256
        self.root = root
        self.deb = deb
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        version = try c.decode(String.self, forKey: .version)
        sha256 = try c.decode(String.self, forKey: .sha256)
        root = ""
        deb = ""
    }
}

/// Fetches packages with `apt-get download` into a cache folder and unpacks them with
/// `dpkg-deb -x`. Nothing is installed; a package already in the cache at the candidate version
/// is not downloaded again, and without apt lists the cached .deb is used.
public final class DebianPackageCache {
    public let folder: String
    /// apt's candidate version and dependencies per package, asked once for all.
    private var candidates: [String: (version: String, depends: [String])] = [:]
    let aptGet: ExternalTool
    let aptCache: ExternalTool
    let dpkgDeb: ExternalTool

    public init(folder: String) throws {
        self.folder = folder
        aptGet = try ExternalTool.find("apt-get", package: "apt", purpose: "image build")
        aptCache = try ExternalTool.find("apt-cache", package: "apt", purpose: "image build")
        dpkgDeb = try ExternalTool.find("dpkg-deb", package: "dpkg", purpose: "image build")
        try FileManager.default.createDirectory(atPath: folder + "/unpacked", withIntermediateDirectories: true)
    }

    /// Asks apt (one call: it loads its cache once) for the candidate versions of `packages`.
    /// Without apt lists nothing is known and the cached .debs are used.
    public func loadCandidates(_ packages: [String]) throws {
        let wanted = packages.filter { candidates[$0] == nil }
        guard !wanted.isEmpty else { return }
        let result = try aptCache.runCapturing(["show", "--no-all-versions"] + wanted)
        var name: String?, version: String?, depends: [String] = []
        func flush() {
            if let name, let version { candidates[name] = (version, depends) }
            name = nil; version = nil; depends = []
        }
        for line in result.stdout.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty { flush() }
            if line.hasPrefix("Package: ") { name = String(line.dropFirst(9)) }
            if line.hasPrefix("Version: ") { version = String(line.dropFirst(9)) }
            if line.hasPrefix("Depends: ") {
                depends = line.dropFirst(9).split(separator: ",").map {
                    String($0.trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
                }
            }
        }
        flush()
    }

    func candidate(_ package: String) -> (version: String, depends: [String])? { candidates[package] }

    /// A kernel meta package (linux-image-cloud-amd64) names the versioned image it depends on.
    public func resolveKernel(_ package: String) throws -> String {
        let cached = cachedDebs().filter { $0.package.hasPrefix("linux-image-") && $0.package.contains(".") }
        if let info = candidate(package) {
            if let real = info.depends.first(where: { $0.hasPrefix("linux-image-") }) { return real }
            return package
        }
        // No apt lists: use the newest versioned kernel already cached.
        if let newest = cached.map(\.package).sorted().last { return newest }
        throw CVMError.unsupported("apt knows no package \(package) and images/cache holds no kernel; run `apt-get update` (Debian 12 sources) and try again")
    }

    /// (package, version, path) of every .deb in the cache.
    func cachedDebs() -> [(package: String, version: String, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { $0.hasSuffix(".deb") }.sorted().compactMap { name in
            // apt-get names files PACKAGE_VERSION_ARCH.deb with ':' written as %3a.
            let parts = name.dropLast(4).split(separator: "_")
            guard parts.count == 3 else { return nil }
            let version = parts[1].replacingOccurrences(of: "%3a", with: ":")
            return (String(parts[0]), version, folder + "/" + name)
        }
    }

    /// Downloads (when needed) and unpacks `package`.
    public func fetch(_ package: String) throws -> UnpackedPackage {
        let cached = cachedDebs().filter { $0.package == package }
        let deb: (package: String, version: String, path: String)
        if let info = candidate(package) {
            if let hit = cached.first(where: { $0.version == info.version }) {
                deb = hit
            } else {
                var args = ["download", "-q", "\(package)=\(info.version)"]
                // As root apt drops to the _apt user, which cannot write a user's cache folder.
                if getuid() == 0 { args = ["-o", "APT::Sandbox::User=root"] + args }
                try aptGet.run(args, currentDirectory: folder)
                guard let got = cachedDebs().first(where: { $0.package == package && $0.version == info.version }) else {
                    throw CVMError.io("apt-get download \(package)=\(info.version) left no .deb in \(folder)")
                }
                deb = got
            }
        } else if let last = cached.last {
            deb = last
        } else {
            throw CVMError.unsupported("apt knows no package \(package) and \(folder) does not hold it; run `apt-get update` (Debian 12 sources) and try again")
        }
        let root = folder + "/unpacked/" + URL(fileURLWithPath: deb.path).deletingPathExtension().lastPathComponent
        let done = root + "/.unpacked"
        if !FileManager.default.fileExists(atPath: done) {
            try? FileManager.default.removeItem(atPath: root)
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try dpkgDeb.run(["-x", deb.path, root])
            _ = FileManager.default.createFile(atPath: done, contents: Data())
        }
        let digest = hexString(try SHA256.hash(fileAt: deb.path))
        return UnpackedPackage(name: package, version: deb.version, sha256: digest, root: root, deb: deb.path)
    }
}
