import BootPrediction
import CVMCrypto
import CVMSupport
import Foundation
import XCTest

/// The OVMF VARS reader against awslabs' `uefivars` (PyPI, pinned in install-deps.sh), which
/// parses the same EDK2 variable stores independently.
final class OVMFVariableStoreTests: XCTestCase {
    func uefivarsJSON(_ path: String, dir: String) throws -> [[String: Any]] {
        let tool = try BootTestSupport.tool("uefivars", package: "uefivars (pip)")
        try tool.run(["-i", "edk2", "-o", "json", "-I", path, "-O", dir + "/vars.json"])
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/vars.json"))) as? [String: Any]
        return try XCTUnwrap(json?["variables"] as? [[String: Any]])
    }

    /// EFI_GUID bytes → the registry form uefivars prints.
    func guidText(_ b: [UInt8]) -> String {
        let h = hexString
        return [h(b[0..<4].reversed()), h(b[4..<6].reversed()), h(b[6..<8].reversed()), h(Array(b[8..<10])), h(Array(b[10..<16]))].joined(separator: "-")
    }

    func testAgreesWithUefivars() throws {
        let dir = try BootTestSupport.temporaryDirectory("vars")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Debian's empty template (what deploy-local copies) and the one with Microsoft's keys.
        for path in ["/usr/share/OVMF/OVMF_VARS.fd", "/usr/share/OVMF/OVMF_VARS.ms.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"] {
            let file = try BootTestSupport.packageFile(path, package: "ovmf")
            // uefivars folds EDK2's authenticated-variable certificate database ("certdb") into
            // the variables it belongs to instead of listing it.
            let variables = try OVMFVariableStore(try BootTestSupport.bytes(file), name: file).variables
                .filter { !($0.name == "certdb" && guidText($0.vendor) == "d9bee56e-75dc-49d9-b4d7-b534210f637a") }
            let expected = try uefivarsJSON(file, dir: dir)
            XCTAssertEqual(variables.map(\.name), expected.map { $0["name"] as? String ?? "" }, path)
            XCTAssertEqual(variables.map { hexString($0.data) }, expected.map { ($0["data"] as? String ?? "").lowercased() }, path)
            XCTAssertEqual(variables.map { guidText($0.vendor) }, expected.map { ($0["guid"] as? String ?? "").lowercased() }, path)
        }
        let ms = try OVMFVariableStore(try BootTestSupport.bytes("/usr/share/OVMF/OVMF_VARS.ms.fd"), name: "ms")
        XCTAssertNotNil(ms.value("PK", vendor: UEFIEvent.globalVariableGUID))
        XCTAssertNotNil(ms.value("db", vendor: UEFIEvent.imageSecurityDatabaseGUID))
        let empty = try OVMFVariableStore(try BootTestSupport.bytes("/usr/share/OVMF/OVMF_VARS.fd"), name: "empty")
        XCTAssertNil(empty.value("PK", vendor: UEFIEvent.globalVariableGUID))
    }

    /// UEFI_VARIABLE_DATA as the TCG PC Client profile lays it out: the SecureBoot event of a
    /// machine with Secure Boot off (GUID, lengths 10 and 1, UTF-16 name, one zero byte).
    func testVariableEventData() {
        let data = UEFIEvent.variableData(vendor: UEFIEvent.globalVariableGUID, name: "SecureBoot", data: [0])
        XCTAssertEqual(data.count, 16 + 8 + 8 + 20 + 1)
        XCTAssertEqual(hexString(Array(data.prefix(16))), "61dfe48bca93d211aa0d00e098032b8c")
        XCTAssertEqual(Array(data[16..<32]), [10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(String(decoding: stride(from: 32, to: 52, by: 2).map { UInt16(data[$0]) }, as: UTF16.self), "SecureBoot")
    }

    func testRefusesWhatIsNotAVarsFile() {
        XCTAssertThrowsError(try OVMFVariableStore([UInt8](repeating: 0xFF, count: 4096), name: "x.fd")) { error in
            XCTAssertTrue("\(error)".contains("x.fd: not an OVMF VARS file"), "\(error)")
        }
    }
}
