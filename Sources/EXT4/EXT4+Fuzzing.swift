import CVMSupport

/// A partition held in memory (fuzzing, tests).
public final class EXT4MemorySource: EXT4BlockSource, @unchecked Sendable {
    public var bytes: [UInt8]
    public var size: UInt64 { UInt64(bytes.count) }

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw CVMError.invalid("<memory>: read of \(buffer.count) bytes at \(offset) is past the end (\(size) bytes)")
        }
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(offset)..<(Int(offset) + buffer.count)])) }
    }
}

/// Entry point for fuzzing the ext4 reader (see docs/fuzzing.md): parses a partition image in
/// memory, walks the tree and reads file content. Errors are fine; a trap or hang is a bug.
public enum EXT4FuzzTarget {
    /// Bounds the work per input.
    static let maxEntries = 10_000
    static let maxReadPerInput = 4 << 20

    public static func parse(_ bytes: [UInt8]) {
        struct Enough: Error {}
        do {
            let reader = try EXT4Reader(source: EXT4MemorySource(bytes), name: "fuzz-input")
            var entries = 0
            var budget = maxReadPerInput
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            try reader.walk { entry in
                entries += 1
                if entries > maxEntries || budget <= 0 { throw Enough() }
                guard entry.metadata.type == .regular else { return }
                let file = try reader.openFile(entry.inodeNumber)
                let n = Int(min(UInt64(buffer.count), file.size))
                budget -= n
                try buffer.withUnsafeMutableBytes { try file.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: 0) }
            }
        } catch {
            // Rejected input: expected for most mutations.
        }
    }
}
