import CVMSupport

// Placeholder signatures; the GCP tar.gz implementation replaces this file.

/// Reads a GCP image archive: gzip'd tar with one member `disk.raw`.
public final class GCPTarGzReader: DiskReader {
    public var format: DiskFormat { .gcpTarGz }
    public var virtualSize: UInt64 { 0 }
    public var isSequential: Bool { true }
    public init(source: ByteSource) throws { throw CVMError.unsupported("\(source.name): tar.gz is not implemented yet") }
    public func storedRanges() throws -> [Range<UInt64>] { [] }
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {}
}

/// Writes a GCP image archive; gzip chunks compressed in parallel, one gzip member.
public final class GCPTarGzWriter: DiskWriter {
    public var outputVirtualSize: UInt64 { 0 }
    public init(output: FileDescriptor, inputVirtualSize: UInt64, options: WriterOptions) throws {
        throw CVMError.unsupported("writing tar.gz is not implemented yet")
    }
    public func write(_ piece: DataPiece) throws {}
    public func writeZeros(at offset: UInt64, length: UInt64) throws {}
    public func finish() throws {}
}
