"""The official google-cloud-storage client against the emulator (tests and bench only).

download ENDPOINT BUCKET OBJECT DEST  -> JSON {size, md5Hash, crc32c, local_md5, local_crc32c}
    (the client itself checks the download against the server's hashes)
upload ENDPOINT BUCKET OBJECT SRC CHUNK_BYTES -> JSON {size, md5Hash, crc32c, seconds}
hash FILE -> JSON {size, md5, crc32c} (base64, as GCS writes them)
"""
import base64
import hashlib
import json
import os
import sys
import time

import google_crc32c


def file_hashes(path):
    md5 = hashlib.md5()
    crc = google_crc32c.Checksum()
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            md5.update(block)
            crc.update(block)
            size += len(block)
    return {"size": size, "md5": base64.b64encode(md5.digest()).decode(),
            "crc32c": base64.b64encode(crc.digest()).decode()}


def client(endpoint):
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    return storage.Client(project="cvm-test", credentials=AnonymousCredentials())


cmd = sys.argv[1]
if cmd == "hash":
    json.dump(file_hashes(sys.argv[2]), sys.stdout)
elif cmd == "download":
    endpoint, bucket, name, dest = sys.argv[2:6]
    bucket_ref = client(endpoint).bucket(bucket)
    blob = bucket_ref.get_blob(name)
    # A fresh Blob: the stored mediaLink names the host the upload came through (the proxy).
    bucket_ref.blob(name).download_to_filename(dest, checksum="md5")
    local = file_hashes(dest)
    json.dump({"size": blob.size, "md5Hash": blob.md5_hash, "crc32c": blob.crc32c,
               "local_md5": local["md5"], "local_crc32c": local["crc32c"]}, sys.stdout)
elif cmd == "upload":
    endpoint, bucket, name, src, chunk = sys.argv[2:7]
    blob = client(endpoint).bucket(bucket).blob(name, chunk_size=int(chunk))
    start = time.monotonic()
    blob.upload_from_filename(src, checksum="crc32c")
    seconds = time.monotonic() - start
    blob.reload()
    json.dump({"size": blob.size, "md5Hash": blob.md5_hash, "crc32c": blob.crc32c, "seconds": seconds}, sys.stdout)
else:
    sys.exit("unknown command " + cmd)
