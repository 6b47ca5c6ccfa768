#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Human-readable text for the current `errno`.
public func errnoDescription(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}

/// A file descriptor with positioned, complete reads and writes. Reads never move a shared
/// offset, so one file can be read from several threads.
public final class FileDescriptor: @unchecked Sendable {
    public let fd: Int32
    public let path: String
    private var closed = false

    /// Opens `path` read-only. The input of every command is opened this way and never for writing.
    public static func openForReading(_ path: String) throws -> FileDescriptor {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw CVMError.io("\(path): cannot open for reading: \(errnoDescription())")
        }
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            _ = Glibc_close(fd)
            throw CVMError.invalid("\(path): is a directory, expected a disk image file")
        }
        return FileDescriptor(fd: fd, path: path)
    }

    public init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { if !closed { _ = Glibc_close(fd) } }

    public func close() {
        if !closed { closed = true; _ = Glibc_close(fd) }
    }

    /// Size of the file in bytes (block devices: their size).
    public func size() throws -> UInt64 {
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { throw CVMError.io("\(path): cannot determine size: \(errnoDescription())") }
        return UInt64(end)
    }

    /// Identity of the underlying file, to refuse writing an output over its own input.
    public func identity() -> (dev: UInt64, ino: UInt64)? {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    /// Reads exactly `buffer.count` bytes at `offset`; a short file is a truncation error.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw CVMError.io("\(path): read failed at byte \(offset + UInt64(done)): \(errnoDescription())")
            }
            if n == 0 {
                throw CVMError.invalid("\(path): file is truncated (needed \(buffer.count) bytes at offset \(offset), file ends at \(offset + UInt64(done)))")
            }
            done += n
        }
    }

    /// Reads up to `buffer.count` bytes at `offset`; returns how many were read (0 at end of file).
    public func readUpTo(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw CVMError.io("\(path): read failed at byte \(offset + UInt64(done)): \(errnoDescription())")
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Convenience: reads `count` bytes at `offset` into a new array.
    public func read(count: Int, at offset: UInt64) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return bytes
    }

    /// Writes all of `buffer` at `offset`.
    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw CVMError.io("\(path): write failed at byte \(offset + UInt64(done)): \(errnoDescription())")
            }
            done += n
        }
    }

    public func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    /// Sets the file length; growing leaves a hole that reads as zeros.
    public func truncate(to length: UInt64) throws {
        guard ftruncate(fd, off_t(length)) == 0 else {
            throw CVMError.io("\(path): cannot set length to \(length): \(errnoDescription())")
        }
    }

    public func sync() throws {
        guard fsync(fd) == 0 else { throw CVMError.io("\(path): fsync failed: \(errnoDescription())") }
    }

    /// Ranges of the file that hold data, from SEEK_DATA/SEEK_HOLE. Filesystems without
    /// hole support report the whole file as data.
    public func dataRanges(upTo size: UInt64) -> [Range<UInt64>] {
        var ranges: [Range<UInt64>] = []
        var pos: off_t = 0
        let end = off_t(size)
        while pos < end {
            let dataStart = lseek(fd, pos, 3 /* SEEK_DATA */)
            if dataStart < 0 {
                if errno == ENXIO { break }           // no more data
                return [0..<size]                      // SEEK_DATA unsupported: all data
            }
            if dataStart >= end { break }
            var holeStart = lseek(fd, dataStart, 4 /* SEEK_HOLE */)
            if holeStart < 0 || holeStart > end { holeStart = end }
            ranges.append(UInt64(dataStart)..<UInt64(holeStart))
            pos = holeStart
        }
        return ranges
    }
}

// `close` inside FileDescriptor refers to the method; this reaches the C function.
@inline(__always) private func Glibc_close(_ fd: Int32) -> Int32 {
    #if canImport(Glibc)
    return Glibc.close(fd)
    #else
    return Darwin.close(fd)
    #endif
}
