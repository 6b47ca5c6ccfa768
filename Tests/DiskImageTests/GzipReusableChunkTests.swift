import Foundation
import XCTest
import CZlib
@testable import DiskImage
import CVMSupport

/// Copying compressed chunks from an input archive into a new one (`GzipReusableChunks`):
/// only chunks that provably decode alone are copied, and the result reads back exactly.
final class GzipReusableChunkTests: XCTestCase {
    private let mib: UInt64 = 1 << 20

    func testChunksOfOwnArchiveAreCopiedOutsideTheChangedRange() throws {
        let dir = try TestSupport.tempDir(self)
        let src = dir.appendingPathComponent("src.raw").path
        try TestSupport.makeGPTDisk(at: src, seed: 31)
        // The input at level 1, so copied chunks are told apart from level-6 recompression.
        let input = dir.appendingPathComponent("in.tar.gz").path
        try TestSupport.convert(src, to: input, format: .tarGz, options: WriterOptions(compressionLevel: 1))

        let reader = try XCTUnwrap(try DiskImageFile.open(input) as? GCPTarGzReader)
        let chunks = try XCTUnwrap(reader.indexReusableChunks())
        try readAscending(reader)
        chunks.waitForChecks()
        // Every full chunk with data qualifies (zero chunks are left to the writer).
        let original = try DiskImageFile.open(src)
        var dataChunks = 0
        for k in 0..<Int(original.virtualSize / mib) {
            if !isAllZero(try original.bytes(count: Int(mib), at: UInt64(k) * mib).withUnsafeBytes { $0 }) {
                dataChunks += 1
                XCTAssertNotNil(chunks.chunk(k), "chunk \(k) holds data and was written independently")
            }
        }
        XCTAssertGreaterThan(dataChunks, 4)
        XCTAssertEqual(chunks.count, dataChunks)

        // A new archive of the same disk at level 6, reusing all but [8 MiB, 24 MiB).
        let changed = 8 * mib..<(24 * mib)
        func write(_ path: String) throws {
            let out = try AtomicOutputFile(path: path, overwrite: true)
            let writer = try GCPTarGzWriter(output: out.descriptor, inputVirtualSize: original.virtualSize, options: WriterOptions())
            try writer.reuseCompressedChunks(chunks, except: changed)
            try DiskConverter().convert(from: original, to: writer)
            try out.commit()
        }
        let a = dir.appendingPathComponent("a.tar.gz").path, b = dir.appendingPathComponent("b.tar.gz").path
        try write(a)
        try write(b)
        XCTAssertEqual(try TestSupport.sha256(a), try TestSupport.sha256(b), "reproducible")
        try TestSupport.run("gzip", ["-t", a])
        let back = dir.appendingPathComponent("back.raw").path
        try TestSupport.convert(a, to: back, format: .raw)
        try TestSupport.assertSameContent(src, "raw", back, "raw")

        // The copied chunks are in the output byte for byte; the changed range was compressed anew.
        let inBytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: input)))
        let outBytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: a)))
        var copied = 0, recompressed = 0
        for k in 0..<Int(original.virtualSize / mib) {
            guard let c = chunks.chunk(k) else { continue }
            let bytes = Array(inBytes[Int(c.range.lowerBound)..<Int(c.range.upperBound)])
            let found = contains(outBytes, bytes)
            if changed.contains(UInt64(k) * mib) { if !found { recompressed += 1 } } else {
                XCTAssertTrue(found, "chunk \(k) was not copied")
                copied += 1
            }
        }
        XCTAssertGreaterThan(copied, 0)
        XCTAssertGreaterThan(recompressed, 0, "chunks in the changed range are not copied")
    }

    /// Chunk boundaries on byte-aligned block boundaries are not enough: a chunk whose
    /// matches reach into the one before (sync flush without a reset) is never copied.
    func testDependentChunksAreNotCopiedAndIndependentOnesAre() throws {
        let chunkSize = GCPTarGzWriter.chunkSize
        let size = 6 * chunkSize
        // The same text in every chunk: a continuing compressor refers back across chunks.
        let text = TestSupport.compressibleBytes(count: chunkSize, seed: 32)
        let disk = (0..<6).flatMap { _ in text }
        for (flush, expectCopies) in [(Z_SYNC_FLUSH, false), (Z_FULL_FLUSH, true)] {
            let archive = try tarGz(disk: disk, chunkSize: chunkSize, flush: flush)
            let dir = try TestSupport.tempDir(self)
            let file = dir.appendingPathComponent("f\(flush).tar.gz").path
            try Data(archive).write(to: URL(fileURLWithPath: file))
            try TestSupport.run("gzip", ["-t", file])
            let reader = try GCPTarGzReader(source: FileByteSource(path: file))
            XCTAssertEqual(reader.virtualSize, UInt64(size))
            let chunks = try XCTUnwrap(reader.indexReusableChunks())
            try readAscending(reader)
            chunks.waitForChecks()
            if expectCopies {
                // The first chunk follows the tar header in the same flush, so it has no own start.
                XCTAssertEqual(chunks.count, 5, "flush \(flush)")
            } else {
                XCTAssertEqual(chunks.count, 0, "flush \(flush)")
            }
            for k in 0..<6 { if let c = chunks.chunk(k) { XCTAssertEqual(c.crc, crc32(text), "chunk \(k)") } }
        }
    }

    func testArchivesOfGzipAndPigzOfferNoChunks() throws {
        let dir = try TestSupport.tempDir(self)
        let raw = dir.appendingPathComponent("disk.raw").path
        try TestSupport.makeGPTDisk(at: raw, seed: 33)
        let tar = dir.appendingPathComponent("d.tar").path
        try TestSupport.run("tar", ["--format=gnu", "-cf", tar, "-C", dir.path, "disk.raw"])
        for tool in ["gzip", "pigz"] {
            let gz = dir.appendingPathComponent("d-\(tool).tar.gz").path
            try TestSupport.run("sh", ["-c", "\(tool) -6 -c '\(tar)' > '\(gz)'"])
            let reader = try XCTUnwrap(try DiskImageFile.open(gz) as? GCPTarGzReader)
            let chunks = try XCTUnwrap(reader.indexReusableChunks())
            try readAscending(reader)
            chunks.waitForChecks()
            XCTAssertEqual(chunks.count, 0, tool)
        }
    }

    // MARK: helpers

    private func readAscending(_ reader: DiskReader) throws {
        var buffer = [UInt8](repeating: 0, count: 4 << 20)
        var offset: UInt64 = 0
        while offset < reader.virtualSize {
            let n = Int(min(UInt64(buffer.count), reader.virtualSize - offset))
            try buffer.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: offset) }
            offset += UInt64(n)
        }
    }

    /// A GCP-style archive from one continuing raw deflate stream, flushed with `flush` after
    /// the tar header + first chunk and after every chunk.
    private func tarGz(disk: [UInt8], chunkSize: Int, flush: Int32) throws -> [UInt8] {
        let header = TarBlock.gnuRegularFileHeader(name: "disk.raw", size: UInt64(disk.count), mtime: 0)
        let end = Int(DiskGeometry.roundUp(UInt64(512 + disk.count + 1024), to: 10240))
        let tar = header + disk + [UInt8](repeating: 0, count: end - 512 - disk.count)
        var z = z_stream()
        XCTAssertEqual(deflateInit2_(&z, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY, zlibVersion(), Int32(MemoryLayout<z_stream>.size)), Z_OK)
        defer { deflateEnd(&z) }
        var body: [UInt8] = []
        var out = [UInt8](repeating: 0, count: 2 * chunkSize)
        // Pieces: header + chunk 0, chunks 1..n-1, the tar end.
        var cuts = [512 + chunkSize]
        while cuts.last! < 512 + disk.count { cuts.append(cuts.last! + chunkSize) }
        cuts.append(tar.count)
        var start = 0
        var input = tar
        for cut in cuts {
            let n: Int = input.withUnsafeMutableBytes { i in
                out.withUnsafeMutableBytes { o in
                    z.next_in = i.baseAddress!.assumingMemoryBound(to: Bytef.self) + start
                    z.avail_in = UInt32(cut - start)
                    z.next_out = o.baseAddress!.assumingMemoryBound(to: Bytef.self)
                    z.avail_out = UInt32(o.count)
                    XCTAssertEqual(deflate(&z, flush), Z_OK)
                    XCTAssertEqual(z.avail_in, 0)
                    return o.count - Int(z.avail_out)
                }
            }
            body += out.prefix(n)
            start = cut
        }
        return GzipFraming.memberHeader(mtime: 0, level: 6) + body + GzipFraming.finalEmptyBlock
            + GzipFraming.memberTrailer(crc: crc32(tar), length: UInt64(tar.count))
    }

    private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= haystack.count else { return false }
        return haystack.withUnsafeBytes { h in needle.withUnsafeBytes { n in
            var i = 0
            while i <= h.count - n.count {
                guard let p = memchr(h.baseAddress! + i, Int32(n[0]), h.count - n.count - i + 1) else { return false }
                i = UnsafeRawPointer(p) - h.baseAddress!
                if memcmp(p, n.baseAddress!, n.count) == 0 { return true }
                i += 1
            }
            return false
        } }
    }
}
