import CVMMatrix
import CVMSupport
import Foundation

/// What the user asked a deploy for, whatever the cloud.
public struct DeployRequest: Sendable {
    public var cloud: CloudName
    public var diskPath: String
    public var vmName: String
    public var region: String
    public var vmType: String
    /// Nil: the TEE of the vm_type's family.
    public var tee: TEE?
    public var additionalPorts: [PortRange]
    public var dataDiskGiB: Int?
    public var secureBootCerts: SecureBootCerts?
    public var allowUnlisted = false
    public var dryRun = false
    public var artifactsDirectory = "_artifacts"

    public init(cloud: CloudName, diskPath: String, vmName: String, region: String, vmType: String) {
        self.cloud = cloud
        self.diskPath = diskPath
        self.vmName = vmName
        self.region = region
        self.vmType = vmType
        additionalPorts = []
    }

    public var artifactPath: String {
        DeployArtifact.path(directory: artifactsDirectory, cloud: cloud.rawValue, vmName: vmName)
    }

    /// VM names become resource names on every cloud: keep to what all of them accept.
    public static func checkVMName(_ name: String, flag: String = "--vm_name") throws {
        let ok = (1...60).contains(name.count) && name.first!.isLetter
            && name.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" }
            && name.last != "-"
        guard ok else {
            throw CVMError.usage("\(flag) '\(name)': expected 1–60 letters, digits and '-', starting with a letter (it names the VM's resources)")
        }
    }
}

/// The live state of one deploy: the artifact as it grows, the plan, and the log.
public final class DeployState: @unchecked Sendable {
    public let request: DeployRequest
    public var artifact: DeployArtifact
    public let plan = DeployPlan()
    /// One line per step for `--verbose` / progress.
    public let log: @Sendable (String) -> Void

    public init(request: DeployRequest, artifact: DeployArtifact, log: @escaping @Sendable (String) -> Void) {
        self.request = request
        self.artifact = artifact
        self.log = log
    }

    /// Saves the artifact (not in a dry run): called after every step so a rerun resumes.
    public func checkpoint() throws {
        guard !request.dryRun else { return }
        try artifact.write(request.artifactPath)
    }
}

/// The roles every cloud implements. Each step is idempotent: it first looks for what an earlier
/// run made (by name or `cvm-cli:vm` tag) and reuses it; with `dryRun` it reads but records each
/// mutating call in `state.plan` instead of sending it.
public protocol CloudDeployer: AnyObject {
    var cloud: CloudName { get }
    /// Upload the disk (or reuse an upload that matches it); sets the snapshot/blob id and
    /// `artifact.diskSHA256`.
    func uploadDisk(_ state: DeployState) throws
    /// Register a bootable confidential image from the upload; an older image of this VM is
    /// replaced only once the new one is ready.
    func registerImage(_ state: DeployState) throws
    /// Network and firewall: the agent port 8000 and the additional ports.
    func prepareNetwork(_ state: DeployState) throws
    /// Create the confidential VM (or reuse the one running this image).
    func createVM(_ state: DeployState) throws
    func waitUntilRunning(_ state: DeployState) throws
    /// Give the VM a public address; sets `artifact.publicIP`.
    func assignPublicIP(_ state: DeployState) throws
    /// Remove images etc. this VM no longer uses (after the new ones are in place).
    func retireOld(_ state: DeployState) throws
}

/// A finished deploy.
public struct DeployOutcome: Sendable {
    public var artifact: DeployArtifact
    public var artifactPath: String?
    public var plan: [PlannedCall]
    public var matrixWarning: String?
    public var dryRun: Bool
}

public enum DeployPipeline {
    /// Validates everything (matrix first, before any upload), then runs the steps in order,
    /// saving the artifact after each.
    public static func run(_ deployer: CloudDeployer, request: DeployRequest, matrix: CVMMatrix,
                           log: @escaping @Sendable (String) -> Void = { _ in }) throws -> DeployOutcome {
        try DeployRequest.checkVMName(request.vmName)
        let check = try matrix.check(cloud: request.cloud, vmType: request.vmType, region: request.region,
                                     tee: request.tee, allowUnlisted: request.allowUnlisted)
        if let w = check.warning { log("warning: \(w)") }
        guard FileManager.default.isReadableFile(atPath: request.diskPath) else {
            throw CVMError.usage("--disk \(request.diskPath): no such readable file; expected the VM's disk image")
        }
        // Resume from an earlier run's artifact of the same VM (same cloud and region).
        var artifact = DeployArtifact(cloud: request.cloud.rawValue, vmName: request.vmName, region: request.region,
                                      vmType: request.vmType, tee: check.tee.rawValue)
        if let previous = try DeployArtifact.read(request.artifactPath), previous.region == request.region {
            artifact.resources = previous.resources
            artifact.diskSHA256 = previous.diskSHA256
            artifact.diskPath = previous.diskPath
            artifact.diskFileSize = previous.diskFileSize
            artifact.diskFileModified = previous.diskFileModified
            artifact.publicIP = previous.publicIP
        }
        let state = DeployState(request: request, artifact: artifact, log: log)
        let steps: [(String, (DeployState) throws -> Void)] = [
            ("upload", deployer.uploadDisk), ("register image", deployer.registerImage),
            ("network", deployer.prepareNetwork), ("create VM", deployer.createVM),
            ("wait running", deployer.waitUntilRunning), ("public IP", deployer.assignPublicIP),
            ("retire old", deployer.retireOld),
        ]
        for (name, step) in steps {
            log("step: \(name)")
            try step(state)
            try state.checkpoint()
        }
        return DeployOutcome(artifact: state.artifact, artifactPath: request.dryRun ? nil : request.artifactPath,
                             plan: state.plan.calls, matrixWarning: check.warning, dryRun: request.dryRun)
    }
}
