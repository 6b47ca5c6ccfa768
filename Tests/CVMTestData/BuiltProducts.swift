import Foundation

/// Executables of this package built next to the test bundle (`swift build --build-tests`
/// builds every product); `$CVM_CLI_BINARY` names another cvm-cli.
public enum BuiltProducts {
    public static func path(_ name: String) -> String? {
        if name == "cvm-cli", let path = ProcessInfo.processInfo.environment["CVM_CLI_BINARY"] { return path }
        var candidates = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()]
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.insert(URL(fileURLWithPath: exe).deletingLastPathComponent(), at: 0)
        }
        return candidates.map { $0.appendingPathComponent(name).path }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The executable, or an error saying how to build it (a missing product is a broken
    /// setup, not a reason to skip).
    public static func require(_ name: String) throws -> String {
        guard let path = path(name) else {
            throw LocalServers.Failure(description: "\(name) is not built next to the tests; run `swift build --build-tests` first")
        }
        return path
    }
}
