import CVMTestData
import CVMSupport
import Deploy
import Foundation
import XCTest

final class SecureBootCertsTests: XCTestCase {
    private var dir = ""

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-sb-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// Makes a self-signed certificate with openssl; returns its DER bytes.
    static func makeCertificate(cn: String, in dir: String, file: String, der: Bool) throws -> [UInt8] {
        let key = dir + "/\(cn).key", pem = dir + "/\(cn).pem"
        try Proc.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", pem,
                      "-days", "30", "-subj", "/CN=\(cn)"])
        try Proc.run(["openssl", "x509", "-in", pem, "-outform", "DER", "-out", pem + ".der"])
        let derBytes = Array(try Data(contentsOf: URL(fileURLWithPath: pem + ".der")))
        try FileManager.default.copyItem(atPath: der ? pem + ".der" : pem, toPath: dir + "/" + file)
        return derBytes
    }

    func testPEMAndDERAreToldApartByContent() throws {
        let pk = try Self.makeCertificate(cn: "PK", in: dir, file: "PK.crt", der: true)
        let kek = try Self.makeCertificate(cn: "KEK", in: dir, file: "KEK.crt", der: false)
        let db = try Self.makeCertificate(cn: "db", in: dir, file: "db.crt", der: false)
        let db2 = try Self.makeCertificate(cn: "db2", in: dir, file: "db2.crt", der: true)
        let db1 = try Self.makeCertificate(cn: "db1", in: dir, file: "db-extra1.crt", der: false)
        _ = try Self.makeCertificate(cn: "other", in: dir, file: "other.crt", der: false)   // not a db*.crt: ignored
        let certs = try SecureBootCerts.load(directory: dir)
        XCTAssertEqual(certs.pk, pk)
        XCTAssertEqual(certs.kek, [kek])
        XCTAssertEqual(certs.db, [db, db1, db2])
    }

    func testMissingFilesAreNamed() throws {
        XCTAssertThrowsError(try SecureBootCerts.load(directory: dir + "/nope")) { XCTAssertTrue("\($0)".contains("not a folder"), "\($0)") }
        _ = try Self.makeCertificate(cn: "PK", in: dir, file: "PK.crt", der: false)
        XCTAssertThrowsError(try SecureBootCerts.load(directory: dir)) { e in
            XCTAssertTrue("\(e)".contains("KEK.crt is missing"), "\(e)")
            XCTAssertEqual((e as? CVMError)?.kind, .usage)
        }
        _ = try Self.makeCertificate(cn: "KEK", in: dir, file: "KEK.crt", der: false)
        XCTAssertThrowsError(try SecureBootCerts.load(directory: dir)) { XCTAssertTrue("\($0)".contains("db.crt is missing"), "\($0)") }
    }

    func testDamagedCertificatesAreRejected() throws {
        for (bytes, expected) in [([UInt8](), "empty"), (Array("hello".utf8), "neither a DER"), ([0x30, 0x82, 0x01, 0x00, 0x30], "not a DER"),
                                  (Array("-----BEGIN CERTIFICATE-----\nMIIB\n".utf8), "no END line"),
                                  (Array("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".utf8), "not valid base64")] {
            XCTAssertThrowsError(try SecureBootCerts.certificates(in: bytes, name: "x.crt")) { e in
                XCTAssertTrue("\(e)".contains("x.crt") && "\(e)".contains(expected), "\(e)")
            }
        }
    }
}

/// Runs a command (via /usr/bin/env) to completion; throws with its stderr on failure.
enum Proc {
    struct Output { let status: Int32; let stdout: String; let stderr: String }

    @discardableResult
    static func run(_ args: [String], environment: [String: String]? = nil, directory: String? = nil,
                    allowFailure: Bool = false) throws -> Output {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        if let environment { p.environment = environment }
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let tmp = FileManager.default.temporaryDirectory
        let out = tmp.appendingPathComponent("cvm-proc-\(UUID().uuidString)"), err = tmp.appendingPathComponent("cvm-proc-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        FileManager.default.createFile(atPath: err.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: out); try? FileManager.default.removeItem(at: err) }
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        try p.run()
        p.waitUntilExit()
        let o = Output(status: p.terminationStatus, stdout: String(decoding: try Data(contentsOf: out), as: UTF8.self),
                       stderr: String(decoding: try Data(contentsOf: err), as: UTF8.self))
        if !allowFailure && o.status != 0 {
            throw CVMError.io("\(args.joined(separator: " ")) failed (\(o.status)): \(o.stderr.suffix(1000))")
        }
        return o
    }

    /// The cvm-cli built next to the test bundle.
    static func cvmCLI() throws -> String { try BuiltProducts.require("cvm-cli") }
}
