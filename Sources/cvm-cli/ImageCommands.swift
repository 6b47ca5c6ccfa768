import ArgumentParser
import CVMSupport
import DiskImage
import Foundation
import ImageBuild

struct ImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "Build the measured-boot base image.",
        subcommands: [ImageBuildCommand.self]
    )
}

struct ImageBuildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build the base image from Debian packages (UKI, dm-verity root, ext4 data with the workload).",
        discussion: """
        GPT: p1 ESP with a Unified Kernel Image, p2 squashfs root, p3 its dm-verity hash tree, \
        p4 ext4 'data' holding /workload. Packages (images/base-packages.txt) are fetched with \
        apt-get download into images/cache/ and unpacked, never installed. Reproducible: the same \
        packages, agent and workload give the same bytes. A manifest goes next to the image.
        """
    )

    @Option(help: "The image to write.")
    var output = "images/base.raw"

    @Option(help: "Virtual disk size (e.g. 2GiB, 512MiB).")
    var size = "2GiB"

    @Option(help: "raw, vhd, vmdk or tar.gz (default: from the output name).")
    var format: String?

    @Option(help: "The cvm-agent executable to put in the root (default: next to cvm-cli).")
    var agent: String?

    @Option(help: "The workload folder written to the data partition.")
    var workload = "workload"

    @Option(help: "Package recipe.")
    var recipe = "images/base-packages.txt"

    @Option(help: "Where Debian packages are downloaded and unpacked.")
    var cache = "images/cache"

    @Flag(help: "Print the manifest as JSON.")
    var json = false

    func validate() throws {
        if let format, OutputFormat(rawValue: format.lowercased()) == nil {
            throw ValidationError("--format '\(format)' is not known; expected raw, vhd, vmdk or tar.gz")
        }
        if parseByteSize(size) == nil {
            throw ValidationError("--size '\(size)': expected a size like 2GiB, 1536MiB or 2147483648")
        }
    }

    func run() throws {
        try runReportingErrors {
            var options = ImageBuilder.Options()
            options.output = output
            options.size = parseByteSize(size)!
            options.format = format.flatMap { OutputFormat(rawValue: $0.lowercased()) }
            options.agentPath = agent
            options.workloadPath = workload
            options.recipePath = recipe
            options.cacheFolder = cache
            let quiet = json
            let start = ProgressReporter.now()
            options.log = {
                if !quiet { FileHandle.standardError.write(Data("image build: [\(String(format: "%5.1f", ProgressReporter.now() - start)) s] \($0)\n".utf8)) }
            }
            let m = try ImageBuilder.run(options)
            if json { try printJSON(m); return }
            print("\(output): \(m.format), \(formatBytes(m.size)), kernel \(m.kernel), built in \(String(format: "%.1f", m.seconds ?? 0)) s")
            for p in m.partitions { print("  \(p.name): \(formatBytes(p.size)) at \(p.offset) (\(p.guid))") }
            print("root hash: \(m.rootHash)")
            print("workload PCR 23: \(m.workloadPCR23)")
            print("manifest: \(output).manifest.json")
        }
    }
}

/// `2GiB`, `512MiB`, `1G`, `4096` → bytes.
func parseByteSize(_ text: String) -> UInt64? {
    let units: [(String, UInt64)] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10),
                                     ("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)]
    for (suffix, factor) in units where text.hasSuffix(suffix) {
        guard let n = UInt64(text.dropLast(suffix.count)) else { return nil }
        let (v, overflow) = n.multipliedReportingOverflow(by: factor)
        return overflow ? nil : v
    }
    return UInt64(text)
}
