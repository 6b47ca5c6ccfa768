import CVMCrypto
import CVMSupport
import Foundation

/// What `--resume` needs to continue a page blob upload: which blob, from which file, and the
/// footer timestamp used (so the resumed VHD is byte for byte the same). No secret is kept: the
/// pages already written are asked from the service itself (Get Page Ranges).
///
/// Kept in `$XDG_CACHE_HOME/cvm-cli/uploads` (else `~/.cache/cvm-cli/uploads`), one file per
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

/// Where resume states live and how they are read and written.
struct AzureUploadStateStore {
    let directory: String

    /// `$XDG_CACHE_HOME/cvm-cli/uploads` when XDG_CACHE_HOME is an absolute path, else
    /// `<home>/.cache/cvm-cli/uploads` (the XDG base-directory rule).
    init(environment: [String: String], home: String) {
        if let xdg = environment["XDG_CACHE_HOME"], xdg.hasPrefix("/") {
            directory = xdg + "/cvm-cli/uploads"
        } else {
            directory = home + "/.cache/cvm-cli/uploads"
        }
    }

    func path(for blobURL: String) -> String {
        directory + "/azure-" + hexString(Array(SHA256.hash(blobURL).prefix(16))) + ".json"
    }

    /// The saved state for `blobURL`, or nil (none, or unreadable: then the upload starts over).
    func load(blobURL: String) -> AzureUploadState? {
        guard let data = FileManager.default.contents(atPath: path(for: blobURL)),
              let state = try? JSONDecoder().decode(AzureUploadState.self, from: data),
              state.blobURL == blobURL else { return nil }
        return state
    }

    func save(_ state: AzureUploadState) throws {
        try createDirectory(directory)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let bytes = Array(try encoder.encode(state)) + [0x0A]
        let file = try AtomicOutputFile(path: path(for: state.blobURL), overwrite: true)
        fchmod(file.descriptor.fd, 0o600)
        do {
            try file.descriptor.write(bytes, at: 0)
            try file.commit()
        } catch {
            file.discard()
            throw CVMError.io("cannot save the upload state in \(directory): \(error)")
        }
    }

    func remove(blobURL: String) {
        unlink(path(for: blobURL))
    }

    /// `mkdir -p` with mode 0700 for the folders we create.
    private func createDirectory(_ path: String) throws {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o700) != 0 && errno != EEXIST {
                throw CVMError.io("\(current): cannot create the upload state folder: \(errnoDescription())")
            }
        }
    }
}
