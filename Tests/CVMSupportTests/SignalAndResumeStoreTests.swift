import CVMSupport
import Foundation
import XCTest

final class SignalAndResumeStoreTests: XCTestCase {
    /// With an atomic output registered (SignalCleanup) and an InterruptFlag installed, the
    /// first SIGINT reaches the flag (a second installer used to reset the signal to SIG_IGN,
    /// which silences libdispatch's sources), and the process keeps running so the command can
    /// clean up on its own.
    func testFirstInterruptReachesTheFlagWhileAnAtomicOutputIsOpen() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-signal-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let output = try AtomicOutputFile(path: dir.appendingPathComponent("out.raw").path, overwrite: false)
        defer { output.discard() }
        let flag = InterruptFlag.install()
        XCTAssertFalse(flag.isSet)
        Thread.sleep(forTimeInterval: 0.5)   // libdispatch registers signal sources asynchronously
        kill(getpid(), SIGINT)
        let deadline = Date().addingTimeInterval(5)
        while !flag.isSet && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        XCTAssertTrue(flag.isSet, "SIGINT was lost")
        XCTAssertTrue(FileManager.default.fileExists(atPath: output.temporaryPath), "the first signal only sets the flag")
    }

    func testResumeStateIsPrivateAndKeyedBySourceAndDestination() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-resume-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = ResumeStore(environment: ["XDG_CACHE_HOME": dir.path], home: "/nonexistent")
        XCTAssertEqual(store.directory, dir.path + "/cvm-cli/resume")
        struct State: Codable, Equatable { let id: String; let done: [Int] }
        XCTAssertNil(store.load(State.self, key: "s3://b/k <- /d.raw"))
        try store.save(State(id: "u-1", done: [1, 2]), key: "s3://b/k <- /d.raw")
        XCTAssertEqual(store.load(State.self, key: "s3://b/k <- /d.raw"), State(id: "u-1", done: [1, 2]))
        XCTAssertNil(store.load(State.self, key: "s3://b/other <- /d.raw"))
        let file = store.path(for: "s3://b/k <- /d.raw")
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int, 0o600)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: store.directory)[.posixPermissions] as? Int, 0o700)
        // A damaged state file means a fresh start, not a failure.
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: file))
        XCTAssertNil(store.load(State.self, key: "s3://b/k <- /d.raw"))
        store.remove(key: "s3://b/k <- /d.raw")
        XCTAssertFalse(FileManager.default.fileExists(atPath: file))
    }

    func testSourceIdentityChangesWithTheFile() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-id-\(UUID().uuidString)").path
        defer { unlink(path) }
        try Data(repeating: 1, count: 4096).write(to: URL(fileURLWithPath: path))
        let before = try SourceFileIdentity(path: path)
        XCTAssertEqual(before, try SourceFileIdentity(path: path))
        Thread.sleep(forTimeInterval: 0.01)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.write(contentsOf: Data([2]))
        try handle.close()
        XCTAssertNotEqual(before, try SourceFileIdentity(path: path))
    }
}
