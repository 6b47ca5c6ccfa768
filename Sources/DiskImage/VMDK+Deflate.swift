import CDeflate
import CVMSupport

extension VMDK {
    /// A libdeflate zlib compressor. Not thread-safe: one per worker thread.
    final class GrainDeflater {
        private let handle: OpaquePointer

        init(level: Int) throws {
            guard let h = libdeflate_alloc_compressor(Int32(level)) else {
                throw CVMError.io("cannot create a deflate compressor at level \(level) (out of memory or bad level)")
            }
            handle = h
        }

        deinit { libdeflate_free_compressor(handle) }

        /// Largest zlib stream that `count` input bytes can produce.
        func bound(_ count: Int) -> Int { libdeflate_zlib_compress_bound(handle, count) }

        /// Compresses `input` into `output`; returns the zlib stream length (0: did not fit).
        func compress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int {
            guard let src = input.baseAddress, let dst = output.baseAddress else { return 0 }
            return libdeflate_zlib_compress(handle, src, input.count, dst, output.count)
        }
    }

    /// A libdeflate zlib decompressor. Not thread-safe: one per worker thread.
    final class GrainInflater {
        private let handle: OpaquePointer

        init() throws {
            guard let h = libdeflate_alloc_decompressor() else {
                throw CVMError.io("cannot create a deflate decompressor (out of memory)")
            }
            handle = h
        }

        deinit { libdeflate_free_decompressor(handle) }

        /// Decompresses one zlib stream at the start of `input` (trailing bytes are ignored, as
        /// other readers do) into `output`; returns the decompressed length, or nil when the
        /// data is corrupt or does not fit.
        func decompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int? {
            guard let src = input.baseAddress, let dst = output.baseAddress else { return nil }
            var consumed = 0
            var produced = 0
            let result = libdeflate_zlib_decompress_ex(handle, src, input.count, dst, output.count, &consumed, &produced)
            return result == LIBDEFLATE_SUCCESS ? produced : nil
        }
    }
}
