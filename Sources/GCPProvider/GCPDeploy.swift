import CloudAuth
import CVMMatrix
import CVMSupport
import Deploy
import Foundation
import Logging
import Transport

/// The entry points of `cvm-cli deploy-gcp` and `cvm-cli cleanup gcp`.
public enum GCPDeploy {
    /// Checks the request (matrix first, before credentials or any request), then runs the
    /// deploy pipeline with Compute and GCS clients resolved from `environment` and `home`.
    public static func run(_ request: DeployRequest, options: GCPDeployOptions, matrix: CVMMatrix,
                           environment: [String: String] = ProcessInfo.processInfo.environment,
                           home: String = NSHomeDirectory(), verbose: Bool = false,
                           log: @escaping @Sendable (String) -> Void = { _ in }) throws -> DeployOutcome {
        try DeployRequest.checkVMName(request.vmName)
        _ = try matrix.check(cloud: .gcp, vmType: request.vmType, region: request.region, tee: request.tee,
                             allowUnlisted: request.allowUnlisted)
        try GCPNames.checkVMName(request.vmName)
        try checkZone(request.region)
        try checkBucket(options.bucket)
        let plan = DeployPlan()
        let clients = try Clients(projectID: options.projectID, dryRun: request.dryRun, plan: plan, environment: environment,
                                  home: home, verbose: verbose, isCancelled: options.upload.isCancelled)
        clients.compute.operationDeadline = options.readyDeadline
        clients.compute.pollInterval = options.pollInterval
        let deployer = GCPDeployer(compute: clients.compute, objects: clients.objects, options: options,
                                   environment: environment, home: home, verbose: verbose)
        var outcome = try DeployPipeline.run(deployer, request: request, matrix: matrix, log: log)
        // Compute and storage calls are recorded in order in the client's plan.
        outcome.plan = outcome.plan + plan.calls
        return outcome
    }

    static func checkZone(_ zone: String, flag: String = "--region") throws {
        let parts = zone.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber) } }),
              parts[2].count == 1 else {
            throw CVMError.usage("\(flag) '\(zone)': expected a Compute Engine zone such as asia-southeast1-b (the image is stored in its region)")
        }
    }

    static func checkBucket(_ bucket: String) throws {
        _ = try GCSObjectName(parsing: "gs://\(bucket)/probe")
    }

    /// HTTP client, token source, Compute and GCS clients of one run.
    struct Clients {
        let compute: ComputeClient
        let objects: GCSObjects
        let configuration: GoogleConfiguration

        init(projectID: String?, dryRun: Bool, plan: DeployPlan, environment: [String: String], home: String,
             verbose: Bool, isCancelled: (@Sendable () -> Bool)?) throws {
            configuration = try GoogleDiscovery.resolve(environment: environment, home: home)
            guard let project = projectID ?? configuration.projectId, !project.isEmpty else {
                throw CVMError.usage("no GCP project: pass --project_id, or set GOOGLE_CLOUD_PROJECT, or use a service-account key with project_id")
            }
            let transport = TransportConfiguration(environment: environment, maxConcurrentTransfers: 2, isCancelled: isCancelled)
            let client = HTTPClient(configuration: transport, logger: .commandLog(label: "cvm.gcp", verbose: verbose))
            let tokens = GoogleAccessTokenSource(credentials: configuration.credentials, client: client,
                                                 scopes: [GoogleCredentials.cloudPlatformScope])
            compute = ComputeClient(client: client, tokens: tokens, base: configuration.computeEndpoint, project: project,
                                    dryRun: dryRun, plan: plan)
            compute.isCancelled = isCancelled
            objects = GCSObjects(client: client, tokens: tokens, endpoint: configuration.storageEndpoint)
        }
    }
}
