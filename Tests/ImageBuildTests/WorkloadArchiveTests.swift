import CVMSupport
import Foundation
import Workload
import WorkloadArchive
import XCTest

/// The agent's tar.gz reader against archives made by GNU tar and Python's tarfile.
final class WorkloadArchiveTests: XCTestCase {
    func testGNUTarOfTheSampleWorkloadRoundTrips() throws {
        let tar = try ImageTestSupport.tool("tar", package: "tar")
        let dir = try ImageTestSupport.temporaryDirectory("archive")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = ImageTestSupport.repo + "/workload"
        try tar.run(["-czf", dir + "/w.tar.gz", "-C", source, "."])
        let gz = try XCTUnwrap(FileManager.default.contents(atPath: dir + "/w.tar.gz"))
        let entries = try WorkloadArchive.entries(tar: try WorkloadArchive.gunzip(Array(gz), limit: 64 << 20))
        try WorkloadArchive.write(entries, to: dir + "/out")
        // Same measurement as the folder itself: same files, same bytes.
        XCTAssertEqual(try WorkloadMeasurement.measure(try WorkloadFolder(path: dir + "/out")),
                       try WorkloadMeasurement.measure(try WorkloadFolder(path: source)))
        XCTAssertThrowsError(try WorkloadArchive.gunzip(Array(gz), limit: 1000)) {
            XCTAssertTrue("\($0)".contains("more than 1000 bytes"), "\($0)")
        }
        XCTAssertThrowsError(try WorkloadArchive.gunzip(Array(gz.prefix(gz.count / 2)), limit: 64 << 20))
        XCTAssertThrowsError(try WorkloadArchive.gunzip(Array("not gzip".utf8), limit: 64 << 20))
    }

    /// pack → GNU tar extracts the same folder (long names via pax included); packing is
    /// reproducible; our reader reads it back.
    func testPackIsReadByGNUTarAndReproducible() throws {
        let tar = try ImageTestSupport.tool("tar", package: "tar")
        let dir = try ImageTestSupport.temporaryDirectory("pack")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = dir + "/src"
        try FileManager.default.copyItem(atPath: ImageTestSupport.repo + "/workload", toPath: source)
        let deep = "config/" + String(repeating: "d", count: 90) + "/" + String(repeating: "f", count: 60) + ".conf"
        try FileManager.default.createDirectory(atPath: (source + "/" + deep as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try "long\n".write(toFile: source + "/" + deep, atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: source + "/config/long-link", withDestinationPath: String(deep.dropFirst("config/".count)))
        let folder = try WorkloadFolder(path: source)
        let packed = try WorkloadArchive.pack(folder)
        XCTAssertEqual(packed, try WorkloadArchive.pack(folder), "same folder, same bytes")
        FileManager.default.createFile(atPath: dir + "/p.tar.gz", contents: Data(packed))
        try FileManager.default.createDirectory(atPath: dir + "/gnu", withIntermediateDirectories: true)
        try tar.run(["-xzf", dir + "/p.tar.gz", "-C", dir + "/gnu"])
        let expected = try WorkloadMeasurement.measure(folder)
        XCTAssertEqual(try WorkloadMeasurement.measure(try WorkloadFolder(path: dir + "/gnu")), expected)
        XCTAssertTrue(expected.events.contains { $0.name == deep })
        try WorkloadArchive.write(try WorkloadArchive.entries(tar: try WorkloadArchive.gunzip(packed, limit: 1 << 26)), to: dir + "/ours")
        XCTAssertEqual(try WorkloadMeasurement.measure(try WorkloadFolder(path: dir + "/ours")), expected)
    }

    /// Python's tarfile writes what a hostile client could send: each must be refused by name.
    func testHostileArchivesAreRefused() throws {
        let python = try ImageTestSupport.tool("python3", package: "python3")
        let dir = try ImageTestSupport.temporaryDirectory("archive-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cases: [(String, String)] = [
            ("dotdot", "t.addfile(file('../escape'), io.BytesIO(b'x'))"),
            ("absolute", "t.addfile(file('/etc/passwd'), io.BytesIO(b'x'))"),
            ("symlink", "i = tarfile.TarInfo('config/link'); i.type = tarfile.SYMTYPE; i.linkname = '../../etc'; t.addfile(i)"),
            ("hardlink", "i = tarfile.TarInfo('config/hard'); i.type = tarfile.LNKTYPE; i.linkname = 'docker-compose.yml'; t.addfile(i)"),
            ("device", "i = tarfile.TarInfo('dev'); i.type = tarfile.CHRTYPE; t.addfile(i)"),
            ("long-dotdot", "t.addfile(file('a/' + 'b' * 120 + '/../../../escape'), io.BytesIO(b'x'))"),
            ("link-chain", "i = tarfile.TarInfo('x/l'); i.type = tarfile.SYMTYPE; i.linkname = '..'; t.addfile(i); "
                + "i = tarfile.TarInfo('x/l/m'); i.type = tarfile.SYMTYPE; i.linkname = '..'; t.addfile(i)"),
        ]
        let expected = ["leaves the workload folder", "absolute path", "outside the workload folder",
                        "neither a regular file", "neither a regular file", "leaves the workload folder",
                        "goes through the symlink x/l"]
        for ((name, statement), message) in zip(cases, expected) {
            let script = """
            import io, tarfile
            def file(n):
                i = tarfile.TarInfo(n); i.size = 1; return i
            with tarfile.open('\(dir)/\(name).tar', 'w', format=tarfile.PAX_FORMAT) as t:
                \(statement)
            """
            try python.run(["-c", script])
            let bytes = try XCTUnwrap(FileManager.default.contents(atPath: "\(dir)/\(name).tar"))
            XCTAssertThrowsError(try WorkloadArchive.entries(tar: Array(bytes)), name) {
                XCTAssertTrue("\($0)".contains(message), "\(name): \($0)")
            }
        }
        // A truncated archive is refused, not read as shorter.
        let good = try XCTUnwrap(FileManager.default.contents(atPath: "\(dir)/dotdot.tar"))
        XCTAssertThrowsError(try WorkloadArchive.entries(tar: Array(good.prefix(700))))
    }
}
