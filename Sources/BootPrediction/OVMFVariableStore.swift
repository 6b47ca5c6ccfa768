import CVMCrypto
import CVMSupport

/// The UEFI variables in an OVMF VARS file (a firmware volume holding an authenticated
/// variable store): what the firmware starts with on a fresh copy, as deploy-local makes one.
public struct OVMFVariableStore: Sendable {
    public struct Variable: Sendable, Equatable {
        public let vendor: [UInt8]
        public let name: String
        public let data: [UInt8]
    }

    public let variables: [Variable]

    /// gEfiAuthenticatedVariableGuid / gEfiVariableGuid: the two variable-store formats.
    static let authenticatedStore = UEFIEvent.guid(0xAAF3_2C78, 0x947B, 0x439A, [0xA1, 0x80, 0x2E, 0x14, 0x4E, 0xC3, 0x77, 0x92])
    static let plainStore = UEFIEvent.guid(0xDDCF_3616, 0x3275, 0x4164, [0x98, 0xB6, 0xFE, 0x85, 0x70, 0x7F, 0xFE, 0x7D])

    public init(_ b: [UInt8], name: String) throws {
        guard b.count >= 64, b.ascii(40, 4) == "_FVH" else {
            throw CVMError.invalid("\(name): not an OVMF VARS file (no firmware volume header)")
        }
        let store = Int(b.le16(48))                      // FV HeaderLength
        guard store + 28 <= b.count else { throw CVMError.invalid("\(name): truncated variable store") }
        let format = Array(b[store..<store + 16])
        let authenticated: Bool
        if format == Self.authenticatedStore { authenticated = true }
        else if format == Self.plainStore { authenticated = false }
        else { throw CVMError.invalid("\(name): unknown variable store format \(hexString(format))") }
        let end = min(b.count, store + Int(b.le32(store + 16)))
        let headerSize = authenticated ? 60 : 32
        var o = store + 28
        var variables: [Variable] = []
        while o + headerSize <= end, b.le16(o) == 0x55AA {
            let state = b[o + 2]
            let nameSize = Int(b.le32(o + (authenticated ? 36 : 8)))
            let dataSize = Int(b.le32(o + (authenticated ? 40 : 12)))
            let vendor = Array(b[o + headerSize - 16..<o + headerSize])
            let nameStart = o + headerSize
            guard nameSize >= 0, dataSize >= 0, nameStart + nameSize + dataSize <= end else {
                throw CVMError.invalid("\(name): variable at offset \(o) reaches past the store")
            }
            // VAR_ADDED (0x3F), possibly marked "in deleted transition" (0x3E): the live copy.
            if state == 0x3F || state == 0x3E {
                var units: [UInt16] = []
                for k in stride(from: 0, to: nameSize, by: 2) {
                    let u = b.le16(nameStart + k)
                    if u == 0 { break }
                    units.append(u)
                }
                variables.append(Variable(vendor: vendor, name: String(decoding: units, as: UTF16.self),
                                          data: Array(b[nameStart + nameSize..<nameStart + nameSize + dataSize])))
            }
            o = (nameStart + nameSize + dataSize + 3) & ~3
        }
        self.variables = variables
    }

    public func value(_ name: String, vendor: [UInt8]) -> [UInt8]? {
        variables.last { $0.name == name && $0.vendor == vendor }?.data
    }
}
