#if canImport(Glibc)
import Glibc
#endif
import CVMSupport
import DiskImage
import Foundation
import LocalVM
import XCTest

/// deploy-local's refusals: each is one clear error and nothing is started or left behind.
final class LocalDeployErrorTests: XCTestCase {
    func testMissingToolNamesThePackage() {
        XCTAssertThrowsError(try ExternalTool.find("cvm-no-such-tool", package: "cvm-pkg", purpose: "image build")) {
            XCTAssertTrue("\($0)".contains("apt-get install cvm-pkg"), "\($0)")
        }
    }

    func testPortForwardSyntax() {
        XCTAssertEqual(LocalDeploy.PortForward.parse("18221:7999"), LocalDeploy.PortForward(host: 18221, guest: 7999))
        XCTAssertEqual(LocalDeploy.PortForward.parse("9000"), LocalDeploy.PortForward(host: 9000, guest: 9000))
        for bad in ["", "0", "70000", "a:b", "1:2:3", ":80"] { XCTAssertNil(LocalDeploy.PortForward.parse(bad), bad) }
    }

    func testDiskWithoutESPAndTakenPortAreRefused() throws {
        let dir = try ImageTestSupport.temporaryDirectory("deploy-errors")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A GPT disk with only a Linux partition.
        let disk = dir + "/no-esp.raw"
        let size: UInt64 = 8 << 20
        _ = FileManager.default.createFile(atPath: disk, contents: nil)
        let file = FileDescriptor(fd: open(disk, O_RDWR), path: disk)
        try file.truncate(to: size)
        let layout = GPTLayout(diskGUID: guidFromDigest(Array(repeating: 1, count: 16)), diskSize: size, entries: [
            .init(name: "data", typeGUID: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", uniqueGUID: guidFromDigest(Array(repeating: 2, count: 16)),
                  firstLBA: 2048, lastLBA: 8191),
        ])
        for (offset, bytes) in try layout.encoded() { try file.write(bytes, at: offset) }
        file.close()
        let sgdisk = try ImageTestSupport.tool("sgdisk", package: "gdisk")
        XCTAssertTrue(try sgdisk.run(["-v", disk]).contains("No problems found"))

        var options = LocalDeploy.Options()
        options.disk = disk
        options.artifactsDir = dir + "/_artifacts"
        options.port = 18990
        XCTAssertThrowsError(try LocalDeploy.start(options)) {
            XCTAssertTrue("\($0)".contains("no EFI system partition"), "\($0)")
        }

        // A taken port: a listener on 127.0.0.1 holds it.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(listener, 1)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &len) } }
        options.port = UInt16(bigEndian: addr.sin_port)
        options.disk = disk
        // The ESP check comes first; give it a disk that passes by pointing at an ESP-typed copy.
        let withESP = dir + "/esp.raw"
        try FileManager.default.copyItem(atPath: disk, toPath: withESP)
        var espLayout = layout
        espLayout.entries[0].typeGUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        let f2 = FileDescriptor(fd: open(withESP, O_RDWR), path: withESP)
        for (offset, bytes) in try espLayout.encoded() { try f2.write(bytes, at: offset) }
        f2.close()
        options.disk = withESP
        XCTAssertThrowsError(try LocalDeploy.start(options)) {
            XCTAssertTrue("\($0)".contains("127.0.0.1:\(options.port) is already in use"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: options.artifactsDir + "/local_cvm-local.json"))
    }
}
