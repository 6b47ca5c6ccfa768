import CLZMA
import CVMSupport

/// The firmware volumes inside an OVMF CODE file: FVMAIN_COMPACT's LZMA-compressed section holds
/// the PEI and DXE volumes SEC decompresses into RAM. Read to know which files the DXE volume
/// carries (UiApp, the UEFI Shell) and its name GUID, which OVMF's boot options point into.
public struct OVMFFirmware: Sendable {
    public struct Volume: Sendable {
        /// The FvNameGuid of the extended header (nil without one).
        public let name: [UInt8]?
        public let fileNames: [[UInt8]]
        public let bytes: [UInt8]
    }

    public let volumes: [Volume]

    static let lzmaSectionGUID = UEFIEvent.guid(0xEE4E_5898, 0x3914, 0x4259, [0x9D, 0x6E, 0xDC, 0x7B, 0xD7, 0x94, 0x03, 0xCF])
    static let sectionGUIDDefined: UInt8 = 0x02
    static let sectionFirmwareVolume: UInt8 = 0x17

    public init(code: [UInt8], name: String) throws {
        let outer = try Self.volume(code, at: 0, name: name)
        var found: [Volume] = []
        for file in try Self.files(outer.bytes, name: name) {
            for section in try Self.sections(file, name: name) where section.type == Self.sectionGUIDDefined {
                let body = section.body
                guard body.count >= 20, Array(body[0..<16]) == Self.lzmaSectionGUID else { continue }
                let dataOffset = Int(body.le16(16)) - 4
                guard dataOffset >= 20, dataOffset <= body.count else { throw CVMError.invalid("\(name): bad LZMA section header") }
                let inner = try Self.lzmaDecode(Array(body[dataOffset...]), name: name)
                for s in try Self.sections(inner, name: name) where s.type == Self.sectionFirmwareVolume {
                    found.append(try Self.volume(s.body, at: 0, name: name))
                }
            }
        }
        guard !found.isEmpty else { throw CVMError.invalid("\(name): no LZMA-compressed firmware volumes (not an OVMF CODE file?)") }
        volumes = found
    }

    /// The volume holding a file of that name (GUID bytes).
    public func volume(containing file: [UInt8]) -> Volume? { volumes.first { $0.fileNames.contains(file) } }

    // MARK: PI firmware volume format (PI spec vol. 3)

    static func volume(_ b: [UInt8], at o: Int, name: String) throws -> Volume {
        guard o + 56 <= b.count, b.ascii(o + 40, 4) == "_FVH" else { throw CVMError.invalid("\(name): no firmware volume header at \(o)") }
        let length = Int(clamping: b.le64(o + 32)), headerLength = Int(b.le16(o + 48)), extOffset = Int(b.le16(o + 52))
        guard length >= headerLength, length <= b.count - o else { throw CVMError.invalid("\(name): firmware volume at \(o) is truncated") }
        let fv = Array(b[o..<o + length])
        var volumeName: [UInt8]? = nil
        if extOffset != 0, extOffset + 20 <= fv.count { volumeName = Array(fv[extOffset..<extOffset + 16]) }
        return Volume(name: volumeName, fileNames: try fileHeaders(fv, name: name).map(\.name), bytes: fv)
    }

    struct FileHeader { let name: [UInt8]; let type: UInt8; let body: Range<Int> }

    static func fileHeaders(_ fv: [UInt8], name: String) throws -> [FileHeader] {
        let headerLength = Int(fv.le16(48)), extOffset = Int(fv.le16(52))
        var o = extOffset != 0 ? extOffset + Int(fv.le32(extOffset + 16)) : headerLength
        var out: [FileHeader] = []
        while true {
            o = (o + 7) & ~7
            guard o + 24 <= fv.count else { break }
            let size24 = Int(fv.le32(o + 20) & 0xFF_FFFF)
            if fv[o..<o + 24].allSatisfy({ $0 == 0xFF }) { break }      // free space
            let large = fv[o + 19] & 0x01 != 0
            let header = large ? 32 : 24
            let size = large ? Int(clamping: fv.le64(o + 24)) : size24
            guard size >= header, size <= fv.count - o else { throw CVMError.invalid("\(name): FFS file at \(o) is truncated") }
            out.append(FileHeader(name: Array(fv[o..<o + 16]), type: fv[o + 18], body: o + header..<o + size))
            o += size
        }
        return out
    }

    static func files(_ fv: [UInt8], name: String) throws -> [[UInt8]] {
        try fileHeaders(fv, name: name).filter { $0.type != 0xF0 }.map { Array(fv[$0.body]) }   // 0xF0: pad file
    }

    static func sections(_ b: [UInt8], name: String) throws -> [(type: UInt8, body: [UInt8])] {
        var o = 0
        var out: [(UInt8, [UInt8])] = []
        while o + 4 <= b.count {
            let size24 = Int(b.le32(o) & 0xFF_FFFF), type = b[o + 3]
            let extended = size24 == 0xFF_FFFF
            let header = extended ? 8 : 4
            let size = extended ? Int(b.le32(o + 4)) : size24
            guard size >= header, size <= b.count - o else { throw CVMError.invalid("\(name): firmware section at \(o) is truncated") }
            out.append((type, Array(b[o + header..<o + size])))
            o = (o + size + 3) & ~3
        }
        return out
    }

    /// EDK2's LZMA sections are the "LZMA alone" format (5 property bytes, 64-bit size).
    static func lzmaDecode(_ input: [UInt8], name: String) throws -> [UInt8] {
        guard input.count >= 13 else { throw CVMError.invalid("\(name): truncated LZMA section") }
        let size = Int(clamping: input.le64(5))
        guard size > 0, size < 256 << 20 else { throw CVMError.invalid("\(name): LZMA section claims \(size) bytes") }
        var stream = lzma_stream()
        guard lzma_alone_decoder(&stream, UInt64.max) == LZMA_OK else { throw CVMError.io("liblzma: cannot start a decoder") }
        defer { lzma_end(&stream) }
        var output = [UInt8](repeating: 0, count: size)
        let ret: lzma_ret = input.withUnsafeBufferPointer { inBuf in
            output.withUnsafeMutableBufferPointer { outBuf in
                stream.next_in = inBuf.baseAddress
                stream.avail_in = inBuf.count
                stream.next_out = outBuf.baseAddress
                stream.avail_out = outBuf.count
                return lzma_code(&stream, LZMA_FINISH)
            }
        }
        guard ret == LZMA_STREAM_END || (ret == LZMA_OK && stream.avail_out == 0) else {
            throw CVMError.invalid("\(name): the LZMA-compressed firmware volume does not decompress (liblzma error \(ret.rawValue))")
        }
        return output
    }
}
