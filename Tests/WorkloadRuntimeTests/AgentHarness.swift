#if canImport(Glibc)
import Glibc
#endif
import CVMSupport
import CVMTestData
import Foundation
import XCTest

/// A private podman (its own storage, runc, limits this sandbox allows) and the real cvm-agent
/// running against swtpm in a network namespace of its own, so the agent's nf_tables firewall
/// and podman's netavark rules never touch the host's network.
final class PodmanSandbox {
    let dir: String
    let environment: [String: String]

    /// The engine's configuration is the ecosystem's own (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF);
    /// the agent passes its environment on to podman unchanged.
    init() throws {
        for (tool, package) in [("podman", "podman"), ("podman-compose", "podman-compose"), ("runc", "runc"), ("swtpm", "swtpm"),
                                ("unshare", "util-linux"), ("nsenter", "util-linux"), ("ip", "iproute2"), ("curl", "curl"),
                                ("iptables", "iptables"), ("busybox", "busybox-static")] {
            _ = try ExternalTool.find(tool, package: package, purpose: "the workload runtime tests (scripts/install-deps.sh --with-test-tools)")
        }
        dir = NSTemporaryDirectory() + "cvm-podman-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir + "/storage", withIntermediateDirectories: true)
        // Everything of this engine lives in `dir` (storage, networks), nothing in /etc or /var.
        // runc: crun refuses this machine's hybrid cgroup setup. Limits: podman's default
        // nofile of 1048576 needs CAP_SYS_RESOURCE, which this sandbox's root lacks.
        try """
        [containers]
        default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
        [engine]
        runtime = "runc"
        [network]
        network_backend = "netavark"
        network_config_dir = "\(dir)/networks"
        """.write(toFile: dir + "/containers.conf", atomically: true, encoding: .utf8)
        try """
        [storage]
        driver = "overlay"
        graphroot = "\(dir)/storage"
        runroot = "\(dir)/run"
        """.write(toFile: dir + "/storage.conf", atomically: true, encoding: .utf8)
        var env = ProcessInfo.processInfo.environment
        // The guest's PATH: the engines of the distribution, not whatever the build host has in /usr/local.
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        env["CONTAINERS_CONF"] = dir + "/containers.conf"
        env["CONTAINERS_STORAGE_CONF"] = dir + "/storage.conf"
        environment = env
    }

    @discardableResult
    func podman(_ args: [String], allowFailure: Bool = false) throws -> TestProcess.Result {
        try TestProcess.checked(["podman"] + args, environment: environment, allowFailure: allowFailure)
    }

    /// A docker-archive of a one-binary image (busybox) named `name`, written to `path` and
    /// removed from the store again, so the agent has to load it.
    func makeImageArchive(name: String, at path: String) throws {
        let rootfs = dir + "/rootfs"
        try FileManager.default.createDirectory(atPath: rootfs + "/bin", withIntermediateDirectories: true)
        let busybox = try XCTUnwrap(ExternalTool.locate("busybox"))
        if !FileManager.default.fileExists(atPath: rootfs + "/bin/busybox") {
            try FileManager.default.copyItem(atPath: busybox, toPath: rootfs + "/bin/busybox")
        }
        try TestProcess.checked(["tar", "-C", rootfs, "-cf", dir + "/rootfs.tar", "."])
        try podman(["import", dir + "/rootfs.tar", name])
        try? FileManager.default.removeItem(atPath: path)
        try podman(["save", "--format", "docker-archive", "-o", path, name])
        try podman(["rmi", name])
    }

    /// Every container and pod of this store removed, the store unmounted and deleted.
    func tearDown() {
        _ = try? podman(["rm", "-af", "-t", "0"], allowFailure: true)
        _ = try? podman(["pod", "rm", "-af"], allowFailure: true)
        _ = try? podman(["system", "reset", "-f"], allowFailure: true)
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// swtpm on a Unix socket and cvm-agent in a new network namespace (`unshare -n`).
final class AgentInNamespace {
    let process: Process
    let swtpm: Process
    let log: URL
    let sandbox: PodmanSandbox

    init(workload: String, sandbox: PodmanSandbox, name: String) throws {
        self.sandbox = sandbox
        let agent = try XCTUnwrap(BuiltProducts.path("cvm-agent"), "cvm-agent is not built next to the tests; run `swift build --build-tests`")
        let state = sandbox.dir + "/tpm-\(name)"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        let socket = state + "/tpm.sock"
        swtpm = try LocalServers.launch(["swtpm", "socket", "--tpm2", "--tpmstate", "dir=\(state)", "--flags", "not-need-init,startup-clear",
                                         "--server", "type=unixio,path=\(socket)", "--ctrl", "type=unixio,path=\(state)/ctrl.sock"],
                                        log: URL(fileURLWithPath: state + "/swtpm.log"))
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: socket) { usleep(50_000) }
        log = URL(fileURLWithPath: sandbox.dir + "/agent-\(name).log")
        // `exec` keeps the agent's pid the one we started, so nsenter finds its namespace.
        process = try LocalServers.launch(["unshare", "-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\"", agent,
                                           "--workload", workload, "--tpm", socket, "--event-log", "/nonexistent"],
                                          log: log, environment: sandbox.environment)
        let deadline = Date().addingTimeInterval(30)
        while (try? get("/golden-measurement"))?.status != 200 {
            guard process.isRunning, Date() < deadline else {
                throw CVMError.io("cvm-agent did not answer: \(consoleText.suffix(2000))")
            }
            usleep(200_000)
        }
    }

    var consoleText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    struct Response { let status: Int; let body: String }

    /// curl inside the agent's network namespace.
    func request(_ url: String, _ curlArgs: [String] = []) throws -> Response {
        let r = try TestProcess.checked(["nsenter", "-t", String(process.processIdentifier), "-n",
                                         "curl", "-s", "-m", "20", "-w", "\n%{http_code}"] + curlArgs + [url],
                                        environment: sandbox.environment, allowFailure: true)
        let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return Response(status: Int(lines.last ?? "") ?? 0, body: lines.dropLast().joined(separator: "\n"))
    }

    func get(_ path: String) throws -> Response { try request("http://127.0.0.1:7999" + path) }

    func golden() throws -> [String: Any] {
        let r = try get("/golden-measurement")
        XCTAssertEqual(r.status, 200, r.body)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any])
    }

    /// Polls the golden measurement until the workload has left `starting`/`stopping`.
    func settledGolden(timeout: TimeInterval = 120) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let g = try golden()
            let status = g["workload_status"] as? String ?? ""
            if !["starting", "stopping"].contains(status) || Date() > deadline { return g }
            usleep(300_000)
        }
    }

    /// Removes the workload's containers while the namespace still exists (netavark tears the
    /// container networks down in it), then stops the agent and swtpm.
    func stop() {
        let pid = String(process.processIdentifier)
        _ = try? TestProcess.checked(["nsenter", "-t", pid, "-n", "podman", "rm", "-af", "-t", "0"], environment: sandbox.environment, allowFailure: true)
        _ = try? TestProcess.checked(["nsenter", "-t", pid, "-n", "podman", "pod", "rm", "-af"], environment: sandbox.environment, allowFailure: true)
        process.terminate()
        process.waitUntilExit()
        swtpm.terminate()
        swtpm.waitUntilExit()
    }
}
