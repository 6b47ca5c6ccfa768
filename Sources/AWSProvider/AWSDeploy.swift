import CloudAuth
import CVMMatrix
import CVMSupport
import Deploy
import Foundation
import Logging
import Transport

/// The entry points of `cvm-cli deploy-aws` and `cvm-cli cleanup aws`.
public enum AWSDeploy {
    /// Checks the request against the matrix (before anything else, credentials included), then
    /// runs the deploy pipeline with EC2/EBS clients resolved from `environment` and `home`.
    public static func run(_ request: DeployRequest, matrix: CVMMatrix,
                           environment: [String: String] = ProcessInfo.processInfo.environment,
                           home: String = userHomeDirectory(), options: AWSUploadOptions = AWSUploadOptions(),
                           upload: AWSUploadPath = .ebs,
                           verbose: Bool = false, log: @escaping @Sendable (String) -> Void = { _ in }) throws -> DeployOutcome {
        try DeployRequest.checkVMName(request.vmName)
        if case .s3(let bucket) = upload, !UploadDestination.isBucketName(bucket) {
            throw CVMError.usage("--bucket '\(bucket)' is not a valid S3 bucket name; expected 3–63 lower-case letters, digits, '.' and '-'")
        }
        _ = try matrix.check(cloud: .aws, vmType: request.vmType, region: request.region, tee: request.tee,
                             allowUnlisted: request.allowUnlisted)
        guard FileManager.default.isReadableFile(atPath: request.diskPath) else {
            throw CVMError.usage("--disk \(request.diskPath): no such readable file; expected the VM's disk image")
        }
        let plan = DeployPlan()
        let (session, ec2) = try clients(region: request.region, dryRun: request.dryRun, plan: plan,
                                         environment: environment, home: home, options: options, verbose: verbose)
        let deployer = AWSDeployer(session: session, ec2: ec2, options: options, uploadPath: upload)
        var outcome = try DeployPipeline.run(deployer, request: request, matrix: matrix, log: log)
        // The EC2 client records into its own plan; the pipeline's state holds the EBS steps.
        outcome.plan = Self.merge(outcome.plan, plan.calls)
        return outcome
    }

    static func merge(_ a: [PlannedCall], _ b: [PlannedCall]) -> [PlannedCall] { a + b }

    static func clients(region: String?, dryRun: Bool, plan: DeployPlan, environment: [String: String], home: String,
                        options: AWSUploadOptions, verbose: Bool) throws -> (AWSSession, EC2Client) {
        let configuration = try AWSDiscovery.resolve(environment: environment, home: home)
        let transport = TransportConfiguration(environment: environment, maxConcurrentTransfers: options.maxConcurrentTransfers,
                                               isCancelled: options.isCancelled)
        let session = try AWSSession(configuration: configuration, region: region,
                                     client: HTTPClient(configuration: transport, logger: .commandLog(label: "cvm.aws", verbose: verbose)))
        return (session, EC2Client(session: session, dryRun: dryRun, plan: plan))
    }
}
