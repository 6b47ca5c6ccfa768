import CVMCrypto
import CVMSupport
import DiskImage
import EXT4
import Foundation
import Workload

/// `image build`: the measured-boot base image, from Debian packages, without root.
///
/// GPT (Discoverable Partitions types): p1 ESP (FAT32) with a UKI at EFI/BOOT/BOOTX64.EFI,
/// p2 root (squashfs), p3 its dm-verity hash tree (veritysetup superblock kept), p4 ext4
/// `data` holding /workload. Reproducible: same packages, agent and workload → same bytes.
public enum ImageBuilder {
    public struct Options: Sendable {
        public var output = "images/base.raw"
        public var size: UInt64 = 2 << 30
        public var format: OutputFormat?
        /// cvm-agent executable placed in the root; nil: next to the running executable.
        public var agentPath: String?
        public var workloadPath = "workload"
        public var recipePath = "images/base-packages.txt"
        public var cacheFolder = "images/cache"
        public var overwrite = true
        /// Every time in the image (SOURCE_DATE_EPOCH or 0).
        public var timestamp: UInt64 = SystemInfo.sourceDateEpoch
        public var log: @Sendable (String) -> Void = { _ in }
        public init() {}
    }

    /// GPT type GUIDs (Discoverable Partitions Specification, x86-64).
    public enum PartitionType {
        public static let esp = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        public static let rootX86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
        public static let rootX86_64Verity = "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5"
        public static let linuxData = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    }

    static let mib: UInt64 = 1 << 20
    static let espSize: UInt64 = 64 << 20

    struct Tools {
        let mksquashfs, veritysetup, objcopy, mkfsFat, mmd, mcopy: ExternalTool
        static func find() throws -> Tools {
            let p = "image build"
            return Tools(mksquashfs: try .find("mksquashfs", package: "squashfs-tools", purpose: p),
                         veritysetup: try .find("veritysetup", package: "cryptsetup-bin", purpose: p),
                         objcopy: try .find("objcopy", package: "binutils", purpose: p),
                         mkfsFat: try .find("mkfs.fat", package: "dosfstools", purpose: p),
                         mmd: try .find("mmd", package: "mtools", purpose: p),
                         mcopy: try .find("mcopy", package: "mtools", purpose: p))
        }
    }

    public static func run(_ options: Options) throws -> ImageManifest {
        let start = ProgressReporter.now()
        let tools = try Tools.find()
        let format = options.format ?? OutputFormat.fromFileName(options.output) ?? .raw
        guard options.size % mib == 0, options.size >= 256 * mib else {
            throw CVMError.usage("--size \(options.size): expected a whole number of MiB, at least 256 MiB")
        }
        let agent = try locateAgent(options.agentPath)
        let recipeText: String
        do { recipeText = try String(contentsOfFile: options.recipePath, encoding: .utf8) } catch {
            throw CVMError.usage("\(options.recipePath): cannot read the package recipe (run from the cvm-cli source folder, or pass --recipe)")
        }
        let recipe = try RecipeLine.parse(recipeText, name: options.recipePath)

        // The workload must be valid before anything is built.
        let folder = try WorkloadFolder(path: options.workloadPath)
        let errors = WorkloadCheck.run(folder: folder).filter { $0.severity == .error }
        if !errors.isEmpty {
            throw CVMError.invalid("\(folder.displayName): \(errors.count) error(s) in the workload; first: \(errors[0]) (run `cvm-cli workload check \(folder.displayName)`)")
        }
        let measurement = try WorkloadMeasurement.measure(folder)

        // 1. Packages.
        let cache = try DebianPackageCache(folder: options.cacheFolder)
        try cache.loadCandidates(recipe.map(\.package))
        var packages: [String: UnpackedPackage] = [:]
        func package(_ name: String) throws -> UnpackedPackage {
            if let p = packages[name] { return p }
            options.log("package \(name)")
            let p = try cache.fetch(name)
            packages[name] = p
            return p
        }
        let kernelName = try cache.resolveKernel(recipe.first { $0.role == .kernel }!.package)
        try cache.loadCandidates([kernelName])
        let kernelPkg = try package(kernelName)
        let stubPkg = try package(recipe.first { $0.role == .stub }!.package)
        let busyboxPkg = try package(recipe.first { $0.role == .busybox }!.package)
        let initrdPkgs = try recipe.filter { $0.role == .initrd }.map { try package($0.package) }
        let rootPkgs = try recipe.filter { $0.role == .root }.map { try package($0.package) }

        let outputDir = AtomicOutputFile.directory(of: options.output)
        let work = outputDir + "/." + (options.output as NSString).lastPathComponent + ".build"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }

