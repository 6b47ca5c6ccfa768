import CVMSupport

/// Random-access bytes of a container file (not of the virtual disk it holds).
/// Parsers read through this so they work the same on files and on in-memory data (fuzzing).
public protocol ByteSource: AnyObject, Sendable {
    /// Shown in error messages: the file's path.
    var name: String { get }
    var size: UInt64 { get }
    /// Reads exactly `buffer.count` bytes at `offset`, or throws a truncation error naming the file.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
    /// Ranges of the file that may hold data (SEEK_DATA for files); the default is the whole file.
    func dataRanges() -> [Range<UInt64>]
}

extension ByteSource {
    public func bytes(count: Int, at offset: UInt64) throws -> [UInt8] {
        guard offset <= size, UInt64(count) <= size - offset else {
            throw CVMError.invalid("\(name): file is truncated (needed \(count) bytes at offset \(offset), file size is \(size))")
        }
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return out
    }

    public func dataRanges() -> [Range<UInt64>] { size == 0 ? [] : [0..<size] }
}

/// A file opened read-only.
public final class FileByteSource: ByteSource, @unchecked Sendable {
    public let file: FileDescriptor
    public let size: UInt64
    public var name: String { file.path }

    public init(path: String) throws {
        file = try FileDescriptor.openForReading(path)
        size = try file.size()
    }

    /// Reads an already open file (e.g. an anonymous scratch file) of `size` bytes.
    public init(file: FileDescriptor, size: UInt64) {
        self.file = file
        self.size = size
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw CVMError.invalid("\(name): file is truncated (needed \(buffer.count) bytes at offset \(offset), file size is \(size))")
        }
        try file.read(into: buffer, at: offset)
    }

    public func dataRanges() -> [Range<UInt64>] { file.dataRanges(upTo: size) }
}

/// Bytes in memory (tests and the fuzz harness).
public final class MemoryByteSource: ByteSource, @unchecked Sendable {
    public let name: String
    public let storage: [UInt8]
    public var size: UInt64 { UInt64(storage.count) }

    public init(_ bytes: [UInt8], name: String = "<memory>") {
        storage = bytes
        self.name = name
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw CVMError.invalid("\(name): file is truncated (needed \(buffer.count) bytes at offset \(offset), file size is \(size))")
        }
        storage.withUnsafeBytes { src in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[Int(offset)..<Int(offset) + buffer.count]))
        }
    }
}
