import CVMSupport

/// Random-access bytes of one ext4 partition, read by `EXT4Reader`.
///
/// The update-disk glue adapts a disk reader's partition range to this; tests use a file.
public protocol EXT4BlockSource: AnyObject {
    /// Size of the partition in bytes.
    var size: UInt64 { get }
    /// Reads exactly `buffer.count` bytes at `offset` (relative to the partition start).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
}

/// Where `EXT4Formatter` writes: positioned writes relative to the partition start.
///
/// The formatter never writes zero-filled unused space: the output must already read as zeros
/// wherever nothing is written (a new sparse file, or a range the caller zeroed or punched).
public protocol EXT4Output: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws
}

/// A byte range of an open file (a raw partition image, or a partition inside a raw disk) as an
/// `EXT4BlockSource` and `EXT4Output`.
public final class EXT4FileRange: EXT4BlockSource, EXT4Output, @unchecked Sendable {
    public let file: FileDescriptor
    public let offset: UInt64
    public let size: UInt64

    /// - Parameters:
    ///   - offset: first byte of the partition in the file.
    ///   - size: partition length in bytes.
    public init(file: FileDescriptor, offset: UInt64 = 0, size: UInt64) {
        self.file = file
        self.offset = offset
        self.size = size
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at position: UInt64) throws {
        guard position <= size, UInt64(buffer.count) <= size - position else {
            throw CVMError.invalid("\(file.path): read of \(buffer.count) bytes at \(position) is outside the partition (size \(size))")
        }
        try file.read(into: buffer, at: offset + position)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at position: UInt64) throws {
        guard position <= size, UInt64(bytes.count) <= size - position else {
            throw CVMError.invalid("\(file.path): write of \(bytes.count) bytes at \(position) is outside the partition (size \(size))")
        }
        try file.write(bytes, at: offset + position)
    }
}
