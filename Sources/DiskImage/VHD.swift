import CVMSupport

// Placeholder signatures; the VHD implementation replaces this file.

/// Reads fixed and dynamic VHD.
public final class VHDReader: DiskReader {
    public var format: DiskFormat { .vhdFixed }
    public var virtualSize: UInt64 { 0 }
    /// Returns nil when the source has no VHD footer (not a VHD).
    public static func probe(_ source: ByteSource) throws -> Bool { false }
    public init(source: ByteSource) throws { throw CVMError.unsupported("\(source.name): VHD is not implemented yet") }
    public func storedRanges() throws -> [Range<UInt64>] { [] }
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {}
}

/// Writes a fixed VHD (raw bytes + 512-byte footer), virtual size rounded up to a MiB.
public final class VHDFixedWriter: DiskWriter {
    public var outputVirtualSize: UInt64 { 0 }
    public init(output: FileDescriptor, inputVirtualSize: UInt64, options: WriterOptions) throws {
        throw CVMError.unsupported("writing VHD is not implemented yet")
    }
    public func write(_ piece: DataPiece) throws {}
    public func writeZeros(at offset: UInt64, length: UInt64) throws {}
    public func finish() throws {}
}
