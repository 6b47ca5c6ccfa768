import CVMMatrix
import CVMSupport
import Deploy
import GCPProvider
import XCTest

/// Names and bodies that need no server.
final class GCPNamesTests: XCTestCase {
    func testNamesFollowTheIssue() {
        XCTAssertEqual(GCPNames.image(vm: "cvm-test"), "cvm-test-image")
        XCTAssertEqual(GCPNames.firewall(vm: "cvm-test"), "cvm-test-ingress")
        XCTAssertEqual(GCPNames.object(vm: "cvm-test", diskSHA256: "0123456789abcdef" + String(repeating: "0", count: 48)),
                       "cvm-test-0123456789ab.tar.gz")
        XCTAssertEqual(GCPNames.region(ofZone: "asia-southeast1-b"), "asia-southeast1")
        XCTAssertEqual(GCPNames.region(ofZone: "us-central1-a"), "us-central1")
    }

    func testVMNamesGCEAccepts() throws {
        XCTAssertNoThrow(try GCPNames.checkVMName("cvm-test"))
        XCTAssertNoThrow(try GCPNames.checkVMName("a" + String(repeating: "b", count: 54)))
        for bad in ["Cvm", "cvm_test", "cvm-", "1cvm", "a" + String(repeating: "b", count: 55), ""] {
            XCTAssertThrowsError(try GCPNames.checkVMName(bad), bad) { error in
                XCTAssertEqual((error as? CVMError)?.kind, .usage)
            }
        }
    }

    func testFirewallPortsAndTEEChoice() throws {
        XCTAssertEqual(GCPComputeBodies.firewallPorts(try PortRange.parseList("80, 443,8000,9000-9010")),
                       ["8000", "80", "443", "9000-9010"])
        let snp = GCPComputeBodies.instance(vm: "v", zone: "europe-west4-a", project: "p", vmType: "n2d-standard-2", tee: .sevSNP,
                                            image: "v-image", diskSHA256: String(repeating: "c", count: 64), dataDiskGiB: nil)
        XCTAssertEqual((snp["confidentialInstanceConfig"] as? [String: String])?["confidentialInstanceType"], "SEV_SNP")
        XCTAssertEqual(snp["minCpuPlatform"] as? String, "AMD Milan")
        let tdx = GCPComputeBodies.instance(vm: "v", zone: "europe-west4-a", project: "p", vmType: "c3-standard-4", tee: .tdx,
                                            image: "v-image", diskSHA256: String(repeating: "c", count: 64), dataDiskGiB: 3)
        XCTAssertEqual((tdx["confidentialInstanceConfig"] as? [String: String])?["confidentialInstanceType"], "TDX")
        XCTAssertNil(tdx["minCpuPlatform"])
        XCTAssertEqual((tdx["disks"] as? [[String: Any]])?.count, 2)
    }
}
