import CVMSupport
import Deploy

/// RegisterImage's `UefiData`: AWS's UEFI variable store holding PK, KEK and db.
enum AWSUEFIData {
    static func encode(_ certs: SecureBootCerts) throws -> String {
        throw CVMError.unsupported("--secure-boot-certs: building AWS UefiData is not implemented yet")
    }
}
