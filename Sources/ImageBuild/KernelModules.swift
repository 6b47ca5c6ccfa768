import CVMSupport
import Foundation

/// The kernel modules the initramfs loads (with busybox insmod, in dependency order), taken
/// from the kernel package's modules.dep.
enum KernelModules {
    /// What the boot needs from Debian's cloud kernel, where these are modules (ext4 and the
    /// TPM drivers are built in): the virtio disk and network, dm-verity and squashfs.
    static let wanted = ["virtio_pci", "virtio_blk", "virtio_net", "dm-mod", "dm-verity", "squashfs"]

    /// What cvm-agent's firewall needs (nf_tables with the ct expression; meta, cmp, payload,
    /// bitwise, immediate and the inet family are part of nf_tables). Loaded by the root's init,
    /// not the initramfs: a kernel without them boots, and the agent reports no firewall.
    static let firewall = ["nf_tables", "nft_ct"]

    /// Module files (relative to lib/modules/<version>/) in load order: dependencies first.
    /// The package has no modules.dep (depmod writes it at install time): each module's
    /// `depends=` comes from its own .modinfo section.
    static func loadOrder(modulesDir: String, wanted: [String], name: String) throws -> [String] {
        var byName: [String: String] = [:]
        let kernelDir = modulesDir + "/kernel"
        guard let walker = FileManager.default.enumerator(atPath: kernelDir) else {
            throw CVMError.invalid("\(name): no \(kernelDir)")
        }
        for case let rel as String in walker where rel.hasSuffix(".ko") {
            byName[canonical(rel)] = "kernel/" + rel
        }
        var deps: [String: [String]] = [:]
        func dependencies(_ file: String) throws -> [String] {
            if let d = deps[file] { return d }
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: modulesDir + "/" + file)))
            let info = try ELFSection.contents(named: ".modinfo", in: bytes, name: file)
            var out: [String] = []
            for field in info.split(separator: 0) where field.starts(with: Array("depends=".utf8)) {
                for dep in String(decoding: field.dropFirst(8), as: UTF8.self).split(separator: ",") {
                    guard let f = byName[canonical(String(dep))] else {
                        throw CVMError.invalid("\(name): \(file) depends on \(dep), which the package does not hold")
                    }
                    out.append(f)
                }
            }
            deps[file] = out
            return out
        }
        var order: [String] = []
        var seen: Set<String> = []
        func visit(_ file: String) throws {
            guard seen.insert(file).inserted else { return }
            for d in try dependencies(file) { try visit(d) }
            order.append(file)
        }
        for w in wanted {
            guard let file = byName[canonical(w)] else {
                throw CVMError.invalid("\(name): the kernel has no module \(w) (is it built in? then drop it from the list)")
            }
            try visit(file)
        }
        return order
    }

    /// `dm-verity.ko` and `dm_verity` name the same module.
    static func canonical(_ s: String) -> String {
        var base = (s as NSString).lastPathComponent
        if base.hasSuffix(".ko") { base = String(base.dropLast(3)) }
        return base.replacingOccurrences(of: "-", with: "_")
    }
}

/// Reads one section of a 64-bit little-endian ELF file.
enum ELFSection {
    static func contents(named wanted: String, in b: [UInt8], name: String) throws -> [UInt8] {
        guard b.count > 64, b[0] == 0x7F, b[1] == 0x45, b[2] == 0x4C, b[3] == 0x46, b[4] == 2, b[5] == 1 else {
            throw CVMError.invalid("\(name): not a 64-bit little-endian ELF file")
        }
        let shoff = Int(b.le64(0x28)), shentsize = Int(b.le16(0x3A)), shnum = Int(b.le16(0x3C)), shstrndx = Int(b.le16(0x3E))
        func header(_ i: Int) throws -> (name: Int, offset: Int, size: Int) {
            let o = shoff + i * shentsize
            guard i < shnum, o + 64 <= b.count else { throw CVMError.invalid("\(name): truncated ELF section table") }
            return (Int(b.le32(o)), Int(b.le64(o + 0x18)), Int(b.le64(o + 0x20)))
        }
        let strings = try header(shstrndx)
        for i in 0..<shnum {
            let h = try header(i)
            var end = strings.offset + h.name
            while end < b.count, b[end] != 0 { end += 1 }
            guard strings.offset + h.name <= end else { continue }
            if String(decoding: b[(strings.offset + h.name)..<end], as: UTF8.self) == wanted {
                guard h.offset + h.size <= b.count else { throw CVMError.invalid("\(name): truncated ELF section \(wanted)") }
                return Array(b[h.offset..<h.offset + h.size])
            }
        }
        throw CVMError.invalid("\(name): no ELF section \(wanted)")
    }
}
