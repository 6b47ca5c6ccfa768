#if canImport(Glibc)
import Glibc
#endif
import CVMSupport
import DiskImage
import Foundation

/// `deploy-local`: boots a disk image under QEMU with OVMF and a swtpm TPM, forwarding host
/// ports on 127.0.0.1 to the guest, and waits until the in-guest agent answers.
///
/// State lives in `_artifacts/local_<vm>/` (OVMF vars copy, TPM state, console log, pids); the
/// user's disk is never written (raw: QEMU snapshot mode; other formats: a per-VM raw copy).
public enum LocalDeploy {
    public struct PortForward: Sendable, Equatable, Codable {
        public let host: UInt16
        public let guest: UInt16
        public init(host: UInt16, guest: UInt16) { self.host = host; self.guest = guest }

        /// `PORT` or `HOST:GUEST`.
        public static func parse(_ text: String) -> PortForward? {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            let numbers = parts.compactMap { UInt16($0) }.filter { $0 > 0 }
            guard numbers.count == parts.count else { return nil }
            switch numbers.count {
            case 1: return PortForward(host: numbers[0], guest: numbers[0])
            case 2: return PortForward(host: numbers[0], guest: numbers[1])
            default: return nil
            }
        }
    }

    public struct Options: Sendable {
        public var disk = "images/base.raw"
        public var vmName = "cvm-local"
        public var port: UInt16 = 8000
        public var additionalPorts: [PortForward] = []
        public var memory = "1G"
        public var cpus = 2
        /// Seconds to wait for the agent.
        public var timeout: Double = 180
        public var artifactsDir = "_artifacts"
        public var log: @Sendable (String) -> Void = { _ in }
        /// Polled while waiting for the agent: true stops the VM and ends with `.interrupted`
        /// (the CLI sets it on Ctrl-C, so an interrupted boot leaves nothing running).
        public var interrupted: @Sendable () -> Bool = { false }
        public init() {}
    }

    /// The agent's plain-HTTP port in the guest (docs/agent-api.md).
    public static let agentHTTPPort: UInt16 = 7999
    public static let agentHTTPSPort: UInt16 = 8000

    public struct Firmware: Sendable {
        public let code: String
        public let vars: String
        /// The 2 MiB build without Secure Boot: the 4 MiB variants are Secure-Boot ones and slower.
        public static func find() throws -> Firmware {
            let dirs = ["/usr/share/OVMF", "/usr/share/ovmf"]
            for d in dirs where FileManager.default.fileExists(atPath: d + "/OVMF_CODE.fd") && FileManager.default.fileExists(atPath: d + "/OVMF_VARS.fd") {
                return Firmware(code: d + "/OVMF_CODE.fd", vars: d + "/OVMF_VARS.fd")
            }
            throw CVMError.unsupported("deploy-local needs the OVMF firmware (/usr/share/OVMF/OVMF_CODE.fd); install the Debian package ovmf (apt-get install ovmf)")
        }
    }

    /// What `deploy-local` leaves in `_artifacts/local_<vm>.json`.
    public struct Artifact: Codable, Sendable {
        public var vmName: String
        public var url: String
        public var agentHTTPURL: String
        public var accelerator: String
        public var qemuPID: Int32
        public var swtpmPID: Int32
        public var qemuCommand: [String]
        public var qemuCommandLine: String
        public var stateDir: String
        public var consoleLog: String
        public var disk: String
        public var bootDisk: String
        public var ports: [PortForward]
        public var bootSeconds: Double

        enum CodingKeys: String, CodingKey {
            case url, accelerator, disk, ports
            case vmName = "vm_name", agentHTTPURL = "agent_http_url", qemuPID = "qemu_pid", swtpmPID = "swtpm_pid"
            case qemuCommand = "qemu_command", qemuCommandLine = "qemu_command_line", stateDir = "state_dir"
            case consoleLog = "console_log", bootDisk = "boot_disk", bootSeconds = "boot_seconds"
        }
    }

    public static func artifactPath(_ options: Options) -> String { options.artifactsDir + "/local_\(options.vmName).json" }

