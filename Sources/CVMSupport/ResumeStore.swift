import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where `--resume` keeps the state of an unfinished upload: one small JSON file per
/// (source file, destination) under the user's cache folder.
///
/// An upload id or a resumable-session URL lets whoever holds it write to the destination, so
/// the folder is 0700 and every file 0600, written through a temp file and renamed. The state
/// names the source by path, size, mtime and inode: a file that changed since is never resumed.
public struct ResumeStore: Sendable {
    public let directory: String

    /// `$XDG_CACHE_HOME/cvm-cli/resume`, else `~/Library/Caches/cvm-cli/resume` on macOS and
    /// `~/.cache/cvm-cli/resume` elsewhere — the places users expect caches to live.
    public init(environment: [String: String], home: String) {
        let base: String
        if let xdg = environment["XDG_CACHE_HOME"], xdg.hasPrefix("/") {
            base = xdg
        } else {
            #if os(macOS)
            base = home + "/Library/Caches"
            #else
            base = home + "/.cache"
            #endif
        }
        directory = base + "/cvm-cli/resume"
    }

    public init(directory: String) { self.directory = directory }

    /// The state saved for `key`, or nil when there is none or it cannot be decoded (an old or
    /// damaged state file only costs a fresh start).
    public func load<State: Decodable>(_ type: State.Type, key: String) -> State? {
        guard let data = FileManager.default.contents(atPath: path(for: key)) else { return nil }
        return try? JSONDecoder().decode(State.self, from: data)
    }

    /// Writes the state through a temp file (created 0600) and a rename. Not through
    /// `AtomicOutputFile`, whose signal clean-up is not wanted for a file that must survive an
    /// interrupt; temporaries of saves cut short by a kill are removed by the next save.
    public func save<State: Encodable>(_ state: State, key: String) throws {
        try makeDirectory()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(state)
        let final = path(for: key)
        let base = AtomicOutputFile.baseName(of: final)
        AtomicOutputFile.removeStaleTemporaries(directory: directory, baseName: base)
        let temp = "\(directory)/.\(base).cvm-tmp-\(getpid())-state"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw CVMError.io("\(temp): cannot write the resume state: \(errnoDescription())")
        }
        let file = FileDescriptor(fd: fd, path: temp)
        do {
            fchmod(fd, 0o600)
            try file.write(Array(data), at: 0)
            try file.sync()
            file.close()
        } catch {
            file.close()
            unlink(temp)
            throw error
        }
        guard rename(temp, final) == 0 else {
            let reason = errnoDescription()
            unlink(temp)
            throw CVMError.io("\(final): cannot save the resume state: \(reason)")
        }
    }

    public func remove(key: String) {
        unlink(path(for: key))
    }

    /// A file name that is stable for `key` and safe on every filesystem.
    public func path(for key: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325          // FNV-1a: a name, not a security boundary
        for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let readable = String(key.unicodeScalars.map { scalar -> Character in
            let c = Character(scalar)
            return c.isASCII && (c.isLetter || c.isNumber || c == "-" || c == ".") ? c : "_"
        }.suffix(60))
        return directory + "/" + readable + "-" + String(hash, radix: 16) + ".json"
    }

    private func makeDirectory() throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw CVMError.io("\(directory): cannot create the resume-state folder: \(error.localizedDescription)")
        }
        chmod(directory, 0o700)   // also when it already existed
    }
}

/// Which file, in which version, an upload reads: resuming is only safe if all of it is unchanged.
public struct SourceFileIdentity: Codable, Equatable, Sendable {
    public let path: String
    public let size: UInt64
    public let modificationNanoseconds: Int64
    public let device: UInt64
    public let inode: UInt64

    public init(path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw CVMError.io("\(path): cannot read its attributes: \(errnoDescription())")
        }
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        self.path = (absolute as NSString).standardizingPath
        size = UInt64(st.st_size)
        #if canImport(Darwin)
        modificationNanoseconds = Int64(st.st_mtimespec.tv_sec) * 1_000_000_000 + Int64(st.st_mtimespec.tv_nsec)
        #else
        modificationNanoseconds = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        #endif
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}
