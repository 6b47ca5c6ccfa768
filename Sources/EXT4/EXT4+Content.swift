#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CVMSupport

/// The bytes of a regular file to be written by `EXT4Formatter`, streamed in order.
public protocol EXT4FileContent {
    /// Exact length in bytes; the stream must deliver exactly this many.
    var size: UInt64 { get }
    /// Delivers the content from the start, in order, in chunks of any size.
    func stream(to sink: (UnsafeRawBufferPointer) throws -> Void) throws
}

/// Chunk size for streaming file content: bounded memory whatever the file size.
let contentChunkSize = 1 << 20

/// A file on the host, opened only while it is being copied.
public struct EXT4HostFile: EXT4FileContent {
    public let path: String
    public let size: UInt64

    public init(path: String, size: UInt64) {
        self.path = path
        self.size = size
    }

    public func stream(to sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let file = try FileDescriptor.openForReading(path)
        defer { file.close() }
        var buffer = [UInt8](repeating: 0, count: contentChunkSize)
        var offset: UInt64 = 0
        while offset < size {
            let want = Int(min(UInt64(buffer.count), size - offset))
            let got = try buffer.withUnsafeMutableBytes {
                try file.readUpTo(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<want]), at: offset)
            }
            guard got == want else {
                throw CVMError.io("\(path): file shrank while it was being copied (expected \(size) bytes)")
            }
            try buffer.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<got])) }
            offset += UInt64(got)
        }
    }
}

/// A regular file inside a file system being read, opened when it is copied.
public struct EXT4ReaderFile: EXT4FileContent {
    public let reader: EXT4Reader
    public let inodeNumber: UInt32
    public let size: UInt64

    public init(reader: EXT4Reader, inodeNumber: UInt32, size: UInt64) {
        self.reader = reader
        self.inodeNumber = inodeNumber
        self.size = size
    }

    public func stream(to sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let file = try reader.openFile(inodeNumber)
        guard file.size == size else {
            throw CVMError.invalid("\(reader.name): inode \(inodeNumber) size changed from \(size) to \(file.size)")
        }
        var buffer = [UInt8](repeating: 0, count: contentChunkSize)
        var offset: UInt64 = 0
        while offset < size {
            let n = Int(min(UInt64(buffer.count), size - offset))
            try buffer.withUnsafeMutableBytes { try file.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: offset) }
            try buffer.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            offset += UInt64(n)
        }
    }
}

/// Content held in memory (small files, tests).
public struct EXT4BytesContent: EXT4FileContent {
    public let bytes: [UInt8]
    public var size: UInt64 { UInt64(bytes.count) }

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public func stream(to sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try bytes.withUnsafeBytes { try sink($0) }
    }
}
