@testable import AzureProvider
import CVMCrypto
import CVMSupport
import DiskImage
import Foundation
import XCTest

final class AzureProviderUnitTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("cvm-azure-unit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let dir { try? FileManager.default.removeItem(at: dir) }
    }

    func testDestinationParsing() throws {
        let d = try AzureBlobDestination(parsing: "az://vhds/images/my disk.vhd")
        XCTAssertEqual(d.container, "vhds")
        XCTAssertEqual(d.blob, "images/my disk.vhd")
        XCTAssertEqual(d.description, "az://vhds/images/my disk.vhd")
        for bad in ["az://ab/x", "az://Upper/x", "az://a--b/x", "az://-abc/x", "az://abc-/x", "az://abc", "az://abc/", "az://abc/x.",
                    "az://" + String(repeating: "a", count: 64) + "/x", "s3://abc/x"] {
            XCTAssertThrowsError(try AzureBlobDestination(parsing: bad), bad) { error in
                XCTAssertEqual((error as? CVMError)?.kind, .usage, bad)
            }
        }
        XCTAssertTrue(AzureBlobDestination.matches("AZ://x/y"))
        XCTAssertFalse(AzureBlobDestination.matches("gs://x/y"))
    }

    func testPageListParsingAndSubtraction() throws {
        let xml = """
        <?xml version="1.0" encoding="utf-8"?><PageList><PageRange><Start>0</Start><End>511</End></PageRange>\
        <PageRange><Start>512</Start><End>1023</End></PageRange><PageRange><Start>4096</Start><End>8191</End></PageRange>\
        <ClearRange><Start>1024</Start><End>4095</End></ClearRange><NextMarker>abc</NextMarker></PageList>
        """
        let list = try PageList(xml: xml)
        XCTAssertEqual(list.ranges, [0..<1024, 4096..<8192])
        XCTAssertEqual(list.nextMarker, "abc")
        XCTAssertNil(try PageList(xml: "<PageList><NextMarker /></PageList>").nextMarker)
        XCTAssertThrowsError(try PageList(xml: "<PageList><PageRange><Start>9</Start><End>x</End></PageRange></PageList>"))

        let covered: [Range<UInt64>] = [0..<1024, 4096..<8192, 10000..<10512]
        XCTAssertEqual(subtracting(covered, from: 0..<512), [])
        XCTAssertEqual(subtracting(covered, from: 512..<5120), [1024..<4096])
        XCTAssertEqual(subtracting(covered, from: 2048..<12000), [2048..<4096, 8192..<10000, 10512..<12000])
        XCTAssertEqual(subtracting([], from: 5..<9), [5..<9])
    }

    /// The stream read in 4 MiB windows, skipping windows with nothing stored, is byte for byte
    /// the file the converter writes (same padding, same footer and unique ID).
    func testFixedVHDStreamEqualsTheConverterOutput() throws {
        let raw = try makeRaw(size: (9 << 20) + 3584)
        let converted = dir.appendingPathComponent("out.vhd").path
        _ = try DiskConversion.run(input: raw, output: converted, format: .vhd, overwrite: true, options: WriterOptions(timestamp: 1_700_000_000))
        let expected = [UInt8](try Data(contentsOf: URL(fileURLWithPath: converted)))

        let stream = try FixedVHDStream.open(raw, timestamp: 1_700_000_000)
        XCTAssertFalse(stream.isPassThrough)
        XCTAssertEqual(stream.size, UInt64(expected.count))
        XCTAssertEqual(stream.size, (10 << 20) + 512)
        var got = [UInt8](repeating: 0, count: Int(stream.size))
        var windows = StoredChunkIndices(ranges: try stream.storedRanges(), chunkSize: 4 << 20, limit: stream.size)
        var read = 0
        while let w = windows.next() {
            let start = Int(w) * (4 << 20)
            let end = min(start + (4 << 20), got.count)
            try got.withUnsafeMutableBytes { try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[start..<end]), at: UInt64(start)) }
            read += 1
        }
        XCTAssertEqual(read, 2, "the middle window holds nothing and is skipped")
        XCTAssertTrue(got == expected)
        XCTAssertThrowsError(try got.withUnsafeMutableBytes { try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<512]), at: 0) },
                             "reads must go forward")

        let asIs = try FixedVHDStream.open(converted)
        XCTAssertTrue(asIs.isPassThrough)
        XCTAssertEqual(asIs.size, UInt64(expected.count))
    }

    func testFeederSendsOnlyNonZeroPagesSkipsStoredOnesAndHashesEverything() throws {
        let raw = try makeRaw(size: (9 << 20) + 3584)
        let stream = try FixedVHDStream.open(raw, timestamp: 0)
        let converted = dir.appendingPathComponent("out.vhd").path
        _ = try DiskConversion.run(input: raw, output: converted, format: .vhd, overwrite: true, options: WriterOptions(timestamp: 0))
        let vhd = [UInt8](try Data(contentsOf: URL(fileURLWithPath: converted)))

        let written: [Range<UInt64>] = [0..<((1 << 20) + 4096)]   // a resumed blob holds the first data pages
        let feeder = try PageFeeder(stream: stream, written: written, maxPageSize: 64 << 10)
        var rebuilt = [UInt8](repeating: 0, count: vhd.count)
        var sent: UInt64 = 0
        var pages = 0
        while let page = try feeder.next() {
            XCTAssertEqual(page.offset % 512, 0)
            XCTAssertEqual(page.bytes.count % 512, 0)
            XCTAssertLessThanOrEqual(page.bytes.count, 64 << 10)
            XCTAssertFalse(page.range.overlaps(written[0]))
            for p in stride(from: 0, to: page.bytes.count, by: 512) {
                XCTAssertTrue(page.bytes[p..<(p + 512)].contains { $0 != 0 }, "zero page at \(page.offset + UInt64(p))")
            }
            rebuilt.replaceSubrange(Int(page.offset)..<Int(page.range.upperBound), with: page.bytes)
            sent += UInt64(page.bytes.count)
            pages += 1
            feeder.recycle(page)
        }
        XCTAssertGreaterThan(pages, 2, "the 70,000-byte run is cut into 64 KiB pages")
        XCTAssertEqual(Base64.encode(try feeder.finalizeMD5()), Base64.encode(MD5.hash(vhd)))
        // What was sent plus what the blob held is the whole VHD.
        rebuilt.replaceSubrange(0..<Int(written[0].upperBound), with: vhd[0..<Int(written[0].upperBound)])
        XCTAssertTrue(rebuilt == vhd)
        XCTAssertEqual(feeder.alreadyStoredBytes, 4096)
        XCTAssertGreaterThan(sent, 0)
    }

    func testStateStoreLocationModeAndMatching() throws {
        let xdg = AzureUploadStateStore(environment: ["XDG_CACHE_HOME": dir.path + "/xdg"], home: "/nonexistent")
        XCTAssertEqual(xdg.directory, dir.path + "/xdg/cvm-cli/resume")
        XCTAssertEqual(AzureUploadStateStore(environment: ["XDG_CACHE_HOME": "relative"], home: dir.path).directory,
                       dir.path + "/.cache/cvm-cli/resume")

        let raw = try makeRaw(size: 1 << 20)
        let url = "https://acct.blob.core.windows.net/c/b.vhd"
        let state = try AzureUploadState.describing(path: raw, blobURL: url, blobSize: (1 << 20) + 512, footerTimestamp: 5)
        try xdg.save(state)
        let path = xdg.path(for: url)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber
        XCTAssertEqual(mode?.intValue, 0o600)
        let loaded = try XCTUnwrap(xdg.load(blobURL: url))
        XCTAssertEqual(loaded, state)
        XCTAssertTrue(loaded.matches(try AzureUploadState.describing(path: raw, blobURL: url, blobSize: (1 << 20) + 512, footerTimestamp: 0)))
        XCTAssertNil(xdg.load(blobURL: url + "x"))

        // A changed file no longer matches.
        let fd = FileDescriptor(fd: open(raw, O_RDWR), path: raw)
        try fd.write([1, 2, 3], at: 0)
        try fd.truncate(to: 2 << 20)
        fd.close()
        XCTAssertFalse(loaded.matches(try AzureUploadState.describing(path: raw, blobURL: url, blobSize: (1 << 20) + 512, footerTimestamp: 5)))
        xdg.remove(blobURL: url)
        XCTAssertNil(xdg.load(blobURL: url))
    }

    // MARK: helpers

    /// Data in the first and last 4 MiB windows only, with partial sectors and a gap.
    private func makeRaw(size: UInt64) throws -> String {
        let path = dir.appendingPathComponent("disk-\(size).raw").path
        guard FileManager.default.createFile(atPath: path, contents: nil) else { throw CVMError.io("create") }
        let fd = FileDescriptor(fd: open(path, O_RDWR), path: path)
        defer { fd.close() }
        try fd.truncate(to: size)
        try fd.write([UInt8](repeating: 0xAB, count: 70_000), at: (1 << 20) + 100)
        try fd.write([UInt8](repeating: 0x5A, count: 512), at: (1 << 20) + 200_000)
        if size > 8 << 20 { try fd.write([UInt8](repeating: 0x11, count: 3000), at: size - 3000) }
        return path
    }
}
