import Foundation
import XCTest
@testable import EXT4
import CVMSupport

/// Damaged file systems give one clear `CVMError` naming the partition and inode, never a trap.
final class EXT4CorruptionTests: XCTestCase {
    typealias S = EXT4TestSupport

    typealias MemorySource = EXT4MemorySource

    let partition = "disk.raw partition 2"

    func makeImage(mkfs: [String] = ["-t", "ext4", "-b", "4096", "-I", "256"]) throws -> MemorySource {
        let dir = try S.tempDir(self)
        let tree = dir + "/tree"
        try SampleTree.build(at: tree, bigSize: 300_000)
        try S.run("mke2fs", ["-F", "-q"] + mkfs + ["-d", tree, dir + "/fs.img", "8M"])
        return MemorySource([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/fs.img"))))
    }

    /// Reads everything a caller might: every entry and every file's content.
    func readAll(_ source: MemorySource) throws {
        let reader = try EXT4Reader(source: source, name: partition)
        var buffer = [UInt8](repeating: 0, count: 65536)
        try reader.walk { e in
            guard e.metadata.type == .regular else { return }
            let f = try reader.openFile(e.inodeNumber)
            var offset: UInt64 = 0
            while offset < min(f.size, 4 << 20) {
                let n = Int(min(UInt64(buffer.count), f.size - offset))
                try buffer.withUnsafeMutableBytes { try f.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: offset) }
                offset += UInt64(n)
            }
        }
    }

    func assertInvalid(_ source: MemorySource, contains parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try readAll(source), file: file, line: line) { error in
            guard let e = error as? CVMError else { return XCTFail("not a CVMError: \(error)", file: file, line: line) }
            for p in parts { XCTAssertTrue(e.message.contains(p), "'\(e.message)' lacks '\(p)'", file: file, line: line) }
            XCTAssertFalse(e.message.contains("\n"), file: file, line: line)
        }
    }

    /// Byte offset of inode `n`'s record.
    func inodeOffset(_ source: MemorySource, _ n: UInt32) throws -> Int {
        let reader = try EXT4Reader(source: source, name: partition)
        let ipg = reader.sb.inodesPerGroup
        let group = Int((n - 1) / ipg)
        return Int(reader.groups[group].inodeTable) * reader.blockSize + Int((n - 1) % ipg) * Int(reader.sb.inodeSize)
    }

    func inodeNumber(_ source: MemorySource, _ path: String) throws -> UInt32 {
        try XCTUnwrap(try EXT4Reader(source: source, name: partition).entries().first { $0.path == path }).inodeNumber
    }

    func testBadSuperblockMagic() throws {
        let source = try makeImage()
        source.bytes[1024 + 0x38] = 0
        assertInvalid(source, contains: [partition, "magic"])
    }

    func testUnsupportedFeatureIsNamed() throws {
        let source = try makeImage()
        source.bytes[1024 + 0x60] |= 0x10                      // meta_bg
        assertInvalid(source, contains: [partition, "meta_bg"])
    }

    func testImpossibleCounts() throws {
        let source = try makeImage()
        source.bytes[1024 + 0x4] = 0xFF; source.bytes[1024 + 0x7] = 0x7F   // blocks count far beyond the partition
        assertInvalid(source, contains: [partition, "groups"])
        let second = try makeImage()
        second.bytes[1024 + 0x28] = 0x01; second.bytes[1024 + 0x29] = 0; second.bytes[1024 + 0x2A] = 0   // inodes per group
        assertInvalid(second, contains: [partition, "inode"])
    }

    func testCorruptExtentHeaderNamesTheInode() throws {
        let source = try makeImage()
        let n = try inodeNumber(source, "/big.bin")
        let at = try inodeOffset(source, n) + 0x28
        source.bytes[at] = 0x00                                  // extent magic 0xF30A → 0xF300
        assertInvalid(source, contains: [partition, "inode \(n)", "extent header"])
    }

    func testExtentPointingOutsideTheFileSystem() throws {
        let source = try makeImage()
        let n = try inodeNumber(source, "/big.bin")
        let at = try inodeOffset(source, n) + 0x28 + 12 + 8     // first extent's ee_start_lo
        source.bytes[at + 3] = 0x7F
        assertInvalid(source, contains: [partition, "inode \(n)", "outside the file system"])
    }

    func testCorruptDirectoryEntry() throws {
        let source = try makeImage()
        let reader = try EXT4Reader(source: source, name: partition)
        let root = try reader.rawInode(2)
        let block = try XCTUnwrap(try reader.runs(of: root, number: 2).first).physical
        let at = Int(block) * reader.blockSize + 12 + 4          // rec_len of ".."
        source.bytes[at] = 0x03; source.bytes[at + 1] = 0
        assertInvalid(source, contains: [partition, "directory inode 2", "rec_len"])
    }

    /// Truncated partitions are refused up front, and the fuzz entry point survives them.
    func testTruncatedPartition() throws {
        let source = try makeImage()
        let full = source.bytes
        source.bytes = Array(full.prefix(full.count / 2))
        assertInvalid(source, contains: [partition, "more than the partition"])
        for cut in [0, 100, 1500, 4096, 70_000, full.count - 1] { EXT4FuzzTarget.parse(Array(full.prefix(cut))) }
        EXT4FuzzTarget.parse(full)
    }

    /// Random damage to metadata and directory blocks: every failure is a CVMError.
    func testRandomDamageNeverTraps() throws {
        for mkfs in [["-t", "ext4", "-b", "4096", "-I", "256"], ["-t", "ext2", "-b", "1024", "-I", "128"], ["-t", "ext4", "-O", "inline_data", "-I", "256"]] {
            let source = try makeImage(mkfs: mkfs)
            let reader = try EXT4Reader(source: source, name: partition)
            // Damage lands where the structures are: superblock, descriptors, bitmaps, inode
            // tables and the first directory and extent blocks.
            let metadataEnd = min(source.bytes.count, Int(reader.groups[0].inodeTable) * reader.blockSize
                                  + Int(reader.sb.inodesPerGroup) * Int(reader.sb.inodeSize) / 8 + 64 * reader.blockSize)
            var seed: UInt64 = 0x1234_5678
            func next() -> UInt64 { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed }
            var failures = 0
            for _ in 0..<1000 {
                var changed: [(Int, UInt8)] = []
                for _ in 0..<(1 + Int(next() % 8)) {
                    let at = 1024 + Int(next() % UInt64(metadataEnd - 1024))
                    changed.append((at, source.bytes[at]))
                    source.bytes[at] = UInt8(truncatingIfNeeded: next())
                }
                do { try readAll(source) } catch let e as CVMError {
                    failures += 1
                    XCTAssertTrue(e.message.hasPrefix(partition), e.message)
                } catch {
                    XCTFail("not a CVMError: \(error)")
                }
                for (at, old) in changed.reversed() { source.bytes[at] = old }
            }
            XCTAssertGreaterThan(failures, 0)
        }
    }
}
