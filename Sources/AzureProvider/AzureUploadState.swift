import CVMCrypto
import CVMSupport
import Foundation

/// What `--resume` needs to continue a page blob upload: which blob, from which file, and the
/// footer timestamp used (so the resumed VHD is byte for byte the same). No secret is kept: the
/// pages already written are asked from the service itself (Get Page Ranges).
///
/// Kept in the shared `ResumeStore` (`$XDG_CACHE_HOME/cvm-cli/resume`), one file per
/// destination, written atomically with mode 0600; removed when the upload completes.
struct AzureUploadState: Codable, Equatable {
    var version = 1
    /// `endpoint/container/blob` (the account's blob endpoint, never a SAS or key).
    var blobURL: String
    var sourcePath: String
    var sourceSize: UInt64
    /// Modification time in nanoseconds and inode: a changed file does not resume.
    var sourceModified: Int64
    var sourceInode: UInt64
    var blobSize: UInt64
    var footerTimestamp: UInt64

    /// True when `other` describes the same upload of the same, unchanged file.
    func matches(_ other: AzureUploadState) -> Bool {
        version == other.version && blobURL == other.blobURL && sourcePath == other.sourcePath
            && sourceSize == other.sourceSize && sourceModified == other.sourceModified
            && sourceInode == other.sourceInode && blobSize == other.blobSize
    }

    /// The state describing `path` as it is now.
    static func describing(path: String, blobURL: String, blobSize: UInt64, footerTimestamp: UInt64) throws -> AzureUploadState {
        var st = stat()
        guard stat(path, &st) == 0 else { throw CVMError.io("\(path): cannot stat: \(errnoDescription())") }
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        return AzureUploadState(blobURL: blobURL, sourcePath: URL(fileURLWithPath: absolute).standardized.path,
                                sourceSize: UInt64(st.st_size),
                                sourceModified: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
                                sourceInode: UInt64(st.st_ino), blobSize: blobSize, footerTimestamp: footerTimestamp)
    }
}

/// Page-blob upload states in the shared `ResumeStore` (`$XDG_CACHE_HOME/cvm-cli/resume`),
/// one per destination blob.
struct AzureUploadStateStore {
    let store: ResumeStore

    init(environment: [String: String], home: String) {
        store = ResumeStore(environment: environment, home: home)
    }

    var directory: String { store.directory }

    func path(for blobURL: String) -> String { store.path(for: key(blobURL)) }

    /// The saved state for `blobURL`, or nil (none, or unreadable: then the upload starts over).
    func load(blobURL: String) -> AzureUploadState? {
        guard let state = store.load(AzureUploadState.self, key: key(blobURL)), state.blobURL == blobURL else { return nil }
        return state
    }

    func save(_ state: AzureUploadState) throws {
        try store.save(state, key: key(state.blobURL))
    }

    func remove(blobURL: String) {
        store.remove(key: key(blobURL))
    }

    private func key(_ blobURL: String) -> String { "az " + blobURL }
}
