import CVMCrypto
import CVMSupport

/// One measurement a boot component makes: the PCR, the TCG event type, what it is, and the
/// SHA-256 extended into the PCR.
public struct PredictedEvent: Sendable, Equatable {
    public let pcr: Int
    public let type: UInt32
    public let description: String
    public let digest: [UInt8]

    public init(pcr: Int, type: UInt32, description: String, digest: [UInt8]) {
        self.pcr = pcr
        self.type = type
        self.description = description
        self.digest = digest
    }

    public var typeName: String { TCGEventType.name(type) }
}

/// TCG PC Client Platform Firmware Profile event types used here.
public enum TCGEventType {
    public static let ipl: UInt32 = 0x0D
    public static let separator: UInt32 = 0x04
    public static let eventTag: UInt32 = 0x06
    public static let efiVariableDriverConfig: UInt32 = 0x8000_0001
    public static let efiBootServicesApplication: UInt32 = 0x8000_0003
    public static let efiGPTEvent: UInt32 = 0x8000_0006
    public static let efiAction: UInt32 = 0x8000_0007
    public static let efiVariableBoot: UInt32 = 0x8000_0002
    public static let efiBootServicesDriver: UInt32 = 0x8000_0004

    public static func name(_ type: UInt32) -> String {
        switch type {
        case ipl: return "EV_IPL"
        case separator: return "EV_SEPARATOR"
        case eventTag: return "EV_EVENT_TAG"
        case efiVariableDriverConfig: return "EV_EFI_VARIABLE_DRIVER_CONFIG"
        case efiBootServicesApplication: return "EV_EFI_BOOT_SERVICES_APPLICATION"
        case efiGPTEvent: return "EV_EFI_GPT_EVENT"
        case efiAction: return "EV_EFI_ACTION"
        case efiVariableBoot: return "EV_EFI_VARIABLE_BOOT"
        case efiBootServicesDriver: return "EV_EFI_BOOT_SERVICES_DRIVER"
        case 0x8000_0008: return "EV_EFI_PLATFORM_FIRMWARE_BLOB"
        case 0x08: return "EV_S_CRTM_VERSION"
        default: return "0x" + String(type, radix: 16)
        }
    }
}

/// The event data UEFI firmware hashes for the boot-time events (TCG PC Client PFP §10.4).
public enum UEFIEvent {
    /// EV_SEPARATOR: the firmware's end-of-pre-boot marker, the 4-byte value 0.
    public static func separator(pcr: Int) -> PredictedEvent {
        PredictedEvent(pcr: pcr, type: TCGEventType.separator, description: "separator", digest: SHA256.hash([0, 0, 0, 0]))
    }

    /// EV_EFI_ACTION: the digest is of the ASCII string (no terminator).
    public static func action(pcr: Int, _ text: String) -> PredictedEvent {
        PredictedEvent(pcr: pcr, type: TCGEventType.efiAction, description: text, digest: SHA256.hash(text))
    }

    public static let globalVariableGUID = guid(0x8BE4_DF61, 0x93CA, 0x11D2, [0xAA, 0x0D, 0x00, 0xE0, 0x98, 0x03, 0x2B, 0x8C])
    public static let imageSecurityDatabaseGUID = guid(0xD719_B2CB, 0x3D3A, 0x4596, [0xA3, 0xBC, 0xDA, 0xD0, 0x0E, 0x67, 0x65, 0x6F])

    /// UEFI_VARIABLE_DATA: VariableName GUID, UnicodeNameLength and VariableDataLength (UINT64),
    /// the name in UTF-16 without terminator, then the data.
    public static func variableData(vendor: [UInt8], name: String, data: [UInt8]) -> [UInt8] {
        let units = Array(name.utf16)
        var out = vendor
        out += le64(UInt64(units.count)) + le64(UInt64(data.count))
        for u in units { out += [UInt8(u & 0xFF), UInt8(u >> 8)] }
        return out + data
    }

    /// EFI_GUID bytes (mixed endian, as in memory).
    public static func guid(_ a: UInt32, _ b: UInt16, _ c: UInt16, _ d: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 8)
        out.putLE32(a, at: 0)
        out.putLE16(b, at: 4)
        out.putLE16(c, at: 6)
        return out + d
    }

    static func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}
