/// A proxy in front of moto that fails the first attempt of chosen requests, then forwards
/// retries untouched (Host and every signed header kept, so moto still checks SigV4):
/// - StartSnapshot (POST /snapshots): 500
/// - PutSnapshotBlock of even block indices: 503 + Retry-After 0 (throttling)
/// - PutSnapshotBlock of block indices ≡ 1 mod 4: the body is read, then the connection is cut
/// - CompleteSnapshot: 500 InternalError
/// - EC2 DescribeSnapshots: 503 RequestLimitExceeded
/// - S3 UploadPart 2: 500; CompleteMultipartUpload: 503 SlowDown
/// - any PUT whose path contains `/stall-`: held 30 s before it is forwarded (interrupt tests)
/// `GET /proxy-stats` answers how many failures were injected per kind.
/// As S3 does (moto does not), every complete S3 UploadPart body is checked against its
/// `x-amz-checksum-sha256` (400 BadDigest) and a signed `x-amz-content-sha256` (400
/// XAmzContentSHA256Mismatch); `part_checksum_ok` / `part_checksum_bad` count the outcomes.
/// With a third argument `count:SECONDS` it injects no faults: each PUT waits SECONDS before its
/// body is read (so a client killed meanwhile has delivered nothing), and the stats count the
/// bytes of complete PUT bodies (`put_bytes`; a body cut short by a killed client is counted in
/// `put_cut_bytes` and not forwarded) and the PUTs the upstream accepted (`put_ok`).
public let faultProxyScript = #"""
import base64, hashlib, http.client, json, re, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

upstream_port = int(sys.argv[2])
count_delay = float(sys.argv[3].split(":")[1]) if len(sys.argv) > 3 and sys.argv[3].startswith("count:") else None
seen = set()
stats = {}
lock = threading.Lock()

def first_time(key):
    with lock:
        if key in seen:
            return False
        seen.add(key)
        return True

def count(kind):
    with lock:
        stats[kind] = stats.get(kind, 0) + 1

def part_digest_error(method, path, headers, body):
    if method != "PUT" or "partNumber=" not in path:
        return None
    sha = hashlib.sha256(body)
    declared = headers.get("x-amz-checksum-sha256")
    if declared is not None and declared != base64.b64encode(sha.digest()).decode():
        count("part_checksum_bad")
        return b"<Error><Code>BadDigest</Code><Message>The sha256 you specified did not match the calculated checksum.</Message></Error>"
    signed = headers.get("x-amz-content-sha256")
    if signed not in (None, "UNSIGNED-PAYLOAD") and signed != sha.hexdigest():
        count("part_checksum_bad")
        return b"<Error><Code>XAmzContentSHA256Mismatch</Code><Message>The provided 'x-amz-content-sha256' header does not match what was computed.</Message></Error>"
    if declared is not None:
        count("part_checksum_ok")
    return None

class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        if count_delay is not None and self.command == "PUT":
            time.sleep(count_delay)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        path, method = self.path, self.command
        if path == "/proxy-stats":
            return self.answer(200, json.dumps(stats).encode())
        if count_delay is not None:
            if method == "PUT":
                key = "put_bytes" if len(body) == n else "put_cut_bytes"
                with lock:
                    stats[key] = stats.get(key, 0) + len(body)
                if len(body) != n:
                    self.close_connection = True
                    return
            digest_error = part_digest_error(method, path, self.headers, body)
            if digest_error:
                return self.answer(400, digest_error)
            return self.forward(method, path, body)
        fault = None
        if method == "PUT" and "/stall-" in path:
            count("stall")
            time.sleep(30)
        m = re.match(r"^/snapshots/[^/]+/blocks/(\d+)$", path)
        if method == "POST" and path == "/snapshots":
            fault = "start500"
        elif method == "PUT" and m and int(m.group(1)) % 2 == 0:
            fault = "block503"
        elif method == "PUT" and m and int(m.group(1)) % 4 == 1:
            fault = "blockdrop"
        elif method == "POST" and path.startswith("/snapshots/completion/"):
            fault = "complete500"
        elif method == "POST" and path == "/" and b"Action=DescribeSnapshots" in body:
            fault = "describe503"
        elif method == "PUT" and "partNumber=2&" in path:
            fault = "part500"
        elif method == "POST" and "uploadId=" in path:
            fault = "completeupload503"
        digest_error = part_digest_error(method, path, self.headers, body)
        if digest_error:
            return self.answer(400, digest_error)
        if fault and first_time(fault + " " + path):
            count(fault)
            if fault == "blockdrop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault in ("block503",):
                return self.answer(503, b'{"message":"slow down"}', [("Retry-After", "0"), ("x-amzn-ErrorType", "ThrottlingException"), ("Content-Type", "application/json")])
            if fault == "describe503":
                return self.answer(503, b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>x</RequestID></Response>")
            if fault == "completeupload503":
                return self.answer(503, b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>", [("Retry-After", "0")])
            return self.answer(500, b"<Error><Code>InternalError</Code><Message>injected</Message></Error>")
        self.forward(method, path, body)

    def forward(self, method, path, body):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "connection", "transfer-encoding", "content-length")}
        conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        out = [(k, v) for k, v in r.getheaders() if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date")]
        conn.close()
        if method == "PUT" and 200 <= r.status < 300:
            count("put_ok")
        self.answer(r.status, data, out)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Proxy)
server.daemon_threads = True
server.serve_forever()
"""#
