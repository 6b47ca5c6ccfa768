import ArgumentParser
import CVMSupport
import DiskImage
import Foundation

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a disk image between raw, qcow2, VHD, VMDK and GCP tar.gz.",
        discussion: """
        The input format is detected from the content. The output format comes from --format or \
        the output name (.vhd, .vmdk, .tar.gz/.tgz, .raw/.img). Output is written to a temporary \
        file next to the destination and renamed into place only when complete.
        """
    )

    @Argument(help: "Input disk image (raw, qcow2, VHD, stream-optimized VMDK, GCP tar.gz).")
    var input: String

    @Argument(help: "Output file.")
    var output: String

    @Option(help: "Output format: raw, vhd (fixed), vmdk (streamOptimized) or tar.gz (GCP layout).")
    var format: String?

    @Option(help: "Compression level 1–9 for vmdk and tar.gz.")
    var level: Int = 6

    @Flag(help: "Replace the output file if it exists.")
    var force = false

    @Flag(help: "Print one JSON object with the result.")
    var json = false

    func validate() throws {
        if let format, OutputFormat(rawValue: format.lowercased()) == nil {
            throw ValidationError("--format '\(format)' is not known; expected raw, vhd, vmdk or tar.gz")
        }
        guard (1...9).contains(level) else {
            throw ValidationError("--level \(level) is out of range; expected 1–9")
        }
    }

    func run() throws {
        try runReportingErrors {
            let outputFormat: OutputFormat
            if let format {
                outputFormat = OutputFormat(rawValue: format.lowercased())!
            } else if let byName = OutputFormat.fromFileName(output) {
                outputFormat = byName
            } else {
                throw CVMError.usage("\(output): cannot tell the output format from the name; pass --format raw|vhd|vmdk|tar.gz or use a .raw/.img/.vhd/.vmdk/.tar.gz name")
            }
            var options = WriterOptions()
            options.compressionLevel = level
            let result = try DiskConversion.run(input: input, output: output, format: outputFormat,
                                                overwrite: force, options: options,
                                                showProgress: !json && ProgressReporter.stderrIsTerminal)
            if json {
                try printJSON(ConvertJSON(result))
            } else {
                print("\(result.outputPath): \(result.outputFormat.rawValue), \(formatBytes(result.outputVirtualSize)) virtual, "
                      + "\(formatBytes(result.outputFileBytes)) on disk; \(formatBytes(result.dataBytes)) of data "
                      + "from \(result.inputFormat.rawValue) in \(String(format: "%.2f", result.seconds)) s")
            }
        }
    }
}

struct ConvertJSON: Encodable {
    let input: String
    let inputFormat: String
    let output: String
    let outputFormat: String
    let virtualSize: UInt64
    let outputBytes: UInt64
    let dataBytes: UInt64
    let seconds: Double

    init(_ r: DiskConversion.Result) {
        input = r.inputPath
        inputFormat = r.inputFormat.rawValue
        output = r.outputPath
        outputFormat = r.outputFormat.rawValue
        virtualSize = r.outputVirtualSize
        outputBytes = r.outputFileBytes
        dataBytes = r.dataBytes
        seconds = (r.seconds * 1000).rounded() / 1000
    }

    enum CodingKeys: String, CodingKey {
        case input, output, seconds
        case inputFormat = "input_format", outputFormat = "output_format", virtualSize = "virtual_size"
        case outputBytes = "output_bytes", dataBytes = "data_bytes"
    }
}
