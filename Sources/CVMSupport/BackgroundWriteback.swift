#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch

/// Keeps the kernel writing a file's dirty pages to disk while the program is still
/// producing it (Linux `sync_file_range`), so the fsync before an atomic rename finds little
/// left to write: disk I/O overlaps the work instead of following it. Durability still comes
/// only from that fsync; this changes when bytes reach the disk, never what is written.
public final class BackgroundWriteback: @unchecked Sendable {
    private let fd: Int32
    private let stopRequest = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private var running = true

    /// - Parameter interval: seconds between two kicks.
    public init(file: FileDescriptor, interval: Double = 0.05) {
        fd = file.fd
        let nanoseconds = Int(interval * 1e9)
        DispatchQueue.global(qos: .utility).async { [self] in
            while stopRequest.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .timedOut {
                kick()
            }
            stopped.signal()
        }
    }

    deinit { stop() }

    /// Ends the background kicks (returns once none is in progress). Idempotent.
    public func stop() {
        guard running else { return }
        running = false
        stopRequest.signal()
        stopped.wait()
    }

    private func kick() {
        // Start write-out of every dirty page not already under write-out; errors (an
        // unsupported file system) only mean no early write-out.
        _ = Self.syncFileRange?(fd, 0, 0, 2 /* SYNC_FILE_RANGE_WRITE */)
    }

    private typealias SyncFileRange = @convention(c) (Int32, Int64, Int64, UInt32) -> Int32
    /// glibc declares sync_file_range only under _GNU_SOURCE, which Swift's Glibc module
    /// does not set: looked up by name (nil elsewhere, e.g. macOS).
    private static let syncFileRange: SyncFileRange? = {
        #if os(Linux)
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sync_file_range") else { return nil }
        return unsafeBitCast(symbol, to: SyncFileRange.self)
        #else
        return nil
        #endif
    }()
}
