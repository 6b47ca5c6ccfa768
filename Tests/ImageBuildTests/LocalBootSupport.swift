import Foundation
import ImageBuild
import LocalVM

/// What the boot tests share: an image built from the repository's packages (with the repo's
/// workload or another), free host ports, deploy-local options for a test VM.
enum LocalBootSupport {
    static func buildImage(_ dir: String, workload: String = ImageTestSupport.repo + "/workload") throws -> (String, ImageManifest) {
        var options = ImageBuilder.Options()
        options.output = dir + "/base.raw"
        options.size = 512 << 20
        options.agentPath = try ImageTestSupport.product("cvm-agent")
        options.workloadPath = workload
        options.recipePath = ImageTestSupport.repo + "/images/base-packages.txt"
        options.cacheFolder = ImageTestSupport.repo + "/images/cache"
        options.timestamp = 0
        return (options.output, try ImageBuilder.run(options))
    }

    /// A pair of free ports (main + the agent's HTTP), different for each test of this run.
    nonisolated(unsafe) static var nextPort = UInt16(21000 + Int(getpid() % 2000) * 4)
    static func freePort() -> UInt16 {
        while !(LocalDeploy.portIsFree(nextPort) && LocalDeploy.portIsFree(nextPort + 1)) { nextPort += 2 }
        defer { nextPort += 2 }
        return nextPort
    }

    static func deployOptions(disk: String, dir: String, name: String) -> LocalDeploy.Options {
        var o = LocalDeploy.Options()
        o.disk = disk
        o.vmName = name
        o.port = freePort()
        o.artifactsDir = dir + "/_artifacts"
        o.timeout = 300
        o.cpus = 1
        return o
    }
}
