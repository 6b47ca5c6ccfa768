import CVMSupport

// Placeholder signatures; the qcow2 implementation replaces this file.

/// Reads qcow (v1–v3) through libqcow, including compressed clusters and backing files.
public final class QCOW2Reader: DiskReader {
    public var format: DiskFormat { .qcow2 }
    public var virtualSize: UInt64 { 0 }
    public init(path: String, source: ByteSource) throws { throw CVMError.unsupported("\(path): qcow2 is not implemented yet") }
    public func storedRanges() throws -> [Range<UInt64>] { [] }
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {}
}
