import CVMSupport

/// Opens disk images, detecting the format from the content (magic numbers, footers),
/// never from the file name.
public enum DiskImageFile {
    /// Opens `path` read-only and returns a reader for the virtual disk it holds.
    public static func open(_ path: String) throws -> DiskReader {
        let source = try FileByteSource(path: path)
        return try open(source: source, path: path)
    }

    /// Detects the format of `source`. `path` is used for the qcow2 library (which opens files
    /// itself) and to resolve backing files; in-memory sources pass nil.
    public static func open(source: ByteSource, path: String?) throws -> DiskReader {
        let format = try detect(source)
        switch format {
        case .raw:
            try checkNameAgreesWithRaw(source)
            return RawReader(source: source)
        case .qcow2:
            guard let path else {
                throw CVMError.unsupported("\(source.name): qcow2 can only be read from a file")
            }
            return try QCOW2Reader(path: path, source: source)
        case .vhdFixed, .vhdDynamic:
            return try VHDReader(source: source)
        case .vmdkStream:
            return try VMDKStreamReader(source: source)
        case .gcpTarGz:
            return try GCPTarGzReader(source: source)
        }
    }

    /// The container format of `source`, from its content.
    public static func detect(_ source: ByteSource) throws -> DiskFormat {
        guard source.size > 0 else {
            throw CVMError.invalid("\(source.name): file is empty; expected a disk image (raw, qcow2, VHD, VMDK or GCP tar.gz)")
        }
        let head = try source.bytes(count: Int(min(source.size, 512)), at: 0)
        if head.count >= 4, head[0] == 0x51, head[1] == 0x46, head[2] == 0x49, head[3] == 0xFB { return .qcow2 }  // "QFI\xfb"
        if head.count >= 4, head.ascii(0, 4) == "KDMV" { return .vmdkStream }
        if head.count >= 2, head[0] == 0x1F, head[1] == 0x8B { return .gcpTarGz }
        if head.count >= 8, head.ascii(0, 8) == "conectix" { return .vhdDynamic }
        if try VHDReader.probe(source) { return .vhdFixed }
        if head.count >= 22, head.ascii(0, 21) == "# Disk DescriptorFile" {
            throw CVMError.unsupported("\(source.name): a VMDK descriptor file without data; only stream-optimized VMDK (one file) is supported")
        }
        if head.count >= 262, head.ascii(257, 5) == "ustar" {
            throw CVMError.unsupported("\(source.name): an uncompressed tar archive; expected a GCP image (gzip'd tar holding disk.raw)")
        }
        return .raw
    }

    /// Content says raw, but a name that promises another format means a damaged file
    /// (a VHD that lost its footer reads as raw): refuse rather than convert garbage.
    static func checkNameAgreesWithRaw(_ source: ByteSource) throws {
        let lower = source.name.lowercased()
        let named: String?
        if lower.hasSuffix(".vhd") { named = "VHD (no 'conectix' footer found in the last 512 bytes)" }
        else if lower.hasSuffix(".vmdk") { named = "VMDK (no 'KDMV' header)" }
        else if lower.hasSuffix(".qcow2") { named = "qcow2 (no 'QFI\\xfb' magic)" }
        else if lower.hasSuffix(".tar.gz") || lower.hasSuffix(".tgz") { named = "gzip (no 1f 8b magic)" }
        else { named = nil }
        if let named {
            throw CVMError.invalid("\(source.name): the name says \(named); the file is truncated or not in that format")
        }
    }
}

/// Creates the writer for an output format.
public enum DiskWriters {
    public static func make(_ format: OutputFormat, output: FileDescriptor, inputVirtualSize: UInt64,
                            options: WriterOptions = WriterOptions()) throws -> DiskWriter {
        switch format {
        case .raw: return RawWriter(output: output, inputVirtualSize: inputVirtualSize)
        case .vhd: return try VHDFixedWriter(output: output, inputVirtualSize: inputVirtualSize, options: options)
        case .vmdk: return try VMDKStreamWriter(output: output, inputVirtualSize: inputVirtualSize, options: options)
        case .tarGz: return try GCPTarGzWriter(output: output, inputVirtualSize: inputVirtualSize, options: options)
        }
    }
}
