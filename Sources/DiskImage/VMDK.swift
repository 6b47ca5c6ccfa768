import CVMSupport

// Placeholder signatures; the VMDK implementation replaces this file.

/// Reads stream-optimized VMDK (KDMV sparse extent with compressed grains).
public final class VMDKStreamReader: DiskReader {
    public var format: DiskFormat { .vmdkStream }
    public var virtualSize: UInt64 { 0 }
    public init(source: ByteSource) throws { throw CVMError.unsupported("\(source.name): VMDK is not implemented yet") }
    public func storedRanges() throws -> [Range<UInt64>] { [] }
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {}
}

/// Writes stream-optimized VMDK; grains compressed in parallel and written in order.
public final class VMDKStreamWriter: DiskWriter {
    public var outputVirtualSize: UInt64 { 0 }
    public init(output: FileDescriptor, inputVirtualSize: UInt64, options: WriterOptions) throws {
        throw CVMError.unsupported("writing VMDK is not implemented yet")
    }
    public func write(_ piece: DataPiece) throws {}
    public func writeZeros(at offset: UInt64, length: UInt64) throws {}
    public func finish() throws {}
}
