import ArgumentParser
import CVMSupport
import Foundation
import LocalVM

struct DeployLocalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy-local",
        abstract: "Boot a disk image locally under QEMU + OVMF + swtpm and wait for its agent.",
        discussion: """
        KVM when it works, else TCG. The disk is never modified (raw: snapshot mode; other \
        formats: a per-VM raw copy). 127.0.0.1:--port goes to the guest's 8000; the agent's HTTP \
        port 7999 gets the next free port unless --additional_ports forwards it. State, console \
        log and pids in _artifacts/local_<vm>/, the summary in _artifacts/local_<vm>.json. \
        Without --detach the VM stops on Ctrl-C.
        """
    )

    @Option(help: "The disk image to boot.")
    var disk = "images/base.raw"

    @Option(name: .customLong("vm_name"), help: "Name of this VM (artifacts and cleanup use it).")
    var vmName = "cvm-local"

    @Option(help: "Host port on 127.0.0.1 forwarded to the guest's 8000.")
    var port: UInt16 = 8000

    @Option(name: .customLong("additional_ports"), parsing: .upToNextOption,
            help: "More forwards: PORT or HOST:GUEST (e.g. 18221:7999).")
    var additionalPorts: [String] = []

    @Option(help: "Guest memory (QEMU syntax: 1G, 2048M).")
    var memory = "1G"

    @Option(help: "Virtual CPUs.")
    var cpus = 2

    @Option(help: "Seconds to wait for the agent.")
    var timeout: Double = 180

    @Flag(help: "Return once the agent answers and leave the VM running.")
    var detach = false

    @Flag(help: "Print one JSON object (the artifact).")
    var json = false

    func validate() throws {
        for item in additionalPorts where LocalDeploy.PortForward.parse(item) == nil {
            throw ValidationError("--additional_ports '\(item)': expected PORT or HOST:GUEST with ports 1–65535")
        }
        if cpus < 1 || cpus > 64 { throw ValidationError("--cpus \(cpus): expected 1 to 64") }
        if memory.range(of: "^[0-9]+[MGmg]?$", options: .regularExpression) == nil {
            throw ValidationError("--memory '\(memory)': expected a size like 1G or 2048M")
        }
    }

    func run() throws {
        try runReportingErrors {
            var options = LocalDeploy.Options()
            options.disk = disk
            options.vmName = vmName
            options.port = port
            options.additionalPorts = additionalPorts.compactMap(LocalDeploy.PortForward.parse)
            options.memory = memory
            options.cpus = cpus
            options.timeout = timeout
            let quiet = json
            options.log = { if !quiet { FileHandle.standardError.write(Data("deploy-local: \($0)\n".utf8)) } }
            // Ctrl-C / SIGTERM: while booting, start() stops the VM; afterwards the loop below does.
            let stopRequested = InterruptFlag.install()
            options.interrupted = { stopRequested.isSet }
            let artifact = try LocalDeploy.start(options)
            let artifactFile = LocalDeploy.artifactPath(options)
            if json {
                try printJSON(artifact)
            } else {
                print("VM '\(vmName)' is up (\(artifact.accelerator), agent answered after \(artifact.bootSeconds) s)")
                print("agent: \(artifact.url)  (plain HTTP: \(artifact.agentHTTPURL)/golden-measurement)")
                print("console: \(artifact.consoleLog)")
                print("artifact: \(artifactFile)")
            }
            if detach {
                if !json { print("stop it with: cvm-cli cleanup local --vm_name \(vmName)") }
                return
            }
            // Foreground: stop the VM on Ctrl-C / SIGTERM, or return when it stops by itself.
            if !json { print("running in the foreground; Ctrl-C stops the VM") }
            while !stopRequested.isSet && kill(artifact.qemuPID, 0) == 0 { usleep(200_000) }
            try LocalDeploy.stop(artifactFile: artifactFile)
            if !json { print("VM '\(vmName)' stopped") }
        }
    }
}



struct CleanupLocalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "local",
        abstract: "Stop a deploy-local VM (qemu and swtpm by their recorded pids) and remove its state."
    )

    @Option(name: .customLong("vm_name"), help: "The VM's name as given to deploy-local.")
    var vmName = "cvm-local"

    func run() throws {
        try runReportingErrors {
            var options = LocalDeploy.Options()
            options.vmName = vmName
            try LocalDeploy.stop(artifactFile: LocalDeploy.artifactPath(options))
            print("VM '\(vmName)' stopped and its state removed")
        }
    }
}
