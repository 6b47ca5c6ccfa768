import CVMSupport
import DiskImage
import EXT4

/// One partition of a virtual disk as the byte source the ext4 reader needs.
final class PartitionBlockSource: EXT4BlockSource {
    let disk: DiskReader
    let offset: UInt64
    let size: UInt64

    init(disk: DiskReader, offset: UInt64, size: UInt64) {
        self.disk = disk
        self.offset = offset
        self.size = size
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at position: UInt64) throws {
        guard position <= size, UInt64(buffer.count) <= size - position else {
            throw CVMError.invalid("read of \(buffer.count) bytes at \(position) is outside the data partition (\(size) bytes)")
        }
        try disk.read(into: buffer, at: offset + position)
    }
}
