@testable import CVMMatrix
import CVMSupport
import Foundation
import XCTest

final class MatrixTests: XCTestCase {
    static let providers = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("providers").path

    func testEmbeddedCopyMatchesProvidersFolder() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.providers).filter { $0.hasSuffix(".json") }
        XCTAssertEqual(Set(names), Set(EmbeddedProviders.files.keys), "run scripts/embed-providers.sh")
        for name in names {
            let onDisk = try String(contentsOfFile: Self.providers + "/" + name, encoding: .utf8)
            XCTAssertEqual(EmbeddedProviders.files[name].map { $0 + "\n" }, onDisk, "\(name) differs from the embedded copy: run scripts/embed-providers.sh")
        }
        XCTAssertEqual(try CVMMatrix.embedded(), try CVMMatrix.load(directory: Self.providers))
    }

    /// The table exactly as issue 6 fixes it.
    func testMatrixHoldsTheIssuesTable() throws {
        let m = try CVMMatrix.embedded()
        func rows(_ c: CloudName) throws -> [String: (TEE, [String])] {
            Dictionary(uniqueKeysWithValues: try m.matrix(for: c).families.map { ($0.family, ($0.tee, $0.regions)) })
        }
        let aws = try rows(.aws)
        XCTAssertEqual(Set(aws.keys), ["m6a", "c6a", "r6a"])
        for (_, v) in aws { XCTAssertEqual(v.0, .sevSNP); XCTAssertEqual(v.1, ["us-east-2", "eu-west-1"]) }
        let azure = try rows(.azure)
        XCTAssertEqual(Set(azure.keys), ["DCasv5", "DCesv5", "DCedsv5", "DCesv6"])
        XCTAssertEqual(azure["DCasv5"]?.0, .sevSNP)
        XCTAssertEqual(azure["DCasv5"]?.1, ["eastus", "westus", "switzerlandnorth", "italynorth", "northeurope", "westeurope",
                                           "germanywestcentral", "uaenorth", "japaneast", "centralindia", "eastasia", "southeastasia"])
        for f in ["DCesv5", "DCedsv5"] {
            XCTAssertEqual(azure[f]?.0, .tdx)
            XCTAssertEqual(azure[f]?.1, ["eastus2", "centralus", "westeurope", "northeurope"])
        }
        XCTAssertEqual(azure["DCesv6"]?.0, .tdx)
        XCTAssertEqual(azure["DCesv6"]?.1, ["westeurope", "eastus", "westus", "westus3"])
        let gcp = try rows(.gcp)
        XCTAssertEqual(Set(gcp.keys), ["n2d-standard", "c3-standard"])
        let zones = { (regions: [String]) in regions.flatMap { r in ["a", "b", "c"].map { "\(r)-\($0)" } } }
        XCTAssertEqual(gcp["n2d-standard"]?.0, .sevSNP)
        XCTAssertEqual(gcp["n2d-standard"]?.1, zones(["asia-southeast1", "europe-west3", "europe-west4", "us-central1"]))
        XCTAssertEqual(gcp["c3-standard"]?.0, .tdx)
        XCTAssertEqual(gcp["c3-standard"]?.1, zones(["asia-southeast1", "europe-west4", "us-central1"]))
    }

    func testValidCombinationsPass() throws {
        let m = try CVMMatrix.embedded()
        XCTAssertEqual(try m.check(cloud: .aws, vmType: "m6a.large", region: "us-east-2"), MatrixCheck(family: "m6a", tee: .sevSNP, warning: nil))
        XCTAssertEqual(try m.check(cloud: .aws, vmType: "r6a.4xlarge", region: "eu-west-1", tee: .sevSNP).family, "r6a")
        XCTAssertEqual(try m.check(cloud: .azure, vmType: "Standard_DC4es_v5", region: "East US 2").tee, .tdx)
        XCTAssertEqual(try m.check(cloud: .azure, vmType: "Standard_DC2as_v5", region: "westeurope").tee, .sevSNP)
        XCTAssertEqual(try m.check(cloud: .gcp, vmType: "c3-standard-4", region: "us-central1-b", tee: .tdx).family, "c3-standard")
    }

    func testWrongRegionListsTheValidRegions() throws {
        let m = try CVMMatrix.embedded()
        XCTAssertThrowsError(try m.check(cloud: .aws, vmType: "c6a.large", region: "us-west-1")) { e in
            let err = e as! CVMError
            XCTAssertEqual(err.kind, .usage)
            XCTAssertTrue(err.message.contains("c6a.large is SEV-SNP capable in us-east-2 and eu-west-1"), err.message)
            XCTAssertTrue(err.message.contains("us-west-1") && err.message.contains("--allow-unlisted"), err.message)
        }
        XCTAssertThrowsError(try m.check(cloud: .gcp, vmType: "c3-standard-4", region: "europe-west3-a")) { e in
            XCTAssertTrue("\(e)".contains("TDX capable in asia-southeast1-a"), "\(e)")
        }
    }

    func testWrongFamilyAndWrongTEE() throws {
        let m = try CVMMatrix.embedded()
        XCTAssertThrowsError(try m.check(cloud: .aws, vmType: "m5.large", region: "us-east-2")) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("'m5.large' is not a confidential-VM type on aws"), text)
            XCTAssertTrue(text.contains("m6a (SEV-SNP, e.g. m6a.large)") && text.contains("c6a") && text.contains("r6a"), text)
        }
        XCTAssertThrowsError(try m.check(cloud: .aws, vmType: "m6a.large", region: "us-east-2", tee: .tdx)) { e in
            XCTAssertTrue("\(e)".contains("aws offers no TDX confidential VMs; it has SEV-SNP on m6a, c6a and r6a"), "\(e)")
        }
        XCTAssertThrowsError(try m.check(cloud: .gcp, vmType: "n2d-standard-2", region: "us-central1-a", tee: .tdx)) { e in
            XCTAssertTrue("\(e)".contains("n2d-standard-2 is a SEV-SNP type, not TDX; TDX on gcp: c3-standard"), "\(e)")
        }
        // Names that only start like a family do not match.
        XCTAssertThrowsError(try m.check(cloud: .aws, vmType: "m6a", region: "us-east-2"))
        XCTAssertThrowsError(try m.check(cloud: .gcp, vmType: "n2d-standard-2x", region: "us-central1-a"))
    }

    func testTEENames() throws {
        XCTAssertEqual(try TEE(parsing: "SEV-SNP"), .sevSNP)
        XCTAssertEqual(try TEE(parsing: "snp"), .sevSNP)
        XCTAssertEqual(try TEE(parsing: "sev_snp"), .sevSNP)
        XCTAssertEqual(try TEE(parsing: "tdx"), .tdx)
        XCTAssertThrowsError(try TEE(parsing: "sgx")) { XCTAssertTrue("\($0)".hasPrefix("--tee 'sgx'"), "\($0)") }
        XCTAssertEqual(try CloudName(parsing: "GCP"), .gcp)
    }

    func testAllowUnlistedTurnsTheErrorIntoAWarning() throws {
        let m = try CVMMatrix.embedded()
        let r = try m.check(cloud: .aws, vmType: "c6a.large", region: "ap-south-1", allowUnlisted: true)
        XCTAssertEqual(r.tee, .sevSNP)
        XCTAssertTrue(r.warning?.contains("c6a.large is SEV-SNP capable in us-east-2 and eu-west-1") ?? false, "\(r)")
    }

    func testBrokenMatrixFilesAreNamed() throws {
        let good = Array(#"{"cloud":"aws","region_kind":"region","families":[{"family":"m6a","tee":"SEV-SNP","vm_type_pattern":"^m6a\\.[a-z0-9]+$","example":"m6a.large","regions":["us-east-2"]}]}"#.utf8)
        XCTAssertNoThrow(try CVMMatrix(files: [("aws.json", good)]))
        let cases: [(String, String)] = [
            (#"{"cloud":"aws","families":[]}"#, "region_kind"),
            (#"{"cloud":"aws","region_kind":"region","families":[]}"#, "no families"),
            (#"{"cloud":"mars","region_kind":"region","families":[]}"#, "cloud"),
            (String(decoding: good, as: UTF8.self).replacingOccurrences(of: "SEV-SNP", with: "SGX"), "tee"),
            (String(decoding: good, as: UTF8.self).replacingOccurrences(of: "\"m6a.large\"", with: "\"m7a.large\""), "does not match"),
            (String(decoding: good, as: UTF8.self).replacingOccurrences(of: "[\"us-east-2\"]", with: "[]"), "regions"),
            ("not json", "aws.json"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try CVMMatrix(files: [("aws.json", Array(text.utf8))]), text) { e in
                XCTAssertTrue("\(e)".contains("aws.json") && "\(e)".contains(expected), "\(e)")
            }
        }
        XCTAssertThrowsError(try CVMMatrix(files: [("a.json", good), ("b.json", good)])) { e in
            XCTAssertTrue("\(e)".contains("described twice"), "\(e)")
        }
    }
}
