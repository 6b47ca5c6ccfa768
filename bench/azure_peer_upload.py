"""The peer for bench/upload-azure.sh: Microsoft's azure-storage-blob SDK uploading a fixed VHD
as a page blob the documented way (BlobClient.upload_blob with blob_type=PageBlob, which skips
all-zero 4 MiB chunks), then setting the blob's Content-MD5 (MD5 of the whole file), as cvm-cli does.

usage: azure_peer_upload.py CONNECTION_STRING CONTAINER BLOB FILE [CONCURRENCY]
"""
import base64, hashlib, os, sys

from azure.storage.blob import BlobClient, ContentSettings

connection, container, name, path = sys.argv[1:5]
concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 8
client = BlobClient.from_connection_string(connection, container, name)
size = os.path.getsize(path)
with open(path, "rb") as f:
    client.upload_blob(f, blob_type="PageBlob", length=size, max_concurrency=concurrency, overwrite=True)
md5 = hashlib.md5()
with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(8 << 20), b""):
        md5.update(chunk)
client.set_http_headers(ContentSettings(content_md5=md5.digest()))
print(base64.b64encode(md5.digest()).decode())
