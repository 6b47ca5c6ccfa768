import BootPrediction
import CVMCrypto
import CVMSupport
import Foundation
import XCTest

/// The Authenticode digest against two independent implementations: pesign (Red Hat's,
/// `pesign -h`) and osslsigncode (which recomputes it when verifying a signature).
final class PEImageTests: XCTestCase {
    static let stub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    static let bootManager = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

    func pesignHash(_ path: String) throws -> String {
        let out = try BootTestSupport.tool("pesign", package: "pesign").run(["-h", "-i", path])
        // "hash: <hex>"
        return try XCTUnwrap(out.split(separator: " ").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() })
    }

    func ourHash(_ path: String) throws -> String {
        hexString(try PEImage(try BootTestSupport.bytes(path), name: path).authenticodeSHA256())
    }

    func testUnsignedImagesMatchPesign() throws {
        for path in [Self.stub, Self.bootManager] {
            _ = try BootTestSupport.packageFile(path, package: "systemd-boot-efi")
            XCTAssertEqual(try ourHash(path), try pesignHash(path), path)
        }
    }

    /// A UKI-shaped image (sections added by objcopy, unaligned sizes) and the same with data
    /// appended after the last section: trailing bytes are part of the digest.
    func testUKIAndTrailingDataMatchPesign() throws {
        let dir = try BootTestSupport.temporaryDirectory("pe")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stub = try BootTestSupport.packageFile(Self.stub, package: "systemd-boot-efi")
        try Data(BootTestSupport.pseudoRandom(70_001, seed: 7)).write(to: URL(fileURLWithPath: dir + "/linux"))
        try Data("console=ttyS0 quiet\n".utf8).write(to: URL(fileURLWithPath: dir + "/cmdline"))
        let objcopy = try BootTestSupport.tool("objcopy", package: "binutils")
        try objcopy.run(["--add-section", ".cmdline=\(dir)/cmdline", "--change-section-vma", ".cmdline=0x30000",
                         "--add-section", ".linux=\(dir)/linux", "--change-section-vma", ".linux=0x2000000", stub, dir + "/uki.efi"])
        XCTAssertEqual(try ourHash(dir + "/uki.efi"), try pesignHash(dir + "/uki.efi"))

        // The loader's view of a section is its content (VirtualSize), as objcopy extracts it.
        let image = try PEImage(try BootTestSupport.bytes(dir + "/uki.efi"), name: "uki.efi")
        try objcopy.run(["-O", "binary", "--only-section=.linux", dir + "/uki.efi", dir + "/linux.out"])
        XCTAssertEqual(image.mappedSection(".linux"), try BootTestSupport.bytes(dir + "/linux.out"))
        XCTAssertEqual(image.mappedSection(".cmdline").map { String(decoding: $0, as: UTF8.self) }, "console=ttyS0 quiet\n")
        XCTAssertNil(image.mappedSection(".initrd"))

        var trailing = try BootTestSupport.bytes(dir + "/uki.efi")
        trailing += BootTestSupport.pseudoRandom(1_234, seed: 9)
        try Data(trailing).write(to: URL(fileURLWithPath: dir + "/trailing.efi"))
        let withTrailing = try ourHash(dir + "/trailing.efi")
        XCTAssertEqual(withTrailing, try pesignHash(dir + "/trailing.efi"))
        XCTAssertNotEqual(withTrailing, try ourHash(dir + "/uki.efi"))
    }

    /// A signed image: the certificate table and its directory entry are left out (both
    /// peers agree, and the digest is the one the signature carries).
    func testSignedImageMatchesOsslsigncodeAndPesign() throws {
        let dir = try BootTestSupport.temporaryDirectory("pe-signed")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stub = try BootTestSupport.packageFile(Self.stub, package: "systemd-boot-efi")
        let openssl = try BootTestSupport.tool("openssl", package: "openssl")
        try openssl.run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem",
                         "-subj", "/CN=cvm-cli test", "-days", "2"])
        let sign = try BootTestSupport.tool("osslsigncode", package: "osslsigncode")
        try sign.run(["sign", "-certs", dir + "/cert.pem", "-key", dir + "/key.pem", "-h", "sha256", "-in", stub, "-out", dir + "/signed.efi"])
        let verify = try sign.runCapturing(["verify", "-in", dir + "/signed.efi"])
        let line = try XCTUnwrap((verify.stdout + verify.stderr).split(whereSeparator: \.isNewline).first { $0.contains("Calculated message digest") },
                                 verify.stdout + verify.stderr)
        let calculated = try XCTUnwrap(line.split(separator: ":").last).trimmingCharacters(in: .whitespaces).lowercased()
        let ours = try ourHash(dir + "/signed.efi")
        XCTAssertEqual(ours, calculated)
        XCTAssertEqual(ours, try pesignHash(dir + "/signed.efi"))
    }

    func testRefusesWhatIsNotPE() throws {
        XCTAssertThrowsError(try PEImage([UInt8](repeating: 0, count: 512), name: "zeros.efi")) { error in
            XCTAssertTrue("\(error)".contains("zeros.efi: not a PE/COFF image"), "\(error)")
        }
        var truncated = try BootTestSupport.bytes(try BootTestSupport.packageFile(Self.stub, package: "systemd-boot-efi"))
        truncated.removeLast(truncated.count - 2000)
        XCTAssertThrowsError(try PEImage(truncated, name: "cut.efi")) { error in
            XCTAssertTrue("\(error)".contains("cut.efi"), "\(error)")
        }
    }
}
