#if canImport(Glibc)
import Glibc
#endif
import CVMSupport
import Foundation
import TPM2
import XCTest

/// swtpm's data socket: raw TPM commands in, responses out.
final class SocketTPM: TPMTransport {
    let fd: Int32
    init(port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var ok = false
        for _ in 0..<50 {
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if rc == 0 { ok = true; break }
            usleep(100_000)
        }
        guard ok else { throw CVMError.io("cannot connect to swtpm on port \(port)") }
    }
    deinit { close(fd) }
    func transmit(_ command: [UInt8]) throws -> [UInt8] {
        _ = command.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        repeat {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw CVMError.io("swtpm closed the connection") }
            out += buffer.prefix(n)
        } while out.count < 10 || out.count < Int(UInt32(out[2]) << 24 | UInt32(out[3]) << 16 | UInt32(out[4]) << 8 | UInt32(out[5]))
        return out
    }
}

extension XCTestCase {
    /// A fresh swtpm on 127.0.0.1 for `body`, stopped and removed afterwards.
    func withSwtpm(_ offset: UInt16, _ body: (SocketTPM, String) throws -> Void) throws {
        let swtpm = try ImageTestSupport.tool("swtpm", package: "swtpm")
        let dir = try ImageTestSupport.temporaryDirectory("swtpm")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = UInt16(20000 + Int(getpid()) % 20000) &+ offset
        let process = Process()
        process.executableURL = URL(fileURLWithPath: swtpm.path)
        process.arguments = ["socket", "--tpm2", "--tpmstate", "dir=\(dir)", "--flags", "not-need-init,startup-clear",
                             "--server", "type=tcp,port=\(port),bindaddr=127.0.0.1",
                             "--ctrl", "type=tcp,port=\(port + 1),bindaddr=127.0.0.1"]
        try process.run()
        defer { process.terminate(); process.waitUntilExit() }
        try body(try SocketTPM(port: port), dir)
    }
}
