import CVMCrypto
import CVMSupport

/// What systemd-stub (the UKI's EFI body) measures, for the version whose behaviour is modelled:
/// systemd 252 (Debian 12's systemd-boot-efi).
struct SystemdStub {
    let uki: PEImage
    /// "252.39-1~deb12u2", from the `.sdmagic` section ("#### LoaderInfo: systemd-stub V ####").
    let version: String?

    /// The sections systemd-stub 252 measures into PCR 11, in its order (not the file's):
    /// `unified_sections[]` without `.pcrsig`, which it never measures.
    static let measuredSections = [".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"]

    init(_ uki: PEImage) {
        self.uki = uki
        let magic = uki.mappedSection(".sdmagic").map { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } ?? ""
        if let range = magic.range(of: "systemd-stub ") {
            version = String(magic[range.upperBound...].prefix { $0 != " " })
        } else {
            version = nil
        }
    }

    var isModelled: Bool { version.map { $0 == "252" || $0.hasPrefix("252.") || $0.hasPrefix("252-") } ?? false }

    func notModelled(what: String) -> String {
        "systemd-stub \(version ?? "?") in the UKI: \(what) is modelled for systemd 252 (Debian 12) only"
    }

    /// PCR 11: per present section, an EV_IPL of its name (ASCII with the NUL) and one of its
    /// content as mapped in memory; both events' data is the name in UTF-16.
    func sectionEvents() -> [PredictedEvent] {
        var events: [PredictedEvent] = []
        for name in Self.measuredSections {
            guard let content = uki.mappedSection(name), !content.isEmpty else { continue }
            events.append(PredictedEvent(pcr: 11, type: TCGEventType.ipl, description: "\(name) section name", digest: SHA256.hash(Array(name.utf8) + [0])))
            events.append(PredictedEvent(pcr: 11, type: TCGEventType.ipl, description: "\(name) section (\(content.count) bytes)", digest: SHA256.hash(content)))
        }
        return events
    }

    /// The command line systemd-stub 252 hands the kernel as its LoadOptions: the `.cmdline`
    /// section in UTF-16, control characters turned into spaces, trailing spaces dropped, NUL
    /// terminated.
    func kernelLoadOptions() -> [UInt8] {
        let text = uki.mappedSection(".cmdline").map { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } ?? ""
        var units = text.utf16.map { $0 <= 0x1F ? UInt16(0x20) : $0 }
        while units.last == 0x20 { units.removeLast() }
        var out: [UInt8] = []
        for u in units + [0] { out += [UInt8(u & 0xFF), UInt8(u >> 8)] }
        return out
    }

    /// PCR 9, measured by Linux 6.1's EFI stub before it exits boot services: its LoadOptions
    /// (an EV_EVENT_TAG) and the initrd systemd-stub serves it through LoadFile2.
    func kernelStubEvents() -> [PredictedEvent] {
        var events = [PredictedEvent(pcr: 9, type: TCGEventType.eventTag, description: "LOADED_IMAGE::LoadOptions (the UKI's .cmdline)",
                                     digest: SHA256.hash(kernelLoadOptions()))]
        if let initrd = uki.mappedSection(".initrd"), !initrd.isEmpty {
            events.append(PredictedEvent(pcr: 9, type: TCGEventType.eventTag, description: "Linux initrd (the UKI's .initrd)", digest: SHA256.hash(initrd)))
        }
        return events
    }
}
