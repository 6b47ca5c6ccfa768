"""Reads a page blob back with Microsoft's own SDK (azure-storage-blob's BlobClient).

usage: blob_client.py download CONNECTION_STRING CONTAINER BLOB OUT
prints JSON {"size", "blob_type", "content_md5" (base64 or null), "ranges": [[start, end_exclusive], ...]}
"""
import base64, json, sys

from azure.storage.blob import BlobClient

command, connection, container, name = sys.argv[1:5]
client = BlobClient.from_connection_string(connection, container, name)
if command == "download":
    props = client.get_blob_properties()
    with open(sys.argv[5], "wb") as f:
        client.download_blob(max_concurrency=4).readinto(f)
    ranges, _ = client.get_page_ranges()
    md5 = props.content_settings.content_md5
    json.dump({"size": props.size, "blob_type": str(props.blob_type.value if hasattr(props.blob_type, "value") else props.blob_type),
               "content_md5": base64.b64encode(md5).decode() if md5 else None,
               "ranges": [[r["start"], r["end"] + 1] for r in ranges]}, sys.stdout)
else:
    sys.exit(f"unknown command {command}")