        let busybox = busyboxPkg.root + "/bin/busybox"
        let bbTool = ExternalTool(name: "busybox", package: "busybox-static", path: busybox)
        let applets = try bbTool.run(["--list"]).split(separator: "\n").map(String.init).filter { !$0.isEmpty }
        let time32 = UInt32(clamping: options.timestamp)

        // 2. Root file system: busybox, the agent and its libraries, /sbin/init.
        options.log("root file system")
        let rootTree = try StagingTree(root: work + "/root")
        for d in ["dev", "proc", "sys", "run", "tmp", "data", "etc", "usr/bin", "sbin"] { try rootTree.directory(d) }
        try rootTree.copy(from: busybox, to: "bin/busybox", mode: 0o755)
        for a in applets where a != "busybox" { try rootTree.symlink("bin/" + a, to: "busybox") }
        for p in rootPkgs { try rootTree.copySharedLibraries(of: p) }
        try rootTree.copy(from: agent, to: "usr/bin/cvm-agent", mode: 0o755)
        // Symbols and debug info are nothing the guest needs.
        try tools.objcopy.run(["--strip-all", rootTree.path("usr/bin/cvm-agent")])
        try rootTree.file("sbin/init", contents: BootScripts.rootInit + "\n", mode: 0o755)
        // The firewall's kernel modules, loaded by /sbin/init in this order.
        let kernelVersion = try kernelRelease(kernelPkg)
        let modulesDir = kernelPkg.root + "/lib/modules/" + kernelVersion
        var firewallOrder = ""
        for m in try KernelModules.loadOrder(modulesDir: modulesDir, wanted: KernelModules.firewall, name: kernelPkg.name) {
            let base = (m as NSString).lastPathComponent
            try rootTree.copy(from: modulesDir + "/" + m, to: BootScripts.firewallModules + "/" + base, mode: 0o644)
            firewallOrder += base + "\n"
        }
        try rootTree.file(BootScripts.firewallModules + "/load-order", contents: firewallOrder)
        let osRelease = "NAME=\"cvm-cli base image\"\nID=cvm-base\nVERSION_ID=1\nPRETTY_NAME=\"cvm-cli base image (Debian 12 kernel \(kernelPkg.version))\"\n"
        try rootTree.file("etc/os-release", contents: osRelease)
        let rootImage = work + "/root.squashfs"
        // mksquashfs refuses SOURCE_DATE_EPOCH together with -all-time: give the time explicitly.
        var env = ProcessInfo.processInfo.environment
        env["SOURCE_DATE_EPOCH"] = nil
        try tools.mksquashfs.run([rootTree.root, rootImage, "-noappend", "-all-root", "-no-xattrs", "-comp", "zstd", "-Xcompression-level", "3",
                                  "-mkfs-time", String(time32), "-all-time", String(time32), "-quiet", "-no-progress"],
                                 environment: env)
        let rootBytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: rootImage)))
        guard rootBytes.count % 4096 == 0 else {
            throw CVMError.io("\(rootImage): mksquashfs did not pad the image to 4 KiB (\(rootBytes.count) bytes)")
        }

        // 3. dm-verity hash tree, salt and UUID derived from the root's content.
        options.log("dm-verity")
        let rootDigest = SHA256.hash(rootBytes)
        let salt = hexString(SHA256.hash(Array("cvm verity salt".utf8) + rootDigest))
        let verityUUID = guidText(guidFromDigest(SHA256.hash(Array("cvm verity uuid".utf8) + rootDigest))).lowercased()
        let verityImage = work + "/root.verity"
        let vOut = try tools.veritysetup.run(["format", rootImage, verityImage, "--salt", salt, "--uuid", verityUUID,
                                              "--data-block-size", "4096", "--hash-block-size", "4096", "--hash", "sha256"])
        guard let rootHash = vOut.split(separator: "\n").first(where: { $0.hasPrefix("Root hash:") })?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces), rootHash.count == 64 else {
            throw CVMError.io("veritysetup format printed no root hash")
        }
        let verityBytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: verityImage)))
        let dataBlocks = rootBytes.count / 4096

        // 4. Initramfs: busybox, dmsetup and its libraries, the modules, /init.
        options.log("initramfs")
        let order = try KernelModules.loadOrder(modulesDir: modulesDir, wanted: KernelModules.wanted, name: kernelPkg.name)
        let initTree = try StagingTree(root: work + "/initramfs")
        for d in ["dev", "proc", "sys", "sysroot", "run", "tmp"] { try initTree.directory(d) }
        try initTree.copy(from: busybox, to: "bin/busybox", mode: 0o755)
        for a in applets where a != "busybox" { try initTree.symlink("bin/" + a, to: "busybox") }
        for p in initrdPkgs {
            try initTree.copyPrograms(of: p)
            try initTree.copySharedLibraries(of: p)
        }
        var loadOrder = ""
        for m in order {
            let base = (m as NSString).lastPathComponent
            try initTree.copy(from: modulesDir + "/" + m, to: "lib/modules/" + base, mode: 0o644)
            loadOrder += base + "\n"
        }
        try initTree.file("lib/modules/load-order", contents: loadOrder)
        try initTree.file("init", contents: BootScripts.initramfsInit + "\n", mode: 0o755)
        try initTree.file(BootScripts.partitionFinderPath, contents: BootScripts.partitionFinder, mode: 0o644)
        let cpio = try CPIOWriter.archive(tree: initTree, extra: [
            CPIOWriter.Node(path: "dev/console", mode: 0o020600, rdevMajor: 5, rdevMinor: 1),
        ], mtime: time32)
        let initrdPath = work + "/initramfs.cpio"
        try Data(cpio).write(to: URL(fileURLWithPath: initrdPath))

        // 5. UKI.
        options.log("unified kernel image")
        let cmdline = "console=ttyS0,115200 panic=-1 roothash=\(rootHash) cvm.verity_salt=\(salt) cvm.verity_blocks=\(dataBlocks)"
        try Data((cmdline + "\n").utf8).write(to: URL(fileURLWithPath: work + "/cmdline"))
        try Data(osRelease.utf8).write(to: URL(fileURLWithPath: work + "/os-release"))
        let ukiPath = work + "/uki.efi"
        try UKI.build(objcopy: tools.objcopy, stub: stubPkg.root + "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
                      osRelease: work + "/os-release", cmdline: work + "/cmdline",
                      kernel: kernelPkg.root + "/boot/vmlinuz-" + kernelVersion, initrd: initrdPath,
                      output: ukiPath, timestamp: time32)
        let ukiBytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: ukiPath)))
        let ukiDigest = SHA256.hash(ukiBytes)

        // 6. ESP: FAT32 with a volume id from the UKI, files through mtools (times fixed).
        options.log("ESP")
        let espPath = work + "/esp.img"
        let volumeID = hexString(Array(ukiDigest.prefix(4)))
        try tools.mkfsFat.run(["-F", "32", "-S", "512", "-s", "1", "-i", volumeID, "-n", "ESP", "--invariant",
                               "-C", espPath, String(espSize / 1024)])
        var mtoolsEnv = ProcessInfo.processInfo.environment
        mtoolsEnv["SOURCE_DATE_EPOCH"] = String(time32)
        mtoolsEnv["MTOOLS_SKIP_CHECK"] = "1"
        try tools.mmd.run(["-i", espPath, "::EFI", "::EFI/BOOT"], environment: mtoolsEnv)
        try tools.mcopy.run(["-i", espPath, ukiPath, "::EFI/BOOT/BOOTX64.EFI"], environment: mtoolsEnv)
        let espBytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: espPath)))

        // 7. Layout (1 MiB aligned), data partition's ext4 UUID from the workload.
        func roundUp(_ v: UInt64) -> UInt64 { (v + mib - 1) / mib * mib }
        let espStart = mib
        let rootStart = espStart + espSize
        let verityStart = rootStart + roundUp(UInt64(rootBytes.count))
        let dataStart = verityStart + roundUp(UInt64(verityBytes.count))
        let provisional = GPTLayout(diskGUID: [UInt8](repeating: 0, count: 16), diskSize: options.size, entries: [])
        let dataEnd = (provisional.lastUsableLBA + 1) * GPT.sectorSize / mib * mib
        guard dataStart + 64 * mib <= dataEnd else {
            throw CVMError.usage("--size \(formatBytes(options.size)) is too small: ESP, root and verity take \(formatBytes(dataStart)); leave at least 64 MiB for data")
        }
        let dataSize = dataEnd - dataStart
        let dataUUID = guidFromDigest(SHA256.hash(Array("cvm data \(measurement.pcr23) \(dataSize) \(options.timestamp)".utf8)))
        let rootHashBytes = decodeHex(rootHash) ?? []
        // Discoverable Partitions: root UUID from the root hash's first half, verity from its second.
        let rootGUID = guidFromDigest(Array(rootHashBytes.prefix(16)))
        let verityGUID = guidFromDigest(Array(rootHashBytes.suffix(16)))
        let espGUID = guidFromDigest(SHA256.hash(Array("cvm esp".utf8) + SHA256.hash(espBytes)))
        let dataGUID = guidFromDigest(SHA256.hash(Array("cvm data partition".utf8) + dataUUID))
        let diskGUID = guidFromDigest(SHA256.hash(espGUID + rootGUID + verityGUID + dataGUID))
        let s = GPT.sectorSize
        let layout = GPTLayout(diskGUID: diskGUID, diskSize: options.size, entries: [
            .init(name: "esp", typeGUID: PartitionType.esp, uniqueGUID: espGUID,
                  firstLBA: espStart / s, lastLBA: (espStart + espSize) / s - 1),
            .init(name: BootScripts.rootName, typeGUID: PartitionType.rootX86_64, uniqueGUID: rootGUID,
                  firstLBA: rootStart / s, lastLBA: verityStart / s - 1, attributes: 1 << 60),   // read-only
            .init(name: BootScripts.verityName, typeGUID: PartitionType.rootX86_64Verity, uniqueGUID: verityGUID,
                  firstLBA: verityStart / s, lastLBA: dataStart / s - 1, attributes: 1 << 60),
            .init(name: BootScripts.dataName, typeGUID: PartitionType.linuxData, uniqueGUID: dataGUID,
                  firstLBA: dataStart / s, lastLBA: dataEnd / s - 1),
        ])

        // 8. The raw disk (sparse), then the requested format.
        options.log("disk")
        let rawPath = format == .raw ? options.output : work + "/disk.raw"
        let out = try AtomicOutputFile(path: rawPath, overwrite: options.overwrite || format != .raw)
        do {
            try out.descriptor.truncate(to: options.size)
            try out.descriptor.write(espBytes, at: espStart)
            try out.descriptor.write(rootBytes, at: rootStart)
            try out.descriptor.write(verityBytes, at: verityStart)
            for (offset, bytes) in try layout.encoded() { try out.descriptor.write(bytes, at: offset) }
            let t = EXT4Timestamp(seconds: Int64(clamping: options.timestamp))
            let entries = try EXT4HostTree.entries(folder: folder.root.path, destination: [Array("workload".utf8)], time: t)
            let ext4 = try EXT4Formatter(options: EXT4FormatOptions(size: dataSize, uuid: dataUUID, label: Array("data".utf8),
                                                                    timestamp: t, name: "\(options.output) partition 4 (data)"))
            try ext4.format(entries, to: EXT4FileRange(file: out.descriptor, offset: dataStart, size: dataSize))
            try out.commit()
        } catch {
            out.discard()
            throw error
        }
        if format != .raw {
            _ = try DiskConversion.run(input: rawPath, output: options.output, format: format, overwrite: options.overwrite)
        }

        let manifest = ImageManifest(
            image: (options.output as NSString).lastPathComponent, format: format.rawValue, size: options.size,
            kernel: kernelVersion, rootHash: rootHash, veritySalt: salt, verityUUID: verityUUID,
            cmdline: cmdline, ukiSHA256: hexString(ukiDigest), rootSHA256: hexString(rootDigest),
            veritySHA256: hexString(SHA256.hash(verityBytes)), agentSHA256: hexString(try SHA256.hash(fileAt: agent)),
            workloadPCR23: measurement.pcr23,
            partitions: layout.entries.map { .init(name: $0.name, type: $0.typeGUID, guid: guidText($0.uniqueGUID),
                                                   offset: $0.firstLBA * s, size: ($0.lastLBA - $0.firstLBA + 1) * s) },
            packages: packages.values.sorted { $0.name < $1.name },
            seconds: ProgressReporter.now() - start)
        let manifestPath = options.output + ".manifest.json"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        var stable = manifest
        stable.seconds = nil
        try (encoder.encode(stable) + Data("\n".utf8)).write(to: URL(fileURLWithPath: manifestPath))
        return manifest
    }

    /// `--agent PATH`, else `cvm-agent` next to the running executable (as `swift build` puts it).
    static func locateAgent(_ path: String?) throws -> String {
        if let path {
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw CVMError.usage("--agent \(path): not an executable file; expected the cvm-agent built by `swift build --product cvm-agent`")
            }
            return path
        }
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let candidate = me.deletingLastPathComponent().appendingPathComponent("cvm-agent").path
        guard FileManager.default.isExecutableFile(atPath: candidate) else {
            throw CVMError.usage("no cvm-agent next to \(me.path); build it (`swift build -c release --product cvm-agent`) or pass --agent PATH")
        }
        return candidate
    }

    static func kernelRelease(_ kernel: UnpackedPackage) throws -> String {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: kernel.root + "/lib/modules")) ?? []
        guard names.count == 1, let v = names.first,
              FileManager.default.fileExists(atPath: kernel.root + "/boot/vmlinuz-" + v) else {
            throw CVMError.invalid("\(kernel.name) \(kernel.version): expected one lib/modules/<version> and boot/vmlinuz-<version>")
        }
        return v
    }
}

/// What went into an image, written next to it as `<image>.manifest.json`.
public struct ImageManifest: Codable, Sendable {
    public struct Partition: Codable, Sendable {
        public let name: String, type: String, guid: String
        public let offset: UInt64, size: UInt64
    }
    public let image: String
    public let format: String
    public let size: UInt64
    public let kernel: String
    public let rootHash: String
    public let veritySalt: String
    public let verityUUID: String
    public let cmdline: String
    public let ukiSHA256: String
    public let rootSHA256: String
    public let veritySHA256: String
    public let agentSHA256: String
    public let workloadPCR23: String
    public let partitions: [Partition]
    public let packages: [UnpackedPackage]
    /// Build time (printed, not written: the manifest is as reproducible as the image).
    public var seconds: Double?

    enum CodingKeys: String, CodingKey {
        case image, format, size, kernel, cmdline, partitions, packages, seconds
        case rootHash = "root_hash", veritySalt = "verity_salt", verityUUID = "verity_uuid"
        case ukiSHA256 = "uki_sha256", rootSHA256 = "root_sha256", veritySHA256 = "verity_sha256"
        case agentSHA256 = "agent_sha256", workloadPCR23 = "workload_pcr23"
    }
}
