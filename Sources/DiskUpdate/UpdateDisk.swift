import CVMSupport
import DiskImage
import EXT4
import Workload
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// `update-disk`: writes a workload folder into the data partition of a disk image, in any
/// format, without root, mounting or external tools.
///
/// The data partition's ext4 is rebuilt: everything outside `/workload` carries over, `/workload`
/// becomes the user's folder (root-owned, fixed times), UUID, label and size are kept. The disk is
/// then re-encoded in one pass with the new partition in place of the old one (other partitions
/// byte-identical), into a temporary file that replaces the original only once complete and
/// re-read. Deterministic: same disk + same workload → same bytes.
public enum UpdateDisk {
    public struct Options: Sendable {
        public var workloadPath: String = "workload"
        /// Write here instead of replacing the input (required for qcow2 and dynamic VHD).
        public var outputPath: String?
        /// Replace `outputPath` when it exists (the CLI's `--force`).
        public var overwriteOutput = false
        /// Output format for `outputPath`; by default the input's format or the output's name.
        public var outputFormat: OutputFormat?
        /// 1-based GPT index overriding the lookup by name/label.
        public var partitionIndex: Int?
        /// Times of the workload's files (SOURCE_DATE_EPOCH or 0).
        public var timestamp: UInt64 = SystemInfo.sourceDateEpoch
        public var writerOptions = WriterOptions()
        public var showProgress = false
        public init() {}
    }

    public struct Result: Sendable {
        public let disk: String
        public let output: String
        public let format: DiskFormat
        public let partition: GPT.Partition
        public let filesystem: FilesystemProbe
        public let measurement: WorkloadMeasurement
        public let warnings: [WorkloadDiagnostic]
        public let usedBlocks: UInt64
        public let blockCount: UInt64
        public let seconds: Double
    }

