import CVMSupport

extension VMDK {
    /// The text descriptor embedded in a single-file VMDK: `key = "value"` lines plus extent
    /// lines such as `RDONLY 8388608 SPARSE "disk.vmdk"`.
    struct Descriptor {
        /// One extent line: access, size in sectors, type (SPARSE, FLAT, …).
        struct Extent: Equatable {
            var access: String
            var sectors: UInt64?
            var type: String
        }

        var createType: String?
        /// nil when absent; 0xFFFFFFFF means "no parent".
        var parentCID: UInt32?
        var extents: [Extent] = []

        /// Parses descriptor text (up to the first NUL). Lenient: unknown lines are ignored;
        /// the reader checks what it needs.
        init(parsing bytes: [UInt8]) {
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            let text = String(decoding: bytes[0..<end], as: UTF8.self)
            for rawLine in text.split(omittingEmptySubsequences: true, whereSeparator: { $0.isNewline }) {
                let line = rawLine.trimmingSpaces()
                if line.isEmpty || line.hasPrefix("#") { continue }
                let words = line.split(separator: " ", omittingEmptySubsequences: true)
                if let access = words.first, ["RW", "RDONLY", "NOACCESS"].contains(String(access)), words.count >= 3 {
                    extents.append(Extent(access: String(access), sectors: UInt64(words[1]), type: String(words[2])))
                    continue
                }
                guard let eq = line.firstIndex(of: "=") else { continue }
                let key = line[..<eq].trimmingSpaces()
                var value = line[line.index(after: eq)...].trimmingSpaces()
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                    value = String(value.dropFirst().dropLast())
                }
                switch key.lowercased() {
                case "createtype": createType = value
                case "parentcid": parentCID = UInt32(value, radix: 16)
                default: break
                }
            }
        }

        /// Refuses descriptors the reader cannot honour: other disk types, delta disks,
        /// several extents, or an extent whose size disagrees with the header.
        func checkSupported(capacity: UInt64, name: String) throws {
            if let type = createType {
                let known = ["streamoptimized", "monolithicsparse"]
                guard known.contains(type.lowercased()) else {
                    throw CVMError.unsupported("\(name): VMDK createType \"\(type)\" is not supported; expected a single-file streamOptimized (or monolithicSparse) VMDK")
                }
            }
            if let parent = parentCID, parent != 0xFFFF_FFFF {
                throw CVMError.unsupported("\(name): VMDK is a delta disk (parentCID \(String(parent, radix: 16))) that needs its parent; convert the whole chain into one image first")
            }
            guard extents.count <= 1 else {
                throw CVMError.unsupported("\(name): VMDK descriptor lists \(extents.count) extents; only single-extent VMDK is supported")
            }
            if let extent = extents.first {
                guard extent.type == "SPARSE" else {
                    throw CVMError.unsupported("\(name): VMDK extent type \(extent.type) is not supported; expected SPARSE (data in this file)")
                }
                if let sectors = extent.sectors, sectors != capacity {
                    throw CVMError.invalid("\(name): VMDK descriptor extent has \(sectors) sectors but the header capacity is \(capacity) sectors")
                }
            }
        }

        /// The descriptor the writer embeds, with the fields qemu and VMware's tools write.
        /// The content ID is derived from the capacity (no randomness, reproducible output);
        /// the extent name is fixed because the extent is this very file.
        static func render(capacitySectors: UInt64) -> String {
            let cid = crc32(Array("cvm-cli streamOptimized \(capacitySectors)".utf8))
            // SCSI (lsilogic) geometry convention: 255 heads, 63 sectors per track.
            let cylinders = capacitySectors / (255 * 63)
            return """
            # Disk DescriptorFile
            version=1
            CID=\(hex8(cid == 0xFFFF_FFFF ? 0xFFFF_FFFE : cid))
            parentCID=ffffffff
            createType="streamOptimized"

            # Extent description
            RDONLY \(capacitySectors) SPARSE "disk.vmdk"

            # The Disk Data Base
            #DDB

            ddb.adapterType = "lsilogic"
            ddb.geometry.cylinders = "\(cylinders)"
            ddb.geometry.heads = "255"
            ddb.geometry.sectors = "63"
            ddb.virtualHWVersion = "4"

            """
        }

        private static func hex8(_ v: UInt32) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, 8 - s.count)) + s
        }
    }
}

private extension StringProtocol {
    /// The text without leading and trailing spaces and tabs.
    func trimmingSpaces() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}
