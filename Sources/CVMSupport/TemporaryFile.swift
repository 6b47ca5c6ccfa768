#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An anonymous scratch file in `directory` that disappears with the process whatever
/// happens, even SIGKILL. Holes read as zeros.
public enum TemporaryFile {
    public static func anonymous(in directory: String, purpose: String) throws -> FileDescriptor {
        let name = "\(directory) (scratch file for \(purpose))"
        #if os(Linux)
        // O_TMPFILE: the file never has a name, so no moment exists where a kill leaves it behind.
        let O_TMPFILE: Int32 = 0o20000000 | O_DIRECTORY
        let fd = open(directory, O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600)
        if fd >= 0 { return FileDescriptor(fd: fd, path: name) }
        guard errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL else {
            throw CVMError.io("\(directory): cannot create a scratch file for \(purpose): \(errnoDescription())")
        }
        #endif
        // Filesystems without O_TMPFILE: create and unlink at once.
        var template = Array("\(directory)/.cvm-scratch-XXXXXX".utf8CString)
        let fd2 = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd2 >= 0 else {
            throw CVMError.io("\(directory): cannot create a scratch file for \(purpose): \(errnoDescription())")
        }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return FileDescriptor(fd: fd2, path: name)
    }
}
