import CVMCrypto
import CVMSupport
import Foundation

/// What a later `--resume` needs to continue a GCS upload: the session, how far the server
/// confirmed, and what was being uploaded (so a changed source is never appended to an old
/// session). The session URI is a capability (anyone holding it can write the object): the
/// file is mode 0600 in a 0700 folder, and its content is never logged.
struct GCSResumeState: Codable, Equatable {
    static let currentVersion = 1

    /// The file being uploaded, identified cheaply but strongly enough to notice a change.
    struct SourceIdentity: Codable, Equatable {
        var path: String
        var size: UInt64
        var modifiedNanoseconds: Int64
        var inode: UInt64
        /// Hex SHA-256 of the first MiB.
        var headSHA256: String
    }

    var version = GCSResumeState.currentVersion
    var destination: String
    var storageEndpoint: String
    var sessionURI: String
    var source: SourceIdentity
    /// `as-is`, or the converter and its options (`gcp-tar.gz level=6 mtime=0`): a resume must
    /// regenerate the very same stream.
    var streamKind: String
    var chunkSize: UInt64
    /// Stream length when known up front.
    var totalLength: UInt64?
    /// Bytes the server confirmed at the last save.
    var confirmed: UInt64
    /// CRC-32C of each `GCSUploadStream.verificationBlockSize` block below `confirmed`.
    var blockCRC32C: [UInt32]
}

/// Reads and writes resume states under `$XDG_CACHE_HOME/cvm-cli/gcs-uploads` (or
/// `~/.cache/cvm-cli/gcs-uploads`), one file per (destination, source path).
struct GCSResumeStore {
    let directory: String

    init(environment: [String: String], home: String) {
        var base = environment["XDG_CACHE_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? "\(home)/.cache"
        while base.count > 1 && base.hasSuffix("/") { base.removeLast() }
        directory = "\(base)/cvm-cli/gcs-uploads"
    }

    func path(destination: String, sourcePath: String) -> String {
        let key = hexString(SHA256.hash(Array("\(destination)\n\(sourcePath)".utf8)))
        return "\(directory)/\(key.prefix(32)).json"
    }

    /// The saved state, or nil when there is none or it cannot be used (unreadable, another
    /// version): a resume then starts a new session.
    func load(_ path: String) -> GCSResumeState? {
        guard let data = FileManager.default.contents(atPath: path), data.count < 4 << 20,
              let state = try? JSONDecoder().decode(GCSResumeState.self, from: data),
              state.version == GCSResumeState.currentVersion else { return nil }
        return state
    }

    /// Writes `state` atomically (temp file, fsync, rename) with mode 0600.
    func save(_ state: GCSResumeState, to path: String) throws {
        try makeDirectory()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(state)
        let out = try AtomicOutputFile(path: path, overwrite: true)
        fchmod(out.descriptor.fd, 0o600)
        do {
            try out.descriptor.write(Array(data), at: 0)
            try out.commit()
        } catch {
            out.discard()
            throw CVMError.io("\(path): cannot save the upload state for --resume: \((error as? CVMError)?.message ?? "\(error)")")
        }
    }

    func remove(_ path: String) {
        unlink(path)
    }

    private func makeDirectory() throws {
        var built = ""
        for part in directory.split(separator: "/") {
            built += "/" + part
            if mkdir(built, 0o700) != 0 && errno != EEXIST {
                throw CVMError.io("\(built): cannot create the cache folder for upload states: \(errnoDescription())")
            }
        }
        chmod(directory, 0o700)
    }

    /// Identity of the open file at `path`.
    static func identity(of file: FileDescriptor, path: String) throws -> GCSResumeState.SourceIdentity {
        var st = stat()
        guard fstat(file.fd, &st) == 0 else { throw CVMError.io("\(path): cannot stat: \(errnoDescription())") }
        let size = UInt64(st.st_size)
        let head = try file.read(count: Int(min(size, 1 << 20)), at: 0)
        let modified = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        return .init(path: path, size: size, modifiedNanoseconds: modified, inode: UInt64(st.st_ino),
                     headSHA256: hexString(SHA256.hash(head)))
    }
}
