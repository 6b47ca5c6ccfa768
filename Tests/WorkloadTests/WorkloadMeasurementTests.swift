import Foundation
import XCTest
@testable import Workload
import CVMCrypto

final class WorkloadMeasurementTests: XCTestCase {
    func testSHA256KnownAnswers() {
        XCTAssertEqual(hexString(SHA256.hash("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(hexString(SHA256.hash("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    /// The measurement recomputed independently in Python (hashlib) from docs/measurement.md.
    func testMeasurementMatchesIndependentImplementation() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-m-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        try fm.createDirectory(at: dir.appendingPathComponent("config/sub dir"), withIntermediateDirectories: true)
        try fm.createDirectory(at: dir.appendingPathComponent("secrets"), withIntermediateDirectories: true)
        try Data("services: {}\n".utf8).write(to: dir.appendingPathComponent("docker-compose.yml"))
        try Data("b".utf8).write(to: dir.appendingPathComponent("config/b.txt"))
        try Data("a".utf8).write(to: dir.appendingPathComponent("config/a.txt"))
        try Data().write(to: dir.appendingPathComponent("config/sub dir/é.conf"))
        try Data("Z".utf8).write(to: dir.appendingPathComponent("config/Z.txt"))
        try fm.createSymbolicLink(atPath: dir.appendingPathComponent("config/link").path, withDestinationPath: "a.txt")
        try Data("tar bytes".utf8).write(to: dir.appendingPathComponent("img.tar"))
        try Data("not measured".utf8).write(to: dir.appendingPathComponent("secrets/key"))
        try Data("not measured".utf8).write(to: dir.appendingPathComponent("README.md"))

        let m = try WorkloadMeasurement.measure(try WorkloadFolder(path: dir.path))
        XCTAssertEqual(m.events.map(\.name), ["docker-compose.yml", "config/Z.txt", "config/a.txt", "config/b.txt",
                                              "config/link", "config/sub dir/é.conf", "img.tar"])
        let script = """
        import hashlib, os, sys
        root = sys.argv[1]
        def h(b): return hashlib.sha256(b).digest()
        names = ["docker-compose.yml"]
        cfg = []
        for d, dirs, files in os.walk(os.path.join(root, "config")):
            for f in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
                cfg.append(os.path.relpath(os.path.join(d, f), root))
        names += sorted(cfg, key=lambda s: s.encode())
        names += sorted([f for f in os.listdir(root) if f.endswith(".tar")], key=lambda s: s.encode())
        pcr = bytes(32)
        for n in names:
            p = os.path.join(root, n)
            c = h(b"symlink:" + os.readlink(p).encode()) if os.path.islink(p) else h(open(p, "rb").read())
            pcr = h(pcr + h(n.encode() + b"\\0" + c))
        print(pcr.hex())
        """
        let expected = try TestTools.output("python3", ["-c", script, dir.path]).trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(m.pcr23, expected)
        XCTAssertEqual(m.pcr23.count, 64)
    }

    func testAnyChangeToMeasuredContentChangesPCR23() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-m2-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("config"), withIntermediateDirectories: true)
        try Data("services: {}\n".utf8).write(to: dir.appendingPathComponent("docker-compose.yml"))
        try Data("v1".utf8).write(to: dir.appendingPathComponent("config/app.conf"))
        let before = try WorkloadMeasurement.measure(try WorkloadFolder(path: dir.path)).pcr23
        try Data("v2".utf8).write(to: dir.appendingPathComponent("config/app.conf"))
        let changed = try WorkloadMeasurement.measure(try WorkloadFolder(path: dir.path)).pcr23
        XCTAssertNotEqual(before, changed)
        // A rename with the same bytes changes it too (names are bound into each event).
        try FileManager.default.moveItem(at: dir.appendingPathComponent("config/app.conf"), to: dir.appendingPathComponent("config/other.conf"))
        XCTAssertNotEqual(try WorkloadMeasurement.measure(try WorkloadFolder(path: dir.path)).pcr23, changed)
    }
}
