import CVMSupport
import Foundation
import XCTest

/// Oracle tools and scratch folders of the BootPrediction tests.
enum BootTestSupport {
    /// A peer tool; missing means the machine was not set up with install-deps.sh --with-test-tools.
    static func tool(_ name: String, package: String) throws -> ExternalTool {
        try ExternalTool.find(name, package: package, purpose: "the BootPrediction tests (scripts/install-deps.sh --with-test-tools)")
    }

    static func temporaryDirectory(_ label: String) throws -> String {
        let dir = NSTemporaryDirectory() + "cvm-\(label)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func bytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

    /// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
    static func pseudoRandom(_ count: Int, seed: UInt64) -> [UInt8] {
        var x = seed | 1
        return (0..<count).map { _ in
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            return UInt8(truncatingIfNeeded: x)
        }
    }

    /// The installed file of a Debian package the tests read (systemd-boot-efi's stub, ovmf's files).
    static func packageFile(_ path: String, package: String) throws -> String {
        guard FileManager.default.fileExists(atPath: path) else {
            throw CVMError.io("\(path) is missing: install the Debian package \(package) (scripts/install-deps.sh --with-test-tools)")
        }
        return path
    }
}
