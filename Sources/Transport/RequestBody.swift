import CVMSupport

/// The body of a request, supplied in chunks at offsets so it can be replayed from the start
/// for every retry without holding it in memory (a disk image is never loaded whole).
public protocol RequestBody: Sendable {
    /// Exact length in bytes; sent as Content-Length.
    var size: UInt64 { get }

    /// Copies up to `buffer.count` bytes starting at `offset` into `buffer` and returns how many
    /// were copied. Returns 0 only when `offset >= size`. Called from one transfer thread at a time,
    /// but different attempts may start again at 0.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int
}

/// A small body held in memory (control-plane JSON/XML, one 512 KiB block).
public struct BytesBody: RequestBody {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ text: String) { self.bytes = Array(text.utf8) }

    public var size: UInt64 { UInt64(bytes.count) }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < UInt64(bytes.count) else { return 0 }
        let start = Int(offset)
        let n = min(buffer.count, bytes.count - start)
        bytes.withUnsafeBytes { src in
            buffer.baseAddress!.copyMemory(from: src.baseAddress! + start, byteCount: n)
        }
        return n
    }
}

/// A byte range of an open file, read with pread as the transfer needs it.
public struct FileRangeBody: RequestBody {
    public let file: FileDescriptor
    public let range: Range<UInt64>

    public init(file: FileDescriptor, range: Range<UInt64>) {
        self.file = file
        self.range = range
    }

    /// The whole file.
    public init(file: FileDescriptor) throws {
        self.init(file: file, range: 0..<(try file.size()))
    }

    public var size: UInt64 { UInt64(range.count) }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < size else { return 0 }
        let n = Int(min(UInt64(buffer.count), size - offset))
        let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
        // A file that shrank underneath us is an error, not a short body.
        try file.read(into: target, at: range.lowerBound + offset)
        return n
    }
}
