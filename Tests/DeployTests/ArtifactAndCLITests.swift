import CVMSupport
import Deploy
import Foundation
import XCTest

final class ArtifactAndCLITests: XCTestCase {
    func testArtifactIsWrittenAtomicallyAndReadBack() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-art-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = DeployArtifact.path(directory: dir + "/_artifacts", cloud: "aws", vmName: "cvm-test")
        XCTAssertTrue(path.hasSuffix("/_artifacts/aws_cvm-test.json"))
        XCTAssertNil(try DeployArtifact.read(path))
        var a = DeployArtifact(cloud: "aws", vmName: "cvm-test", region: "us-east-2", vmType: "m6a.large", tee: "SEV-SNP")
        a.resources["instance_id"] = "i-1"
        a.publicIP = "203.0.113.7"
        a.diskSHA256 = String(repeating: "ab", count: 32)
        try a.write(path)
        try a.write(path)
        XCTAssertEqual(try DeployArtifact.read(path), a)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/_artifacts")
        XCTAssertEqual(names, ["aws_cvm-test.json"], "no temporary file left")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        XCTAssertEqual(json["public_ip"] as? String, "203.0.113.7")
        XCTAssertEqual(json["disk_sha256"] as? String, a.diskSHA256)
        try "garbage".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try DeployArtifact.read(path)) { XCTAssertTrue("\($0)".contains(path), "\($0)") }
    }

    func testVMNames() {
        XCTAssertNoThrow(try DeployRequest.checkVMName("cvm-test"))
        for bad in ["", "1vm", "vm_1", "vm-", "a b", String(repeating: "a", count: 61), "vm/../x"] {
            XCTAssertThrowsError(try DeployRequest.checkVMName(bad), bad)
        }
    }

    /// The binary finds its matrix wherever it runs (it is built in), as text and JSON.
    func testMatrixCommandRunsFromAnyFolder() throws {
        let cli = try Proc.cvmCLI()
        let text = try Proc.run([cli, "matrix"], directory: "/")
        XCTAssertTrue(text.stdout.contains("aws:") && text.stdout.contains("TDX: none"), text.stdout)
        XCTAssertTrue(text.stdout.contains("SEV-SNP  c6a (e.g. c6a.large)  regions: us-east-2, eu-west-1"), text.stdout)
        let json = try Proc.run([cli, "matrix", "--cloud", "gcp", "--json"], directory: "/")
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        let clouds = object["clouds"] as! [[String: Any]]
        XCTAssertEqual(clouds.map { $0["cloud"] as? String }, ["gcp"])
        XCTAssertEqual((clouds[0]["families"] as! [[String: Any]]).map { $0["tee"] as? String }, ["SEV-SNP", "TDX"])
        let bad = try Proc.run([cli, "matrix", "--cloud", "ibm"], allowFailure: true)
        XCTAssertEqual(bad.status, 64)
        XCTAssertEqual(bad.stderr, "cvm-cli: error: cloud 'ibm' is not known; expected aws, gcp or azure\n")
    }
}
