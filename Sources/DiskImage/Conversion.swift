import CVMSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `convert` as a library call: open, check, convert atomically, report.
public enum DiskConversion {
    public struct Result: Sendable {
        public let inputPath: String
        public let inputFormat: DiskFormat
        public let outputPath: String
        public let outputFormat: DiskFormat
        public let outputVirtualSize: UInt64
        /// Bytes the output file occupies (its length; holes included).
        public let outputFileBytes: UInt64
        /// Virtual bytes in non-zero 64 KiB blocks.
        public let dataBytes: UInt64
        public let seconds: Double
    }

    /// Converts `input` into `format` at `output`.
    ///
    /// The input is only ever opened read-only; writing over the input is refused; an existing
    /// output needs `overwrite`; the output appears only when complete (temp file + rename),
    /// and nothing is left behind on failure or SIGINT/SIGTERM.
    public static func run(input: String, output: String, format: OutputFormat, overwrite: Bool,
                           options: WriterOptions = WriterOptions(), showProgress: Bool = false) throws -> Result {
        let start = ProgressReporter.now()
        let source = try FileByteSource(path: input)
        try refuseSameFile(input: source, output: output)
        let reader = try DiskImageFile.open(source: source, path: input)
        let out = try AtomicOutputFile(path: output, overwrite: overwrite)
        do {
            let writer = try DiskWriters.make(format, output: out.descriptor, inputVirtualSize: reader.virtualSize, options: options)
            let progress = ProgressReporter(label: "convert", total: reader.virtualSize, enabled: showProgress)
            let stats = try DiskConverter().convert(from: reader, to: writer) { progress.update($0) }
            progress.finish()
            let bytes = try out.descriptor.size()
            try out.commit()
            return Result(inputPath: input, inputFormat: reader.format, outputPath: output,
                          outputFormat: format.diskFormat, outputVirtualSize: writer.outputVirtualSize,
                          outputFileBytes: bytes, dataBytes: stats.dataBytes,
                          seconds: ProgressReporter.now() - start)
        } catch {
            out.discard()
            throw error
        }
    }

    static func refuseSameFile(input: FileByteSource, output: String) throws {
        var st = stat()
        guard stat(output, &st) == 0, let id = input.file.identity() else { return }
        if UInt64(st.st_dev) == id.dev && UInt64(st.st_ino) == id.ino {
            throw CVMError.usage("\(output): is the input file itself; choose another output path (the input is never modified)")
        }
    }
}
