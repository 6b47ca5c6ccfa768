import Foundation

public enum BuiltProducts {
    /// An executable of this package built next to the test bundle (`swift build --build-tests`
    /// builds every product), if any.
    public static func path(_ name: String) -> String? {
        var candidates = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()]
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.insert(URL(fileURLWithPath: exe).deletingLastPathComponent(), at: 0)
        }
        return candidates.map { $0.appendingPathComponent(name).path }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
