import Foundation
import XCTest
import CZlib
@testable import DiskImage
import CVMSupport

/// The inflater's fast path for the writer's all-zero chunks (`KnownZeroChunks`): it must give
/// exactly what inflating gives, for our archives and for any other gzip stream.
final class GzipZeroChunkTests: XCTestCase {
    private let mib = 1 << 20

    func testOwnArchivesSkipZeroChunksAndReadBackExactly() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("src.raw").path
        try TestSupport.makeGPTDisk(at: src, seed: 21)
        let disk = [UInt8](try Data(contentsOf: URL(fileURLWithPath: src)))
        for level in [1, 6] {
            let tgz = dir.appendingPathComponent("l\(level).tar.gz").path
            try TestSupport.convert(src, to: tgz, format: .tarGz, options: WriterOptions(compressionLevel: level))
            let stream = try GzipInflateStream(source: FileByteSource(path: tgz))
            // The tar: one header block, the disk padded with zeros to 1 GiB, zeros to the end.
            var position = 0
            var buffer = [UInt8](repeating: 0, count: 3 * mib + 1234)
            while true {
                let got = try buffer.withUnsafeMutableBytes { try stream.read(into: $0) }
                // Compared region by region (a byte loop over 1 GiB is slow in debug builds).
                let diskEnd = 512 + disk.count
                let lo = max(position, 512), mid = min(max(position + got, lo), diskEnd), hi = position + got
                if lo < mid {
                    let same = buffer.withUnsafeBytes { b in disk.withUnsafeBytes { d in
                        memcmp(b.baseAddress! + (lo - position), d.baseAddress! + (lo - 512), mid - lo) == 0 } }
                    XCTAssertTrue(same, "level \(level): disk bytes \(lo - 512)..<\(mid - 512) differ")
                }
                if max(mid, lo) < hi {
                    let zero = buffer.withUnsafeBytes { isAllZero(UnsafeRawBufferPointer(rebasing: $0[(max(mid, lo) - position)..<got])) }
                    XCTAssertTrue(zero, "level \(level): bytes after the disk at \(max(mid, lo)) are not zeros")
                }
                position += got
                if got < buffer.count { break }
            }
            XCTAssertEqual(UInt64(position), DiskGeometry.roundUp(512 + (1 << 30) + 1024, to: 10240), "level \(level)")
            XCTAssertTrue(stream.atEnd)
            XCTAssertGreaterThan(stream.zeroChunksRecognised, 900, "level \(level): the GiB of mostly zeros is recognised, not inflated")
        }
    }

    func testArchivesOfGzipAndPigzHaveNoFalseMatches() throws {
        let dir = try TestSupport.tempDir(self)
        let raw = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: raw, seed: 22)
        let tar = dir.appendingPathComponent("d.tar").path
        try TestSupport.run("tar", ["--format=gnu", "-cf", tar, "-C", dir.path, "disk.raw"])
        let expected = try TestSupport.sha256(tar)
        for tool in [["gzip", "-6"], ["pigz", "-6"], ["pigz", "-1", "-i"]] {
            let gz = dir.appendingPathComponent("d-\(tool.joined()).tar.gz").path
            try TestSupport.run("sh", ["-c", "\(tool.joined(separator: " ")) -c '\(tar)' > '\(gz)'"])
            let all = try readAll(try GzipInflateStream(source: FileByteSource(path: gz)))
            XCTAssertEqual(try sha256Hex(all), expected, tool.joined(separator: " "))
        }
    }

    /// The exact bytes of a zero chunk inside a stored block are data, not zeros; a real zero
    /// chunk after them is recognised; the block after it refers back into the zeros (so the
    /// window must hold them) and inflates right.
    func testZeroChunkPatternAsDataAndBackReferencesIntoSkippedZeros() throws {
        let pattern = KnownZeroChunks.all[0].bytes
        // 1. Stored block whose content is the pattern (not at a block boundary).
        var body = try rawDeflate(pattern, level: 0)
        // 2. The real zero chunk, at a byte-aligned block boundary.
        body += pattern
        // 3. Text that starts with zeros, compressed against a window of zeros: its first
        //    match reaches back before its own start.
        let tail = [UInt8](repeating: 0, count: 3000) + Array("after the zeros".utf8) + [UInt8](repeating: 0, count: 500)
        body += try rawDeflate(tail, level: 6, dictionary: [UInt8](repeating: 0, count: 1 << 15))
        body += GzipFraming.finalEmptyBlock
        let expected = pattern + [UInt8](repeating: 0, count: mib) + tail
        let member = GzipFraming.memberHeader(mtime: 0, level: 6) + body
            + GzipFraming.memberTrailer(crc: crc32(expected), length: UInt64(expected.count))

        // gzip agrees the stream means `expected`.
        let dir = try TestSupport.tempDir(self)
        let file = dir.appendingPathComponent("crafted.gz").path
        try Data(member).write(to: URL(fileURLWithPath: file))
        let gz = try TestSupport.run("sh", ["-c", "gzip -dc < '\(file)' | sha256sum"]).stdout.prefix(64)
        XCTAssertEqual(String(gz), try sha256Hex(expected))

        let stream = try GzipInflateStream(source: MemoryByteSource(member, name: "crafted.gz"))
        let all = try readAll(stream, piece: 4099)
        XCTAssertEqual(stream.zeroChunksRecognised, 1, "only the chunk at a block boundary")
        XCTAssertEqual(all, expected)
        // Skipping over the zeros and reading the tail gives the same bytes.
        let again = try GzipInflateStream(source: MemoryByteSource(member, name: "crafted.gz"))
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        defer { scratch.deallocate() }
        XCTAssertEqual(try again.skip(UInt64(pattern.count + mib), scratch: scratch), UInt64(pattern.count + mib))
        var rest = [UInt8](repeating: 0xAA, count: tail.count)
        XCTAssertEqual(try rest.withUnsafeMutableBytes { try again.read(into: $0) }, tail.count)
        XCTAssertEqual(rest, tail)
    }

    func testCorruptionAroundZeroChunksIsDetected() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("src.raw").path
        try TestSupport.makeGPTDisk(at: src, seed: 23)
        let tgz = dir.appendingPathComponent("a.tar.gz").path
        try TestSupport.convert(src, to: tgz, format: .tarGz)
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: tgz)))

        // The trailer's CRC-32 (combined over recognised chunks) and length are checked.
        var badCRC = good
        badCRC[badCRC.count - 6] ^= 0x10
        XCTAssertThrowsError(try drain(GzipInflateStream(source: MemoryByteSource(badCRC, name: "crc.gz")))) {
            XCTAssertTrue("\($0)".contains("incorrect data check"), "\($0)")
        }
        var badLength = good
        badLength[badLength.count - 2] ^= 0x01
        XCTAssertThrowsError(try drain(GzipInflateStream(source: MemoryByteSource(badLength, name: "len.gz")))) {
            XCTAssertTrue("\($0)".contains("incorrect length check"), "\($0)")
        }
        // A changed byte inside a zero chunk: no longer recognised, so inflated. A set BFINAL
        // bit (first byte) or a broken sync marker (last byte) is an error; elsewhere the bytes
        // may still decode to zeros (any distance copies zeros), and then gzip agrees.
        let pattern = KnownZeroChunks.all[0].bytes
        let at = try XCTUnwrap(firstIndex(of: pattern, in: good))
        let clean = try GzipInflateStream(source: MemoryByteSource(good, name: "good.gz"))
        XCTAssertEqual(try drain(clean), UInt64(DiskGeometry.roundUp(512 + (1 << 30) + 1024, to: 10240)))
        for (offset, flip, mustFail) in [(0, UInt8(0x01), true), (pattern.count - 1, 0x01, true), (pattern.count / 2, 0x04, false)] {
            var bad = good
            bad[at + offset] ^= flip
            let stream = try GzipInflateStream(source: MemoryByteSource(bad, name: "bad.gz"))
            let file = dir.appendingPathComponent("bad-\(offset).gz").path
            try Data(bad).write(to: URL(fileURLWithPath: file))
            let gzipAccepts = try TestSupport.run("gzip", ["-t", file], allowFailure: true).status == 0
            do {
                _ = try drain(stream)
                XCTAssertFalse(mustFail, "byte \(offset)")
                XCTAssertTrue(gzipAccepts, "byte \(offset): we accept what gzip refuses")
                XCTAssertEqual(stream.zeroChunksRecognised, clean.zeroChunksRecognised - 1, "byte \(offset)")
            } catch let error as CVMError {
                XCTAssertFalse(gzipAccepts, "byte \(offset): we refuse what gzip accepts: \(error)")
                XCTAssertTrue(error.message.hasPrefix("bad.gz: corrupt gzip data"), error.message)
            }
        }
    }

    func testOptionalHeaderFieldsAndHeaderCRC() throws {
        let data = TestSupport.compressibleBytes(count: 200_000, seed: 24)
        var header: [UInt8] = [0x1F, 0x8B, 8, 4 | 8 | 16 | 2, 0, 0, 0, 0, 0, 3]
        header += [5, 0] + Array("extra".utf8)                 // FEXTRA
        header += Array("disk.tar".utf8) + [0]                 // FNAME
        header += Array("a comment".utf8) + [0]                // FCOMMENT
        let hcrc = UInt16(truncatingIfNeeded: crc32(header))
        header += [UInt8(hcrc & 0xFF), UInt8(hcrc >> 8)]       // FHCRC
        let member = header + (try rawDeflate(data, level: 6)) + GzipFraming.finalEmptyBlock
            + GzipFraming.memberTrailer(crc: crc32(data), length: UInt64(data.count))
        let dir = try TestSupport.tempDir(self)
        let file = dir.appendingPathComponent("fields.gz").path
        try Data(member).write(to: URL(fileURLWithPath: file))
        try TestSupport.run("gzip", ["-t", file])
        XCTAssertEqual(try readAll(GzipInflateStream(source: MemoryByteSource(member, name: "f.gz"))), data)

        var bad = member
        bad[12] ^= 1  // inside FEXTRA: the header CRC no longer matches
        XCTAssertThrowsError(try readAll(GzipInflateStream(source: MemoryByteSource(bad, name: "f.gz")))) {
            XCTAssertTrue("\($0)".contains("header crc mismatch"), "\($0)")
        }
        XCTAssertThrowsError(try readAll(GzipInflateStream(source: MemoryByteSource(Array(member.prefix(15)), name: "f.gz")))) {
            XCTAssertTrue("\($0)".contains("the file is truncated"), "\($0)")
        }
    }

    // MARK: helpers

    /// Everything the stream gives, read in pieces of `piece` bytes.
    private func readAll(_ stream: GzipInflateStream, piece: Int = 1 << 20 + 4096) throws -> [UInt8] {
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: piece)
        while true {
            let got = try buffer.withUnsafeMutableBytes { try stream.read(into: $0) }
            result += buffer.prefix(got)
            if got < piece { break }
        }
        return result
    }

    /// Reads the stream to its end; returns the byte count.
    private func drain(_ stream: GzipInflateStream) throws -> UInt64 {
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { scratch.deallocate() }
        return try stream.skip(UInt64.max, scratch: scratch)
    }

    private func rawDeflate(_ data: [UInt8], level: Int32, dictionary: [UInt8]? = nil) throws -> [UInt8] {
        var z = z_stream()
        XCTAssertEqual(deflateInit2_(&z, level, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY, zlibVersion(), Int32(MemoryLayout<z_stream>.size)), Z_OK)
        defer { deflateEnd(&z) }
        if let dictionary {
            XCTAssertEqual(dictionary.withUnsafeBytes { deflateSetDictionary(&z, $0.baseAddress!.assumingMemoryBound(to: Bytef.self), UInt32($0.count)) }, Z_OK)
        }
        var input = data
        var out = [UInt8](repeating: 0, count: GzipFraming.outputCapacity(forChunkOf: data.count))
        let n: Int = input.withUnsafeMutableBytes { i in
            out.withUnsafeMutableBytes { o in
                z.next_in = i.baseAddress!.assumingMemoryBound(to: Bytef.self)
                z.avail_in = UInt32(i.count)
                z.next_out = o.baseAddress!.assumingMemoryBound(to: Bytef.self)
                z.avail_out = UInt32(o.count)
                XCTAssertEqual(deflate(&z, Z_SYNC_FLUSH), Z_OK)
                return o.count - Int(z.avail_out)
            }
        }
        return Array(out.prefix(n))
    }

    private func firstIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if Array(haystack[i..<(i + needle.count)]) == needle { return i }
        }
        return nil
    }

    private func sha256Hex(_ bytes: [UInt8]) throws -> String {
        let dir = try TestSupport.tempDir(self)
        let file = dir.appendingPathComponent("bytes-\(bytes.count)").path
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        return try TestSupport.sha256(file)
    }
}
