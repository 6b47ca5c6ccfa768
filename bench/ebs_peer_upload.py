"""The peer of `cvm-cli upload DISK ebs://REGION`: the same EBS direct upload written with boto3
as its documentation shows (StartSnapshot, PutSnapshotBlock for non-zero 512 KiB blocks with
their SHA-256, 8 threads, CompleteSnapshot with the LINEAR aggregate). Reads a raw disk.
Usage: python3 ebs_peer_upload.py DISK   (endpoint and credentials from the AWS environment)"""
import base64, concurrent.futures, hashlib, os, sys
import boto3

BLOCK = 512 * 1024
path = sys.argv[1]
size = os.path.getsize(path)
ebs = boto3.client("ebs")
snap = ebs.start_snapshot(VolumeSize=(size + (1 << 30) - 1) >> 30, Timeout=60)["SnapshotId"]
zero = bytes(BLOCK)
fd = os.open(path, os.O_RDONLY)


def put(index):
    data = os.pread(fd, BLOCK, index * BLOCK).ljust(BLOCK, b"\0")
    if data == zero:
        return index, None
    digest = hashlib.sha256(data).digest()
    ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=index, BlockData=data, DataLength=BLOCK,
                           Checksum=base64.b64encode(digest).decode(), ChecksumAlgorithm="SHA256")
    return index, digest


digests = {}
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for index, digest in pool.map(put, range((size + BLOCK - 1) // BLOCK)):
        if digest:
            digests[index] = digest
aggregate = hashlib.sha256(b"".join(digests[i] for i in sorted(digests))).digest()
ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(digests), Checksum=base64.b64encode(aggregate).decode(),
                      ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
print(snap, len(digests))
