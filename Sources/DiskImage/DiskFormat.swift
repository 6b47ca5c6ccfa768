/// The container formats a virtual disk can be stored in, as detected from file content.
public enum DiskFormat: String, Sendable, CaseIterable, Codable {
    case raw
    case qcow2
    case vhdFixed = "vhd-fixed"
    case vhdDynamic = "vhd-dynamic"
    case vmdkStream = "vmdk-stream"
    case gcpTarGz = "gcp-tar-gz"
}

/// The formats cvm-cli writes (the `--format` values).
public enum OutputFormat: String, Sendable, CaseIterable {
    case raw
    /// Fixed VHD with a MiB-aligned virtual size (Azure).
    case vhd
    /// Stream-optimized VMDK (AWS).
    case vmdk
    /// gzip'd tar holding one member `disk.raw` (GCP).
    case tarGz = "tar.gz"

    /// The output format implied by a file name, if any (`.vhd`, `.vmdk`, `.tar.gz`/`.tgz`, `.raw`/`.img`).
    public static func fromFileName(_ path: String) -> OutputFormat? {
        let lower = path.lowercased()
        if lower.hasSuffix(".vhd") { return .vhd }
        if lower.hasSuffix(".vmdk") { return .vmdk }
        if lower.hasSuffix(".tar.gz") || lower.hasSuffix(".tgz") { return .tarGz }
        if lower.hasSuffix(".raw") || lower.hasSuffix(".img") { return .raw }
        return nil
    }

    /// The detected format a file written in this format reads back as.
    public var diskFormat: DiskFormat {
        switch self {
        case .raw: return .raw
        case .vhd: return .vhdFixed
        case .vmdk: return .vmdkStream
        case .tarGz: return .gcpTarGz
        }
    }
}

/// Sizes used across the format engine.
public enum DiskGeometry {
    public static let sectorSize: UInt64 = 512
    public static let mebibyte: UInt64 = 1 << 20
    public static let gibibyte: UInt64 = 1 << 30
    /// Zero detection granularity: every writer sees which 64 KiB blocks are all zeros.
    public static let blockSize = 64 * 1024
    /// Offsets and lengths of pieces handed to writers are multiples of this
    /// (except the last piece, which ends at the input's virtual size).
    public static let pieceAlignment: UInt64 = 1 << 20

    public static func roundUp(_ value: UInt64, to multiple: UInt64) -> UInt64 {
        let r = value % multiple
        return r == 0 ? value : value + (multiple - r)
    }
}
