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

/// GCS upload states in the shared `ResumeStore` (`$XDG_CACHE_HOME/cvm-cli/resume`), one per
/// (destination, source path). `path(destination:sourcePath:)` names the state; the session URI
/// inside makes the 0600 file a secret, and it is never logged.
struct GCSResumeStore {
    let store: ResumeStore

    init(environment: [String: String], home: String) {
        store = ResumeStore(environment: environment, home: home)
    }

    /// The key of the state (not a file path: the store maps it to one).
    func path(destination: String, sourcePath: String) -> String {
        "\(destination) <- \(sourcePath)"
    }

    /// The saved state, or nil when there is none or it cannot be used (unreadable, another
    /// version): a resume then starts a new session.
    func load(_ key: String) -> GCSResumeState? {
        guard let state = store.load(GCSResumeState.self, key: key),
              state.version == GCSResumeState.currentVersion else { return nil }
        return state
    }

    func save(_ state: GCSResumeState, to key: String) throws {
        do {
            try store.save(state, key: key)
        } catch let error as CVMError {
            throw CVMError(error.kind, "cannot save the upload state for --resume: \(error.message)")
        }
    }

    func remove(_ key: String) {
        store.remove(key: key)
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
