// swift-tools-version:6.0
import PackageDescription

// System libraries come from Debian's -dev packages (apt names in `providers`).
// Each library module links only the system libraries it uses.
// Static Foundation for cvm-agent: its archives reference each other, so they are linked as one group.
let staticFoundationGroup = ["Foundation", "CoreFoundation", "_FoundationICU", "FoundationEssentials",
                             "FoundationInternationalization", "_FoundationCShims", "_FoundationCollections",
                             "swiftSynchronization", "dispatch", "BlocksRuntime"]
    .flatMap { ["-Xlinker", "-l\($0)"] }
    .reduce(["-Xlinker", "--start-group"]) { $0 + [$1] } + ["-Xlinker", "--end-group"]

let package = Package(
    name: "cvm-cli",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "cvm-cli", targets: ["cvm-cli"]),
        .executable(name: "cvm-fuzz", targets: ["cvm-fuzz"]),
        .executable(name: "cvm-agent", targets: ["cvm-agent"]),
        .library(name: "DiskImage", targets: ["DiskImage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // MARK: system libraries
        .systemLibrary(name: "CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"]), .brew(["zlib"])]),
        .systemLibrary(name: "CDeflate", pkgConfig: "libdeflate",
                       providers: [.apt(["libdeflate-dev"]), .brew(["libdeflate"])]),
        .systemLibrary(name: "CQcow", pkgConfig: "libqcow",
                       providers: [.apt(["libqcow-dev"]), .brew(["libqcow"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl",
                       providers: [.apt(["libcurl4-openssl-dev"]), .brew(["curl"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"]), .brew(["openssl@3"])]),
        .systemLibrary(name: "CLZMA", pkgConfig: "liblzma",
                       providers: [.apt(["liblzma-dev"]), .brew(["xz"])]),
        .systemLibrary(name: "CXML2", pkgConfig: "libxml-2.0",
                       providers: [.apt(["libxml2-dev"]), .brew(["libxml2"])]),

        // MARK: library modules, one concern each
        // Errors, file I/O, atomic output, progress, signals: shared by every module.
        .target(name: "CVMSupport"),
        // Hashes (and later signatures) through the system OpenSSL.
        .target(name: "CVMCrypto", dependencies: ["CVMSupport", "COpenSSL"]),
        // The workload folder: validation (`workload check`) and its measurement (PCR 23).
        .target(name: "Workload", dependencies: ["CVMSupport", "CVMCrypto", "Yams"]),
        // Virtual-disk formats (raw, qcow2, VHD, VMDK, GCP tar.gz), GPT, conversion.
        .target(name: "DiskImage", dependencies: ["CVMSupport", "CZlib", "CDeflate", "CQcow"]),
        // ext4: read a file system, format a new one from a tree of entries (update-disk).
        .target(name: "EXT4", dependencies: ["CVMSupport"]),

        // Cloud request signers (SigV4, SharedKey, OAuth assertions) and credential discovery.
        .target(name: "CloudAuth", dependencies: ["CVMSupport", "CVMCrypto"]),

        // update-disk: rebuilds a disk's data partition with a new workload, in any format.
        .target(name: "DiskUpdate", dependencies: ["CVMSupport", "DiskImage", "EXT4", "Workload"]),

        // The base image: Debian packages, UKI, squashfs root with dm-verity, ext4 data (`image build`).
        .target(name: "ImageBuild", dependencies: ["CVMSupport", "CVMCrypto", "DiskImage", "EXT4", "Workload"]),
        // deploy-local: QEMU + OVMF + swtpm around a disk image, until the agent answers.
        .target(name: "LocalVM", dependencies: ["CVMSupport", "DiskImage"]),
        // golden predict: the PCRs a disk shows under deploy-local (UKI Authenticode, systemd-stub
        // sections, GPT, OVMF variables), read from the disk's ESP (FAT) and the firmware files.
        .target(name: "BootPrediction", dependencies: ["CVMSupport", "CVMCrypto", "DiskImage", "CLZMA"]),
        // TPM 2.0 commands marshalled by hand (PCR extend/read) for the in-guest agent.
        .target(name: "TPM2", dependencies: ["CVMSupport", "CVMCrypto"]),
        // The agent's firewall: nf_tables rules built as netlink messages and sent over NETLINK_NETFILTER.
        .target(name: "Netfilter", dependencies: ["CVMSupport"]),
        // A workload folder as tar.gz (agent's POST /update-workload): strict reader.
        .target(name: "WorkloadArchive", dependencies: ["CVMSupport", "CZlib", "Workload"]),

        // HTTP over libcurl for the cloud providers: retries, throttling, redaction. Knows no cloud.
        .target(name: "Transport", dependencies: [
            "CVMSupport", "CCurl", "COpenSSL", .product(name: "Logging", package: "swift-log"),
        ]),

        // AWS data planes: EBS direct snapshots and S3 multipart uploads of a disk.
        .target(name: "AWSProvider", dependencies: [
            "CVMSupport", "CVMCrypto", "CloudAuth", "Transport", "DiskImage", .product(name: "Logging", package: "swift-log"),
            "CXML2", "CZlib", "CVMMatrix", "Deploy",
        ]),

        // Golden measurements: signing and verifying them (canonical JSON from CVMSupport).
        .target(name: "Golden", dependencies: ["CVMSupport", "CVMCrypto"]),
        // Verifying attestation collaterals (TPM quote, event logs) against a golden measurement.
        .target(name: "Attestation", dependencies: ["CVMSupport", "CVMCrypto", "TPM2", "Golden"]),
        // The confidential-VM matrix (providers/*.json, built in): vm_type × region × TEE checks.
        .target(name: "CVMMatrix", dependencies: ["CVMSupport"]),
        // The deploy pipeline every cloud follows: roles, artifacts, plans, ports, Secure Boot certs.
        .target(name: "Deploy", dependencies: ["CVMSupport", "CVMMatrix"]),

        // GCP: GCS resumable uploads of a disk as a GCE image archive; Compute Engine deploy-gcp.
        .target(name: "GCPProvider", dependencies: [
            "CVMSupport", "CVMCrypto", "CloudAuth", "Transport", "DiskImage", .product(name: "Logging", package: "swift-log"),
            "CVMMatrix", "Deploy",
        ]),

        // Azure: page blob upload of a disk as a fixed VHD (SharedKey); ARM calls later.
        .target(name: "AzureProvider", dependencies: [
            "CVMSupport", "CVMCrypto", "CloudAuth", "Transport", "DiskImage", .product(name: "Logging", package: "swift-log"),
            "CVMMatrix", "Deploy",
        ]),

        // The in-guest agent's client: its address from the deploy artifacts, TLS pinned (TOFU).
        .target(name: "AgentClient", dependencies: [
            "CVMSupport", "Transport", .product(name: "Logging", package: "swift-log"),
            "CVMCrypto", "Workload", "WorkloadArchive",
        ]),

        // The in-guest agent's container side: the image's engine + compose run the workload.
        .target(name: "WorkloadRuntime", dependencies: ["CVMSupport", "Workload"]),

        // MARK: executables
        .executableTarget(name: "cvm-cli", dependencies: [
            "DiskImage", "CVMSupport", "Workload", "DiskUpdate", "AWSProvider", "Golden", "CVMCrypto", "CVMMatrix", "Deploy", "GCPProvider", "AzureProvider", "ImageBuild", "LocalVM", "AgentClient", "Attestation", "BootPrediction",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The in-guest agent: measures the workload into PCR 23, serves the golden measurement.
        // Static Swift runtime so it runs in the image's root with only glibc, libstdc++ and OpenSSL.
        .executableTarget(name: "cvm-agent", dependencies: ["CVMSupport", "CVMCrypto", "Workload", "WorkloadArchive", "TPM2", "COpenSSL", "Attestation", "Netfilter", "WorkloadRuntime"],
                          linkerSettings: [.unsafeFlags(["-static-stdlib"] + staticFoundationGroup)]),
        // Fuzz harness for the format parsers (see docs/fuzzing.md).
        .executableTarget(name: "cvm-fuzz", dependencies: ["DiskImage", "EXT4"]),

        // MARK: tests
        // Deterministic test data shared by the test targets.
        .target(name: "CVMTestData", path: "Tests/CVMTestData", exclude: ["Scripts"]),
        .testTarget(name: "DiskImageTests", dependencies: ["CVMTestData", "DiskImage", "CVMSupport"]),
        .testTarget(name: "WorkloadTests", dependencies: ["Workload", "CVMCrypto", "CVMSupport"]),
        .testTarget(name: "WorkloadRuntimeTests", dependencies: ["WorkloadRuntime", "AgentClient", "Workload", "WorkloadArchive", "CVMTestData", "CVMCrypto", "CVMSupport"]),
        .testTarget(name: "DiskUpdateTests", dependencies: ["CVMTestData", "DiskUpdate", "DiskImage", "EXT4", "Workload", "CVMSupport"]),
        .testTarget(name: "CLITests", dependencies: ["CVMTestData", "DiskImage", "CVMSupport"]),
        .testTarget(name: "ImageBuildTests", dependencies: ["ImageBuild", "LocalVM", "BootPrediction", "DiskUpdate", "DiskImage", "TPM2", "Workload", "WorkloadArchive", "CVMCrypto", "CVMSupport", "Attestation", "Golden", "CVMTestData"]),
        .testTarget(name: "BootPredictionTests", dependencies: ["BootPrediction", "DiskImage", "CVMCrypto", "CVMSupport"]),
        .testTarget(name: "NetfilterTests", dependencies: ["Netfilter", "CVMSupport"]),
        .testTarget(name: "EXT4Tests", dependencies: ["EXT4", "CVMSupport"]),
        .testTarget(name: "CloudAuthTests", dependencies: ["CloudAuth", "CVMCrypto", "CVMSupport"],
                    exclude: ["Fixtures", "Scripts"]),
        .testTarget(name: "TransportTests", dependencies: [
            "Transport", "CVMSupport", .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "CVMSupportTests", dependencies: ["CVMSupport"]),
        .testTarget(name: "GoldenTests", dependencies: ["CVMTestData", "Golden", "CVMCrypto", "CVMSupport"],
                    exclude: ["Scripts"]),
        // moto_server with SigV4 enforced, its boto3 helper and the fault proxy: shared by the AWS tests.
        .target(name: "AWSTestSupport", dependencies: ["CVMSupport", "CVMTestData"], path: "Tests/AWSTestSupport",
                exclude: ["Scripts"]),
        .testTarget(name: "AWSProviderTests", dependencies: [
            "AWSProvider", "CloudAuth", "Transport", "DiskImage", "CVMCrypto", "CVMSupport", "AWSTestSupport", "CVMTestData",
        ]),
        .testTarget(name: "DeployTests", dependencies: ["CVMMatrix", "Deploy", "CVMSupport", "CVMTestData"]),
        .testTarget(name: "DeployAWSTests", dependencies: [
            "AWSProvider", "AWSTestSupport", "CVMTestData", "CVMMatrix", "Deploy", "DiskImage", "CVMCrypto", "CVMSupport", "Transport",
        ]),
        // gcp-storage-emulator behind the JWT-verifying token server and bearer-checking proxy: shared by the GCP tests.
        .target(name: "GCPTestSupport", dependencies: ["CVMSupport", "CVMTestData"], path: "Tests/GCPTestSupport", exclude: ["Scripts"]),
        .testTarget(name: "GCPProviderTests", dependencies: [
            "GCPProvider", "CloudAuth", "Transport", "DiskImage", "CVMCrypto", "CVMSupport", "CVMTestData", "GCPTestSupport",
        ]),
        .testTarget(name: "DeployGCPTests", dependencies: [
            "GCPProvider", "GCPTestSupport", "CVMTestData", "CVMMatrix", "Deploy", "DiskImage", "CVMCrypto", "CVMSupport",
        ], exclude: ["Scripts"]),
        // The SharedKey-checking page-blob endpoint and its scripts: shared by the Azure tests.
        .target(name: "AzureTestSupport", dependencies: ["CVMCrypto", "CVMSupport", "CVMTestData"], path: "Tests/AzureTestSupport",
                exclude: ["Scripts"]),
        .testTarget(name: "AzureProviderTests", dependencies: [
            "AzureProvider", "CloudAuth", "Transport", "DiskImage", "CVMCrypto", "CVMSupport", "AzureTestSupport", "CVMTestData",
        ]),
        .testTarget(name: "DeployAzureTests", dependencies: [
            "AzureProvider", "AzureTestSupport", "CVMTestData", "CVMMatrix", "Deploy", "DiskImage", "CVMCrypto", "CVMSupport",
            "CloudAuth", "Transport",
        ], exclude: ["Scripts"]),
    ]
)
