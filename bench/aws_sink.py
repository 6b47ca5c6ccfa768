"""A discard server that speaks just enough S3 multipart, EBS direct and EC2 DescribeSnapshots
for an uploader to run to completion: bodies are read and thrown away, bytes counted.
It checks nothing (moto does that in the tests); it only takes the cloud's speed out of the
measurement so two clients can be compared. `GET /sink-stats` answers and resets the counters.
Usage: python3 aws_sink.py PORT"""
import json, sys, threading, uuid
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

lock = threading.Lock()
stats = {"requests": 0, "body_bytes": 0}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def drain(self):
        n = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass   # trailers
                    break
                while size:
                    got = len(self.rfile.read(min(size, 1 << 20)))
                    n += got; size -= got
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                got = len(self.rfile.read(min(left, 1 << 20)))
                if not got:
                    break
                n += got; left -= got
        with lock:
            stats["requests"] += 1
            stats["body_bytes"] += n
        return n

    def reply(self, status, body=b"", ctype="application/xml", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        path, method = self.path, self.command
        if path == "/sink-stats":
            with lock:
                body = json.dumps(stats).encode()
                stats.update(requests=0, body_bytes=0)
            return self.reply(200, body, "application/json")
        raw = b""
        if method == "POST" and (path == "/" or "uploadId=" in path):
            left = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(left)   # small control bodies are read, not counted
        else:
            self.drain()
        if method == "POST" and path == "/snapshots":
            body = json.dumps({"SnapshotId": "snap-" + uuid.uuid4().hex[:17], "Status": "pending",
                               "BlockSize": 524288, "VolumeSize": 4}).encode()
            return self.reply(201, body, "application/json")
        if method == "PUT" and path.startswith("/snapshots/"):
            return self.reply(201, b"{}", "application/json",
                              [("x-amz-Checksum", self.headers.get("x-amz-Checksum", "")),
                               ("x-amz-Checksum-Algorithm", "SHA256")])
        if method == "POST" and path.startswith("/snapshots/completion/"):
            return self.reply(202, b'{"Status":"completed"}', "application/json")
        if method == "POST" and path == "/":
            snap = raw.decode().split("SnapshotId.1=")[-1].split("&")[0]
            return self.reply(200, ("<DescribeSnapshotsResponse><requestId>r</requestId><snapshotSet><item>"
                                    "<snapshotId>%s</snapshotId><status>completed</status><progress>100%%</progress>"
                                    "</item></snapshotSet></DescribeSnapshotsResponse>" % snap).encode())
        if method == "POST" and (path.endswith("?uploads") or path.endswith("?uploads=")):
            bucket, _, key = path.split("?")[0].lstrip("/").partition("/")
            return self.reply(200, ("<InitiateMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key>"
                                    "<UploadId>%s</UploadId></InitiateMultipartUploadResult>" % (bucket, key, uuid.uuid4().hex)).encode())
        if method == "PUT" and "partNumber=" in path:
            return self.reply(200, b"", headers=[("ETag", '"%s"' % uuid.uuid4().hex)])
        if method == "POST" and "uploadId=" in path:
            bucket, _, key = path.split("?")[0].lstrip("/").partition("/")
            return self.reply(200, ("<CompleteMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key>"
                                    "<ETag>\"sink-10\"</ETag></CompleteMultipartUploadResult>" % (bucket, key)).encode())
        if method == "PUT":
            return self.reply(200, b"", headers=[("ETag", '"%s"' % uuid.uuid4().hex)])
        return self.reply(404, b"<Error><Code>NotImplemented</Code></Error>")

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
server.daemon_threads = True
server.serve_forever()