    /// Starts the VM and returns once the agent answers (the VM keeps running).
    public static func start(_ options: Options) throws -> Artifact {
        let started = ProgressReporter.now()
        guard options.vmName.range(of: "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", options: .regularExpression) != nil else {
            throw CVMError.usage("--vm_name '\(options.vmName)': use letters, digits, '.', '_' or '-' (at most 63)")
        }
        let qemu = try ExternalTool.find("qemu-system-x86_64", package: "qemu-system-x86", purpose: "deploy-local")
        let swtpm = try ExternalTool.find("swtpm", package: "swtpm", purpose: "deploy-local")
        let firmware = try Firmware.find()
        guard FileManager.default.fileExists(atPath: options.disk) else {
            throw CVMError.usage("--disk \(options.disk): no such file; build one with `cvm-cli image build`")
        }
        let reader = try DiskImageFile.open(options.disk)
        let gpt: GPT
        do { gpt = try GPT.read(from: reader, name: options.disk) } catch let e as CVMError {
            throw CVMError.invalid("\(options.disk): cannot boot it: \(e.message)")
        }
        guard gpt.partitions.contains(where: { $0.typeGUID == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" }) else {
            throw CVMError.invalid("\(options.disk): has no EFI system partition (GPT type C12A7328-…); the firmware cannot boot it")
        }

        // Ports: the main one to the agent's HTTPS, the agent's HTTP (first free port above it
        // unless the user forwards 7999), then the user's.
        var forwards = [PortForward(host: options.port, guest: agentHTTPSPort)]
        if let user = options.additionalPorts.first(where: { $0.guest == agentHTTPPort }) {
            forwards += options.additionalPorts.filter { $0 != user }
            forwards.insert(user, at: 1)
        } else {
            var candidate = options.port &+ 1
            let taken = Set(options.additionalPorts.map(\.host) + [options.port])
            while taken.contains(candidate) || !portIsFree(candidate) { candidate &+= 1 }
            forwards.append(PortForward(host: candidate, guest: agentHTTPPort))
            forwards += options.additionalPorts
        }
        var seen: Set<UInt16> = []
        for f in forwards {
            guard seen.insert(f.host).inserted else { throw CVMError.usage("host port \(f.host) is forwarded twice; check --port and --additional_ports") }
            guard portIsFree(f.host) else {
                throw CVMError.usage("127.0.0.1:\(f.host) is already in use; choose another --port or --additional_ports, or stop what listens there (`cvm-cli cleanup local --vm_name NAME` for an old VM)")
            }
        }

        // State folder (absolute paths: swtpm --daemon changes directory to /).
        let artifacts = absolute(options.artifactsDir)
        let state = artifacts + "/local_\(options.vmName)"
        let artifactFile = artifacts + "/local_\(options.vmName).json"
        if FileManager.default.fileExists(atPath: artifactFile) {
            throw CVMError.usage("a VM named '\(options.vmName)' is already deployed (\(artifactFile)); stop it with `cvm-cli cleanup local --vm_name \(options.vmName)` or choose another --vm_name")
        }
        try? FileManager.default.removeItem(atPath: state)
        try FileManager.default.createDirectory(atPath: state + "/tpm", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: firmware.vars, toPath: state + "/OVMF_VARS.fd")

        // The disk: raw in snapshot mode; any other format as a per-VM raw copy.
        var bootDisk = absolute(options.disk)
        if reader.format != .raw {
            options.log("converting \(options.disk) (\(reader.format.rawValue)) to a raw copy for this VM")
            bootDisk = state + "/disk.raw"
            _ = try DiskConversion.run(input: options.disk, output: bootDisk, format: .raw, overwrite: true)
        }

        var cleanup = true
        var swtpmPID: Int32 = 0, qemuPID: Int32 = 0
        defer {
            if cleanup {
                if qemuPID > 0 { kill(qemuPID, SIGKILL) }
                if swtpmPID > 0 { kill(swtpmPID, SIGTERM) }
            }
        }

        let accelerator = chooseAccelerator(qemu: qemu, firmware: firmware, scratch: state, log: options.log)

        // swtpm: a socket TPM 2.0 with SHA-256 PCRs, reset at each start.
        try swtpm.runDaemonizing(["socket", "--tpm2", "--tpmstate", "dir=\(state)/tpm",
                       "--ctrl", "type=unixio,path=\(state)/swtpm.sock", "--pid", "file=\(state)/swtpm.pid",
                       "--log", "file=\(state)/swtpm.log", "--flags", "startup-clear", "--daemon"],
                                 logFile: state + "/swtpm.out")
        swtpmPID = try readPID(state + "/swtpm.pid", what: "swtpm")

        let hostfwd = forwards.map { "hostfwd=tcp:127.0.0.1:\($0.host)-:\($0.guest)" }.joined(separator: ",")
        let command = [
            qemu.path, "-name", "cvm-\(options.vmName)", "-nodefaults", "-machine", "q35", "-accel", accelerator,
            "-m", options.memory, "-smp", String(options.cpus),
            "-drive", "if=pflash,format=raw,readonly=on,file=\(firmware.code)",
            "-drive", "if=pflash,format=raw,file=\(state)/OVMF_VARS.fd",
            "-chardev", "socket,id=chrtpm,path=\(state)/swtpm.sock",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
            "-drive", "if=none,id=disk0,format=raw,file=\(bootDisk)" + (bootDisk == absolute(options.disk) ? ",snapshot=on" : ""),
            "-device", "virtio-blk-pci,drive=disk0,bootindex=1",
            "-netdev", "user,id=net0,\(hostfwd)", "-device", "virtio-net-pci,netdev=net0",
            "-serial", "file:\(state)/console.log", "-display", "none",
            "-pidfile", "\(state)/qemu.pid", "-daemonize",
        ]
        options.log("starting qemu (\(accelerator))")
        try qemu.runDaemonizing(Array(command.dropFirst()), logFile: state + "/qemu.out")
        qemuPID = try readPID(state + "/qemu.pid", what: "qemu")

        let artifact = Artifact(
            vmName: options.vmName, url: "https://127.0.0.1:\(options.port)",
            agentHTTPURL: "http://127.0.0.1:\(forwards[1].host)", accelerator: accelerator,
            qemuPID: qemuPID, swtpmPID: swtpmPID, qemuCommand: command,
            qemuCommandLine: command.map(shellQuote).joined(separator: " "), stateDir: state,
            consoleLog: state + "/console.log", disk: absolute(options.disk), bootDisk: bootDisk, ports: forwards,
            bootSeconds: 0)
        try write(artifact, to: artifactFile)
        cleanup = false

        // Wait for the agent (or for the VM to stop, e.g. when the initramfs refuses the root).
        options.log("waiting for the agent on \(artifact.agentHTTPURL)")
        let deadline = started + options.timeout
        while true {
            if let status = httpGetStatus(port: forwards[1].host, path: "/golden-measurement"), status == 200 { break }
            if kill(qemuPID, 0) != 0 {
                let why = lastConsoleLines(artifact.consoleLog)
                try? stop(artifactFile: artifactFile)
                throw CVMError.io("the VM stopped before its agent answered; console (\(artifact.consoleLog)) ends with: \(why)")
            }
            if options.interrupted() {
                try? stop(artifactFile: artifactFile)
                throw CVMError(.interrupted, "interrupted while \(options.vmName) was booting; the VM was stopped and its state removed")
            }
            if ProgressReporter.now() > deadline {
                let why = lastConsoleLines(artifact.consoleLog)
                try? stop(artifactFile: artifactFile)
                throw CVMError.io("the agent did not answer within \(Int(options.timeout)) s (\(accelerator)); console ends with: \(why)")
            }
            usleep(250_000)
        }
        var done = artifact
        done.bootSeconds = ((ProgressReporter.now() - started) * 10).rounded() / 10
        try write(done, to: artifactFile)
        return done
    }

    /// Stops the VM recorded in `artifactFile` (qemu, then swtpm, by their recorded pids — only
    /// if those processes still are ours) and removes its state.
    public static func stop(artifactFile: String) throws {
        guard let data = FileManager.default.contents(atPath: artifactFile) else {
            throw CVMError.usage("\(artifactFile): no such deployment (nothing to clean up)")
        }
        let artifact: Artifact
        do { artifact = try JSONDecoder().decode(Artifact.self, from: data) } catch {
            throw CVMError.invalid("\(artifactFile): not a deploy-local artifact: \(error.localizedDescription)")
        }
        for (pid, name) in [(artifact.qemuPID, "qemu"), (artifact.swtpmPID, "swtpm")] where pid > 0 {
            // A recycled pid belongs to someone else: only signal a process that names our state folder.
            let cmdline = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
            guard cmdline.contains(artifact.stateDir) else { continue }
            kill(pid, SIGTERM)
            for _ in 0..<50 where kill(pid, 0) == 0 { usleep(100_000) }
            if kill(pid, 0) == 0 { kill(pid, SIGKILL) }
            _ = name
        }
        try? FileManager.default.removeItem(atPath: artifact.stateDir)
        try FileManager.default.removeItem(atPath: artifactFile)
    }

    /// KVM when /dev/kvm opens and a guest really runs with it, else TCG. /dev/kvm can open and
    /// QEMU still fail: abort on MSR setup, or pause the guest on a KVM internal error — so a
    /// probe VM runs for a moment and QMP's query-status must say "running".
    static func chooseAccelerator(qemu: ExternalTool, firmware: Firmware, scratch: String, log: (String) -> Void) -> String {
        let fd = open("/dev/kvm", O_RDWR)
        guard fd >= 0 else { log("KVM unavailable (/dev/kvm: \(errnoDescription())); using TCG"); return "tcg" }
        close(fd)
        let qmp = scratch + "/kvm-probe.qmp"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: qemu.path)
        process.arguments = ["-nodefaults", "-machine", "q35", "-accel", "kvm", "-display", "none", "-m", "128",
                             "-drive", "if=pflash,format=raw,readonly=on,file=\(firmware.code)",
                             "-qmp", "unix:\(qmp),server=on,wait=off"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return "tcg" }
        defer {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
            unlink(qmp)
        }
        usleep(1_500_000)
        guard process.isRunning else {
            log("KVM does not work here (qemu -accel kvm exited with status \(process.terminationStatus)); using TCG")
            return "tcg"
        }
        let status = qmpQueryStatus(socket: qmp) ?? "unknown"
        if status == "running" { return "kvm" }
        log("KVM does not work here (a probe guest is '\(status)' instead of running); using TCG")
        return "tcg"
    }

