import CVMTestData
import CVMSupport
import Foundation
import XCTest

/// Paths and oracle runs shared by the image tests.
enum ImageTestSupport {
    /// The repository (this file is Tests/ImageBuildTests/ImageBuildSupport.swift).
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    static func product(_ name: String) throws -> String { try BuiltProducts.require(name) }

    /// An oracle tool; missing means the machine was not set up with install-deps.sh --with-test-tools.
    static func tool(_ name: String, package: String) throws -> ExternalTool {
        try ExternalTool.find(name, package: package, purpose: "the image tests (scripts/install-deps.sh --with-test-tools)")
    }

    static func temporaryDirectory(_ label: String) throws -> String {
        let dir = NSTemporaryDirectory() + "cvm-\(label)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Copies `size` bytes at `offset` of `file` into a new file (holes kept by dd).
    static func extract(_ file: String, offset: UInt64, size: UInt64, to out: String) throws {
        let dd = try tool("dd", package: "coreutils")
        try dd.run(["if=\(file)", "of=\(out)", "bs=1M", "skip=\(offset / (1 << 20))", "count=\(size / (1 << 20))",
                    "conv=sparse", "status=none"])
    }
}
