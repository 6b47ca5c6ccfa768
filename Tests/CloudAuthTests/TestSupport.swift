import Foundation
import XCTest

/// Paths and helpers shared by the CloudAuth tests.
enum CloudAuthTestSupport {
    static let testsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let fixtures = testsDirectory.appendingPathComponent("Fixtures")
    static let scripts = testsDirectory.appendingPathComponent("Scripts")

    struct ProcessResult {
        var status: Int32
        var stdout: Data
        var stderr: String
    }

    /// Runs a program with stdin bytes; returns its exit status and output.
    static func run(_ arguments: [String], stdin: Data = Data(), environment: [String: String]? = nil) throws -> ProcessResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        if let environment { process.environment = environment }
        let input = Pipe(), output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Feed stdin and drain stderr on other threads so large payloads cannot deadlock.
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) {
            input.fileHandleForWriting.write(stdin)
            try? input.fileHandleForWriting.close()
        }
        nonisolated(unsafe) var errorData = Data()
        DispatchQueue.global().async(group: group) { errorData = errors.fileHandleForReading.readDataToEndOfFile() }
        let out = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        group.wait()
        return ProcessResult(status: process.terminationStatus, stdout: out, stderr: String(decoding: errorData, as: UTF8.self))
    }

    /// Runs one of the Python referee scripts with a JSON document on stdin; returns its JSON answer.
    static func python(_ script: String, input: Any) throws -> Any {
        let data = try JSONSerialization.data(withJSONObject: input)
        let result = try run(["python3", scripts.appendingPathComponent(script).path], stdin: data)
        guard result.status == 0 else {
            // A missing referee is a failure, not a skip: the test would otherwise prove nothing.
            if result.stderr.contains("ModuleNotFoundError") {
                throw RefereeFailure(message: "python3 \(script): referee library missing (pip install botocore cryptography "
                    + "'azure-storage-blob==12.31.1'): \(result.stderr.suffix(300))")
            }
            throw RefereeFailure(message: "python3 \(script) failed (\(result.status)): \(result.stderr.suffix(3000))")
        }
        return try JSONSerialization.jsonObject(with: result.stdout)
    }

    static func temporaryDirectory(_ test: XCTestCase) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-auth-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }
}

struct RefereeFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// A small deterministic PRNG so generated request sets are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