    public static func run(disk path: String, options: Options) throws -> Result {
        let start = ProgressReporter.now()
        // 1. The workload must be valid before anything is written.
        let folder = try WorkloadFolder(path: options.workloadPath)
        let diagnostics = WorkloadCheck.run(folder: folder)
        let errors = diagnostics.filter { $0.severity == .error }
        if !errors.isEmpty {
            throw CVMError.invalid("\(folder.displayName): \(errors.count) error\(errors.count == 1 ? "" : "s") in the workload, nothing was written; first: \(errors[0]) (run `cvm-cli workload check \(folder.displayName)` for all)")
        }

        // 2. The disk, its format and where the result goes.
        let source = try FileByteSource(path: path)
        var reader = try DiskImageFile.open(source: source, path: path)
        let outputPath = options.outputPath ?? path
        let outputFormat = try chooseOutputFormat(input: reader.format, path: path, options: options)
        let scratchDir = AtomicOutputFile.directory(of: outputPath)

        // Sequential formats (tar.gz) cannot be read at random, and every look at the disk
        // (partition table, file systems, old partition, re-encoding) would decompress it
        // again: unpack it once into a sparse scratch file and read that as raw from here on.
        // While unpacking, a tar.gz notes which compressed chunks can be copied as they are
        // into the new archive (those outside the data partition): they are not compressed again.
        var reusableChunks: GzipReusableChunks?
        if reader.isSequential {
            if outputFormat == .tarGz, let tarGz = reader as? GCPTarGzReader {
                reusableChunks = tarGz.indexReusableChunks()
            }
            let spool = try TemporaryFile.anonymous(in: scratchDir, purpose: "the unpacked disk")
            try copyRange(reader, offset: 0, size: reader.virtualSize, to: spool)
            reusableChunks?.waitForChecks()
            reader = RawReader(source: FileByteSource(file: spool, size: reader.virtualSize))
        }

        // 3. The data partition and its file system.
        let inspection = try DiskInspection.inspect(reader, name: path)
        let partition = try DataPartition.find(in: inspection, name: path, index: options.partitionIndex)
        guard let fs = inspection.partitions?.first(where: { $0.partition.index == partition.index })?.filesystem,
              fs.type == "ext4" || fs.type == "ext2" || fs.type == "ext3" else {
            throw CVMError.invalid("\(path): partition \(partition.index) ('\(partition.name)') holds no ext4 file system; the data partition must be ext4")
        }

        // 4. The old file system, read in place.
        let oldFS = PartitionBlockSource(disk: reader, offset: partition.offset, size: partition.size)

        // 5. The new file system. Raw and fixed-VHD outputs hold the virtual disk's bytes at
        // their own offsets, so it is formatted straight into the output (the partition's range
        // is left as a hole by the writer); other formats get it from a sparse scratch file.
        func rebuild(into output: EXT4Output) throws -> EXT4FormatSummary {
            do {
                return try EXT4Rebuild.rebuild(
                    source: oldFS, sourceName: "\(path) partition \(partition.index)",
                    output: output, outputName: "\(path) partition \(partition.index)",
                    replacing: [Array("workload".utf8)], withHostFolder: folder.root.path,
                    time: EXT4Timestamp(seconds: Int64(clamping: options.timestamp)))
            } catch let error as CVMError where error.kind == .noSpace {
                // The formatter names only the partition; the user needs both sizes to act.
                let workloadBytes = folder.entries.reduce(UInt64(0)) {
                    if case .file(let size) = $1.kind { return $0 &+ size } else { return $0 }
                }
                throw CVMError.invalid("\(path): the workload \(folder.displayName)/ (\(formatBytes(workloadBytes)) in \(folder.entries.count) entries) and the files kept outside workload/ do not fit in data partition \(partition.index) ('\(partition.name)', \(formatBytes(partition.size))); nothing was written (\(error.message))")
            }
        }
        let partitionRange = partition.offset..<(partition.offset + partition.size)
        let direct = outputFormat == .raw || outputFormat == .vhd
        // raw/VHD are bound by disk I/O: hashing the workload (CPU) overlaps it. The others
        // are bound by CPU, and a thread's own heap would only add to the peak memory.
        let measuring = direct ? BackgroundWork { try WorkloadMeasurement.measure(folder) }
                               : BackgroundWork.finished(try WorkloadMeasurement.measure(folder))
        // Every way out waits for it: a thread still hashing while the process exits races
        // OpenSSL's exit-time cleanup (seen as a crash after the "does not fit" error).
        defer { measuring.join() }

        // 6. Re-encode the disk with the new partition in place, atomically.
        // Replacing the input is the point of update-disk; any other existing file needs --force.
        let out = try AtomicOutputFile(path: outputPath, overwrite: options.outputPath == nil || options.overwriteOutput)
        let summary: EXT4FormatSummary
        let measurement: WorkloadMeasurement
        // The output goes to disk while it is produced: the fsync in commit() then waits for
        // the last bytes only (raw/VHD are bound by this I/O).
        let writeback = BackgroundWriteback(file: out.descriptor)
        defer { writeback.stop() }
        // Encoding (writer buffers and all) ends before the output is re-read: the peak
        // memory is one of the two, not both.
        func encodeWithNewPartition() throws -> EXT4FormatSummary {
            let newPartition: DiskReader
            var directSummary: EXT4FormatSummary?
            if direct {
                newPartition = ZeroDiskReader(size: partition.size)
            } else {
                let newFSFile = try TemporaryFile.anonymous(in: scratchDir, purpose: "the new data partition")
                try newFSFile.truncate(to: partition.size)
                directSummary = try rebuild(into: EXT4FileRange(file: newFSFile, offset: 0, size: partition.size))
                newPartition = RawReader(source: FileByteSource(file: newFSFile, size: partition.size))
            }
            let overlay = try OverlayDiskReader(base: reader, replacing: partitionRange, with: newPartition)
            let writer = try DiskWriters.make(outputFormat, output: out.descriptor, inputVirtualSize: reader.virtualSize,
                                              options: options.writerOptions)
            if let reusableChunks, let tarGz = writer as? GCPTarGzWriter {
                try tarGz.reuseCompressedChunks(reusableChunks, except: partitionRange)
            }
            let progress = ProgressReporter(label: "update-disk", total: reader.virtualSize, enabled: options.showProgress)
            let encode = { try DiskConverter().convert(from: overlay, to: writer) { progress.update($0) } }
            if direct {
                // The copy of the rest of the disk and the new file system write disjoint
                // ranges of the output: both at once, on both cores.
                let copying = BackgroundWork {
                    _ = try encode()
                    // The input is replaced at the end, and dropping its cached pages then
                    // (on the last close) takes a while: drop those already read now, here,
                    // while the file system is still being built.
                    if options.outputPath == nil { dropCachedPages(of: path, except: partitionRange) }
                }
                let built = Swift.Result { try rebuild(into: EXT4FileRange(file: out.descriptor, offset: partition.offset, size: partition.size)) }
                try copying.wait()
                directSummary = try built.get()
            } else {
                try encode()
            }
            progress.finish()
            return directSummary!
        }
        do {
            summary = try encodeWithNewPartition()
            writeback.stop()
            try verify(temporary: out.temporaryPath, display: outputPath, partition: partition, filesystem: fs)
            measurement = try measuring.wait()
            try out.commit()
        } catch {
            out.discard()
            throw error
        }
        return Result(disk: path, output: outputPath, format: outputFormat.diskFormat, partition: partition,
                      filesystem: fs, measurement: measurement,
                      warnings: diagnostics.filter { $0.severity == .warning },
                      usedBlocks: summary.usedBlocks, blockCount: summary.blockCount,
                      seconds: ProgressReporter.now() - start)
    }

