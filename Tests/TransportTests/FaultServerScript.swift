/// The test HTTP server (Python's ThreadingHTTPServer), written to a temp file by `FaultServer`.
///
/// URL shapes:
/// - `/plan/<key>/<step>,<step>,…` — attempt n of `key` performs step n (the last repeats):
///   `ok` echo as JSON · `500` · `503ra<N>` 503 + Retry-After N s · `503date<N>` Retry-After as an
///   HTTP-date N s ahead · `429` · `drop` read half the body then cut the connection · `slow`
///   trickle the answer at 2 B/s · `throttle400` EC2 RequestLimitExceeded with 400 · `notfound`
///   S3 NoSuchKey 404 · `sig403` SignatureDoesNotMatch echoing the Authorization header ·
///   `json400` ARM-style JSON error · `html502` an HTML page · `gone404` a custom code 404
/// - `/stats/<key>` — attempts seen: count, `x-test-stamp` values, client ports, times
/// - `/download/<size>` — `size` bytes of the pattern byte(i) = i % 251
/// - anything else — echo
let faultServerScript = #"""
import hashlib, json, socket, sys, threading, time, ssl
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from email.utils import formatdate

state = {}
lock = threading.Lock()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self, key):
        with lock:
            s = state.setdefault(key, {"count": 0, "stamps": [], "ports": [], "times": []})
            s["count"] += 1
            s["stamps"].append(self.headers.get("x-test-stamp"))
            s["ports"].append(self.client_address[1])
            s["times"].append(time.time())
            return s["count"]

    def read_body(self, limit=None):
        n = int(self.headers.get("Content-Length") or 0)
        want = n if limit is None else min(n, limit)
        h = hashlib.sha256()
        got = 0
        while got < want:
            chunk = self.rfile.read(min(want - got, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
        return got, h.hexdigest()

    def reply(self, status, body=b"", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def echo(self, attempt=0):
        length, digest = self.read_body()
        path, _, query = self.path.partition("?")
        out = {
            "method": self.command, "path": path, "query": query,
            "headers": [[k, v] for k, v in self.headers.items()],
            "length": length, "sha256": digest, "attempt": attempt,
            "version": self.request_version,
        }
        self.reply(200, json.dumps(out), [("Content-Type", "application/json"), ("x-amz-request-id", "ECHO-REQ")])

    def handle_any(self):
        path = self.path.partition("?")[0]
        parts = path.strip("/").split("/")
        if parts[0] == "stats" and len(parts) > 1:
            with lock:
                s = state.get(parts[1], {"count": 0, "stamps": [], "ports": [], "times": []})
                body = json.dumps(s)
            self.reply(200, body, [("Content-Type", "application/json")])
            return
        if parts[0] == "download" and len(parts) > 1:
            self.read_body()
            size = int(parts[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            pattern = bytes(i % 251 for i in range(251 * 4096))
            sent = 0
            while sent < size:
                off = sent % 251
                chunk = pattern[off:off + min(size - sent, 251 * 4000)]
                self.wfile.write(chunk)
                sent += len(chunk)
            return
        if parts[0] != "plan" or len(parts) < 3:
            self.echo()
            return
        key = parts[1]
        steps = parts[2].split(",")
        n = self.record(key)
        step = steps[min(n, len(steps)) - 1]
        if step == "ok":
            self.echo(n)
        elif step == "500":
            self.read_body()
            self.reply(500, "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>")
        elif step.startswith("503ra"):
            self.read_body()
            self.reply(503, "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                       [("Retry-After", step[5:])])
        elif step.startswith("503date"):
            self.read_body()
            when = formatdate(time.time() + float(step[7:]), usegmt=True)
            self.reply(503, "<Error><Code>ServerBusy</Code><Message>busy</Message></Error>", [("Retry-After", when)])
        elif step == "429":
            self.read_body()
            self.reply(429, json.dumps({"error": {"code": "TooManyRequests", "message": "too many"}}))
        elif step == "drop":
            n = int(self.headers.get("Content-Length") or 0)
            self.read_body(limit=n // 2)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif step == "slow":
            self.read_body()
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(60):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass
            self.close_connection = True
        elif step == "throttle400":
            self.read_body()
            self.reply(400, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
                       "<Message>Request limit exceeded.</Message></Error></Errors><RequestID>ec2-req-1</RequestID></Response>")
        elif step == "notfound":
            self.read_body()
            self.reply(404, "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>",
                       [("x-amz-request-id", "REQ-404-XYZ")])
        elif step == "gone404":
            self.read_body()
            self.reply(404, json.dumps({"message": "snapshot does not exist", "__type": "ResourceNotFoundException"}))
        elif step == "sig403":
            self.read_body()
            auth = self.headers.get("Authorization", "")
            token = self.headers.get("x-amz-security-token", "")
            self.reply(403, "<Error><Code>SignatureDoesNotMatch</Code><Message>The signature does not match; "
                       "you sent " + auth + " with token " + token + " for " + self.path + "</Message></Error>",
                       [("x-ms-request-id", "REQ-403-ABC")])
        elif step == "json400":
            self.read_body()
            self.reply(400, json.dumps({"error": {"code": "InvalidParameter", "message": "The value of size is invalid."}}),
                       [("Content-Type", "application/json"), ("x-ms-request-id", "REQ-400-JSON")])
        elif step == "html502":
            self.read_body()
            self.reply(502, "<html><body>\n<h1>Bad gateway</h1>\n</body></html>")
        else:
            self.read_body()
            self.reply(400, "unknown step " + step)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = handle_any

class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

server = Server(("127.0.0.1", 0), Handler)
if len(sys.argv) == 3:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
# Stop when the test process goes away (stdin closes), whatever happens to it.
threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
server.serve_forever()
"""#
