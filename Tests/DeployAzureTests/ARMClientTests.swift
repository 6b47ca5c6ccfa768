@testable import AzureProvider
import CloudAuth
import CVMSupport
import Deploy
import Foundation
import Transport
import XCTest

/// ARMClient against the same fake ARM: endpoint settings, the operation deadline, dry-run recording.
extension DeployAzureTests {
    func testEndpointSettings() throws {
        let plain = try ARMEndpoint(environment: [:])
        XCTAssertEqual(plain.baseURL, "https://management.azure.com")
        XCTAssertEqual(plain.scope, "https://management.azure.com/.default")
        let sovereign = try ARMEndpoint(environment: ["AZURE_RESOURCE_MANAGER_ENDPOINT": "https://management.chinacloudapi.cn/",
                                                      "AZURE_RESOURCE_MANAGER_AUDIENCE": "https://management.core.chinacloudapi.cn/"])
        XCTAssertEqual(sovereign.baseURL, "https://management.chinacloudapi.cn")
        XCTAssertEqual(sovereign.scope, "https://management.core.chinacloudapi.cn/.default")
        XCTAssertThrowsError(try ARMEndpoint(environment: ["AZURE_RESOURCE_MANAGER_ENDPOINT": "management.azure.com"]))
        for bad in ["Storage1", "ab", "has-dash", String(repeating: "a", count: 25)] {
            XCTAssertThrowsError(try AzureDeployTarget(resourceGroup: "rg", storageAccount: bad, gallery: "g").validate()) { e in
                XCTAssertTrue("\(e)".contains("--storage_account"), "\(e)")
            }
        }
        XCTAssertNoThrow(try AzureDeployTarget(resourceGroup: "rg", storageAccount: "abc123", gallery: "g_1.x").validate())
    }

    func testOperationDeadlineStopsPolling() throws {
        let env = environment()
        let credentials = try AzureDiscovery.entraCredentials(environment: env)
        var transport = TransportConfiguration()
        transport.environment = env
        transport.errorParser = ARMClient.errorParser
        let client = HTTPClient(configuration: transport)
        let endpoint = try ARMEndpoint(environment: env)
        let tokens = EntraTokenSource(credentials: credentials, scope: endpoint.scope, client: client)
        let arm = try ARMClient(endpoint: endpoint, subscription: Self.subscription, tokens: tokens, client: client,
                                dryRun: false, plan: DeployPlan())
        let rg = "/subscriptions/\(Self.subscription)/resourceGroups/rg-deadline"
        try arm.put(rg, apiVersion: "2022-09-01", operation: "Microsoft.Resources/resourceGroups:write", body: ["location": "eastus"])
        // An operation that never ends within the budget: a clear error after about 2 s.
        try config(["polls": 1000, "retry_after": "1"])
        arm.operationDeadline = 2
        let start = Date()
        XCTAssertThrowsError(try arm.put(rg + "/providers/Microsoft.Compute/galleries/slowgallery", apiVersion: "2023-07-03",
                                         operation: "Microsoft.Compute/galleries:write", body: ["location": "eastus"])) { e in
            XCTAssertTrue("\(e)".contains("still running after"), "\(e)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
        // A dry run records mutations and sends none.
        try config(["polls": 2, "retry_after": "0"])
        let plan = DeployPlan()
        let dry = try ARMClient(endpoint: endpoint, subscription: Self.subscription, tokens: tokens, client: client, dryRun: true, plan: plan)
        let before = try stats()["mutations"] as! Int
        XCTAssertNil(try dry.put(rg + "/providers/Microsoft.Compute/galleries/drygallery", apiVersion: "2023-07-03",
                                 operation: "Microsoft.Compute/galleries:write", body: ["location": "eastus"]))
        XCTAssertTrue(try dry.delete(rg, apiVersion: "2022-09-01", operation: "Microsoft.Resources/resourceGroups:delete"))
        XCTAssertEqual(plan.calls.map(\.operation), ["Microsoft.Compute/galleries:write", "Microsoft.Resources/resourceGroups:delete"])
        XCTAssertEqual(try stats()["mutations"] as? Int, before)
        XCTAssertTrue(try arm.delete(rg, apiVersion: "2022-09-01", operation: "Microsoft.Resources/resourceGroups:delete"))
        XCTAssertFalse(try arm.delete(rg, apiVersion: "2022-09-01", operation: "Microsoft.Resources/resourceGroups:delete"))
    }
}
