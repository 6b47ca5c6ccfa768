import CQcow
import CVMSupport

/// A qcow file opened read-only through libqcow, which decodes plain and zlib-compressed
/// clusters. libqcow handles are not thread-safe: the owner serializes every call.
///
/// Only clusters the image stores may be read through it. libqcow refuses every read of an
/// image that names a backing file until a parent handle is set, and it can only take a
/// qcow parent; cvm-cli reads unallocated clusters from the backing file itself (any
/// format). So such images get a sentinel parent: a second handle on the same image, never
/// consulted for stored clusters, and failing loudly ("missing parent file") if it ever were.
final class LibQcowFile {
    let path: String
    /// Virtual disk size as libqcow sees it.
    let mediaSize: UInt64
    private var handle: UnsafeMutablePointer<libqcow_file_t>?
    /// Kept open as long as `handle`, which points to it.
    private let sentinelParent: LibQcowFile?

    convenience init(path: String, hasBackingFile: Bool) throws {
        let sentinel = hasBackingFile ? try LibQcowFile(path: path, parent: nil) : nil
        try self.init(path: path, parent: sentinel)
    }

    private init(path: String, parent: LibQcowFile?) throws {
        self.path = path
        var error: UnsafeMutablePointer<libqcow_error_t>?
        var file: UnsafeMutablePointer<libqcow_file_t>?
        guard libqcow_file_initialize(&file, &error) == 1 else {
            throw CVMError.io("\(path): libqcow cannot start: \(LibQcowFile.describe(&error))")
        }
        guard libqcow_file_open(file, path, libqcow_get_access_flags_read(), &error) == 1 else {
            let message = LibQcowFile.describe(&error)
            var ignored: UnsafeMutablePointer<libqcow_error_t>?
            libqcow_file_free(&file, &ignored)
            LibQcowFile.free(&ignored)
            throw CVMError.invalid("\(path): libqcow cannot open the qcow2 image: \(message)")
        }
        var size: size64_t = 0
        guard libqcow_file_get_media_size(file, &size, &error) == 1 else {
            let message = LibQcowFile.describe(&error)
            LibQcowFile.close(&file)
            throw CVMError.invalid("\(path): libqcow cannot read the disk size: \(message)")
        }
        if let parent {
            guard libqcow_file_set_parent_file(file, parent.handle, &error) == 1 else {
                let message = LibQcowFile.describe(&error)
                LibQcowFile.close(&file)
                throw CVMError.invalid("\(path): libqcow cannot attach the backing file: \(message)")
            }
        }
        handle = file
        sentinelParent = parent
        mediaSize = UInt64(size)
    }

    deinit { LibQcowFile.close(&handle) }

    /// Reads virtual-disk bytes `[offset, offset + buffer.count)`.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard let base = buffer.baseAddress else { return }
        var done = 0
        while done < buffer.count {
            var error: UnsafeMutablePointer<libqcow_error_t>?
            let position = offset + UInt64(done)
            let n = libqcow_file_read_buffer_at_offset(handle, base + done, buffer.count - done,
                                                       off64_t(position), &error)
            if n < 0 {
                throw CVMError.invalid("\(path): libqcow cannot read \(buffer.count - done) bytes at virtual offset \(position): \(LibQcowFile.describe(&error))")
            }
            if n == 0 {
                throw CVMError.invalid("\(path): libqcow returned no data at virtual offset \(position) (disk size \(mediaSize)); the image is truncated")
            }
            done += n
        }
    }

    private static func close(_ file: inout UnsafeMutablePointer<libqcow_file_t>?) {
        guard file != nil else { return }
        var error: UnsafeMutablePointer<libqcow_error_t>?
        _ = libqcow_file_close(file, &error)
        free(&error)
        _ = libqcow_file_free(&file, &error)
        free(&error)
    }

    private static func free(_ error: inout UnsafeMutablePointer<libqcow_error_t>?) {
        if error != nil { libqcow_error_free(&error) }
    }

    /// libqcow's message for `error` on one line; frees the error.
    private static func describe(_ error: inout UnsafeMutablePointer<libqcow_error_t>?) -> String {
        guard error != nil else { return "unknown libqcow error" }
        var text = [CChar](repeating: 0, count: 1024)
        let n = libqcow_error_sprint(error, &text, text.count)
        free(&error)
        guard n > 0 else { return "unknown libqcow error" }
        let bytes = text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
            .split(whereSeparator: \.isNewline).joined(separator: "; ")
    }
}