    static func chooseOutputFormat(input: DiskFormat, path: String, options: Options) throws -> OutputFormat {
        if let f = options.outputFormat { return f }
        if let out = options.outputPath {
            if let byName = OutputFormat.fromFileName(out) { return byName }
        }
        switch input {
        case .raw: return .raw
        case .vhdFixed: return .vhd
        case .vmdkStream: return .vmdk
        case .gcpTarGz: return .tarGz
        case .qcow2, .vhdDynamic:
            throw CVMError.usage("\(path): \(input.rawValue) cannot be written back; pass --output PATH with a .raw, .vhd, .vmdk or .tar.gz name (or --format)")
        }
    }

    /// Copies `size` bytes of the virtual disk from `offset` into `file` (zeros stay holes),
    /// reading in ascending order as sequential readers need.
    static func copyRange(_ reader: DiskReader, offset: UInt64, size: UInt64, to file: FileDescriptor) throws {
        try file.truncate(to: size)
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        var pos: UInt64 = 0
        while pos < size {
            let n = Int(min(UInt64(chunk), size - pos))
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
            try reader.read(into: slice, at: offset + pos)
            if !isAllZero(UnsafeRawBufferPointer(slice)) {
                try file.write(UnsafeRawBufferPointer(slice), at: pos)
            }
            pos += UInt64(n)
        }
    }

    /// Asks the kernel to forget the clean cached pages of `path` outside `except` (they are
    /// not read again). Only a hint: failures change nothing.
    static func dropCachedPages(of path: String, except: Range<UInt64>) {
        guard let file = try? FileDescriptor.openForReading(path), let size = try? file.size() else { return }
        for range in [0..<min(except.lowerBound, size), min(except.upperBound, size)..<size] where !range.isEmpty {
            _ = posix_fadvise(file.fd, off_t(range.lowerBound), off_t(range.count), POSIX_FADV_DONTNEED)
        }
    }

    /// Re-reads the finished temporary output: it must parse in its format, keep the GPT and
    /// hold the data partition's ext4 with the same UUID and label.
    static func verify(temporary: String, display: String, partition: GPT.Partition, filesystem: FilesystemProbe) throws {
        let check = try DiskImageFile.open(temporary)
        guard let probe = try FilesystemProbe.probe(check, partitionOffset: partition.offset, partitionSize: partition.size),
              probe == filesystem else {
            throw CVMError.io("\(display): the written disk does not read back with the data partition's file system; the original is unchanged")
        }
    }
}

/// Work on a global-queue thread whose result (or error) is collected later.
final class BackgroundWork<T>: @unchecked Sendable {
    private var result: Result<T, Error>?
    private let done = DispatchSemaphore(value: 0)

    init(_ work: @escaping () throws -> T) {
        nonisolated(unsafe) let work = work
        DispatchQueue.global(qos: .userInitiated).async { [self] in
            result = Result { try work() }
            done.signal()
        }
    }

    private init(result: Result<T, Error>) {
        self.result = result
        done.signal()
    }

    /// Already done: `value` (no thread).
    static func finished(_ value: T) -> BackgroundWork { BackgroundWork(result: .success(value)) }

    /// Waits for the work; its value, or rethrows its error.
    func wait() throws -> T {
        join()
        return try result!.get()
    }

    /// Waits for the work to end, whatever its result; any number of times.
    func join() {
        done.wait()
        done.signal()
    }
}
