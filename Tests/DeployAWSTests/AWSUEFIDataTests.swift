@testable import AWSProvider
import AWSTestSupport
import CVMSupport
import Deploy
import Foundation
import XCTest

/// UefiData judged by awslabs' own `uefivars` tool (PyPI, pinned in install-deps.sh): it must
/// read our store back (magic, CRC-32C, zlib, records) and find exactly the PK/KEK/db it would
/// itself have stored for the same signature lists.
final class AWSUEFIDataTests: XCTestCase {
    private var dir = ""

    override func setUpWithError() throws {
        let check = try MotoServer.python(["-c", "import pyuefivars"], allowFailure: true)
        if check.status != 0 { throw XCTSkip("uefivars is not installed (scripts/install-deps.sh --with-test-tools)") }
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-uefi-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// PK (DER), KEK (PEM), db.crt + db2.crt (PEM) made by openssl in a fresh folder.
    static func makeCertificateFolder(_ dir: String) throws -> String {
        let certs = dir + "/certs"
        try FileManager.default.createDirectory(atPath: certs, withIntermediateDirectories: true)
        for (cn, file, der) in [("PK", "PK.crt", true), ("KEK", "KEK.crt", false), ("db", "db.crt", false), ("db2", "db2.crt", false)] {
            try MotoServer.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/\(cn).key",
                                "-out", "\(dir)/\(cn).pem", "-days", "30", "-subj", "/CN=cvm-cli test \(cn)"])
            try MotoServer.run(["openssl", "x509", "-in", "\(dir)/\(cn).pem", "-outform", der ? "DER" : "PEM", "-out", "\(certs)/\(file)"])
        }
        return certs
    }

    /// Runs the `uefivars` command line (the package's entry point) with the arguments after `-c`.
    static let tool = "import sys, pyuefivars; sys.argv[0] = 'uefivars'; pyuefivars.main()"

    /// Decodes base64 UefiData with `uefivars -i aws -o json`.
    static func decode(_ uefiData: String, in dir: String) throws -> [[String: Any]] {
        let path = dir + "/uefidata-\(UUID().uuidString).b64"
        try uefiData.write(toFile: path, atomically: true, encoding: .utf8)
        let r = try MotoServer.python(["-c", Self.tool, "-i", "aws", "-o", "json", "-I", path])
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
        if let list = object as? [[String: Any]] { return list }
        return (object as! [String: Any])["variables"] as! [[String: Any]]
    }

    func testUefivarsReadsOurStoreAsItWouldWriteIt() throws {
        let folder = try Self.makeCertificateFolder(dir)
        let certs = try SecureBootCerts.load(directory: folder)
        XCTAssertEqual(certs.db.count, 2)
        let ours = try AWSUEFIData.encode(certs)
        let decoded = try Self.decode(ours, in: dir)
        XCTAssertEqual(decoded.map { $0["name"] as? String }, ["PK", "KEK", "db"])
        XCTAssertEqual(decoded.map { $0["guid"] as? String }, ["8be4df61-93ca-11d2-aa0d-00e098032b8c", "8be4df61-93ca-11d2-aa0d-00e098032b8c",
                                                              "d719b2cb-3d3a-4596-a3bc-dad00e67656f"])
        XCTAssertEqual(decoded.map { $0["attr"] as? Int }, [0x27, 0x27, 0x27])

        // The same signature lists, built independently in Python, through the tool's own writer.
        let script = #"""
        import struct, sys, uuid, pathlib, subprocess
        x509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le
        owner = uuid.UUID(sys.argv[2]).bytes_le
        def esl(ders):
            out = b""
            for d in ders:
                out += x509 + struct.pack("<III", 28 + 16 + len(d), 0, 16 + len(d)) + owner + d
            return out
        d = pathlib.Path(sys.argv[1])
        der = lambda name: subprocess.run(["openssl", "x509", "-in", str(d / name), "-outform", "DER"], capture_output=True, check=True).stdout
        (d / "PK.esl").write_bytes(esl([der("PK.pem")]))
        (d / "KEK.esl").write_bytes(esl([der("KEK.pem")]))
        (d / "db.esl").write_bytes(esl([der("db.pem"), der("db2.pem")]))
        """#
        try MotoServer.python(["-c", script, dir, "7b4c62a5-0c44-4e7d-9b34-6a1c2f3e8d11"])
        let theirs = try MotoServer.python(["-c", Self.tool, "-i", "none", "-o", "aws", "-P", dir + "/PK.esl",
                                            "-K", dir + "/KEK.esl", "-b", dir + "/db.esl"]).stdout
        let reference = try Self.decode(theirs, in: dir)
        XCTAssertEqual(decoded.count, reference.count)
        for (a, b) in zip(decoded, reference) {
            XCTAssertEqual(NSDictionary(dictionary: a), NSDictionary(dictionary: b), "\(a["name"] ?? "")")
        }
        // And the certificates inside are openssl's DER, byte for byte.
        let pkData = try XCTUnwrap(decoded[0]["data"] as? String)
        let pkDER = try MotoServer.run(["sh", "-c", "openssl x509 -in \"$1\" -outform DER | od -An -v -tx1 | tr -d ' \\n'", "sh", dir + "/PK.pem"]).stdout
        XCTAssertTrue(pkData.hasSuffix(pkDER), "PK's ESL ends with the certificate")
    }

    func testCRC32CAndLimits() throws {
        XCTAssertEqual(AWSUEFIData.crc32c(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(AWSUEFIData.guid("8be4df61-93ca-11d2-aa0d-00e098032b8c"),
                       [0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c])
        // Too many db entries for AWS's 64,000 characters: a clear error, not a refused request.
        var seed: UInt64 = 1
        func noise(_ n: Int) -> [UInt8] { (0..<n).map { _ in seed = seed &* 6364136223846793005 &+ 1442695040888963407; return UInt8(seed >> 56) } }
        let certs = SecureBootCerts(pk: noise(4000), kek: [noise(4000)], db: (0..<20).map { _ in noise(4000) })
        XCTAssertThrowsError(try AWSUEFIData.encode(certs)) { XCTAssertTrue("\($0)".contains("at most 64000"), "\($0)") }
    }
}