    /// The run state QMP reports (`running`, `internal-error`, …), nil when QMP does not answer.
    static func qmpQueryStatus(socket path: String) -> String? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var tv = timeval(tv_sec: 3, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { return nil }
        func readReply() -> String {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            return n > 0 ? String(decoding: buffer.prefix(n), as: UTF8.self) : ""
        }
        func send(_ text: String) { _ = Array(text.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
        _ = readReply()                                   // greeting
        send("{\"execute\":\"qmp_capabilities\"}\n")
        _ = readReply()
        send("{\"execute\":\"query-status\"}\n")
        let reply = readReply()
        guard let range = reply.range(of: "\"status\": \"") ?? reply.range(of: "\"status\":\"") else { return nil }
        return String(reply[range.upperBound...].prefix { $0 != "\"" })
    }

    static func readPID(_ path: String, what: String) throws -> Int32 {
        for _ in 0..<50 {
            if let text = try? String(contentsOfFile: path, encoding: .utf8),
               let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 { return pid }
            usleep(100_000)
        }
        throw CVMError.io("\(what) did not write its pid file \(path)")
    }

    /// Whether QEMU could listen on 127.0.0.1:port. SO_REUSEADDR as QEMU's hostfwd uses it, so
    /// connections of a previous VM lingering in TIME_WAIT do not count as "in use".
    public static func portIsFree(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    /// Status code of `GET path` on 127.0.0.1:port, nil when nothing answers (short timeouts).
    public static func httpGetStatus(port: UInt16, path: String) -> Int? {
        httpGet(port: port, path: path).map(\.status)
    }

    /// A TCP connection to 127.0.0.1:`port` whose sends and receives give up after `timeout`
    /// seconds; nil when it cannot connect. The caller closes it.
    public static func connectLoopback(port: UInt16, timeout: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    public static func httpGet(port: UInt16, path: String, timeout: Int = 5) -> (status: Int, body: [UInt8])? {
        guard let fd = connectLoopback(port: port, timeout: timeout) else { return nil }
        defer { close(fd) }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return nil }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            response += buffer.prefix(n)
        }
        // "HTTP/1.1 200 OK\r\n…\r\n\r\nbody"
        guard response.count > 12, let status = Int(String(decoding: response[9..<12], as: UTF8.self)) else { return nil }
        var bodyStart = response.count
        for i in 0..<(response.count - 3) where response[i] == 13 && response[i + 1] == 10 && response[i + 2] == 13 && response[i + 3] == 10 {
            bodyStart = i + 4
            break
        }
        return (status, Array(response[bodyStart...]))
    }

    static func lastConsoleLines(_ path: String) -> String {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let all = text.split(whereSeparator: \.isNewline)
        // The image's own messages ("cvm-initramfs: …", "cvm: …") say why; kernel lines otherwise.
        let ours = all.filter { $0.hasPrefix("cvm") }
        let lines = (ours.isEmpty ? all : ours).suffix(3).joined(separator: " / ")
        return lines.isEmpty ? "(nothing)" : lines
    }

    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    static func write(_ artifact: Artifact, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        try (encoder.encode(artifact) + Data("\n".utf8)).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    static func shellQuote(_ s: String) -> String {
        if s.allSatisfy({ $0.isLetter || $0.isNumber || "-_./=:,@+".contains($0) }) { return s }
        return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
