#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An anonymous scratch file: created in `directory` and unlinked at once, so it disappears
/// with the process whatever happens (even SIGKILL). Holes read as zeros.
public enum TemporaryFile {
    public static func anonymous(in directory: String, purpose: String) throws -> FileDescriptor {
        var template = Array("\(directory)/.cvm-scratch-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw CVMError.io("\(directory): cannot create a scratch file for \(purpose): \(errnoDescription())")
        }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return FileDescriptor(fd: fd, path: "\(directory) (scratch file for \(purpose))")
    }
}
