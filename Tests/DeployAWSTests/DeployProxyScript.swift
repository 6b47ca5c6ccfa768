/// A proxy in front of moto that records every request (method, path, body) as one JSON line,
/// and with faults on fails the first attempt of chosen calls before forwarding retries
/// untouched (Host and every signed header kept, so moto still checks SigV4):
/// - EBS StartSnapshot: 500; PutSnapshotBlock of block 0: 503 throttling; of block 4: cut connection
/// - EC2 RegisterImage: 503 RequestLimitExceeded; DescribeImages: cut connection
/// - EC2 CreateSecurityGroup: 500; RunInstances: 400 RequestLimitExceeded; AllocateAddress: 503 Unavailable
/// `GET /proxy-stats` answers the injected failures per kind.
let deployProxyScript = #"""
import base64, http.client, json, re, sys, threading, urllib.parse
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

port, upstream_port, log_path, faults = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
seen, stats, lock = set(), {}, threading.Lock()

def first_time(key):
    with lock:
        if key in seen: return False
        seen.add(key); stats[key.split(" ")[0]] = stats.get(key.split(" ")[0], 0) + 1
        return True

class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers: self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        path, method = self.path, self.command
        if path == "/proxy-stats":
            return self.answer(200, json.dumps(stats).encode())
        action = None
        if method == "POST" and path == "/":
            action = (urllib.parse.parse_qs(body.decode()).get("Action") or [None])[0]
        with lock:
            with open(log_path, "a") as f:
                rec = {"method": method, "path": path, "action": action,
                       "body": body.decode() if action else "", "bodyLength": len(body),
                       "contentSha256": self.headers.get("x-amz-content-sha256"),
                       "authorization": (self.headers.get("Authorization") or "")[:40]}
                f.write(json.dumps(rec) + "\n")
        fault = None
        if faults:
            m = re.match(r"^/snapshots/[^/]+/blocks/(\d+)$", path)
            if method == "POST" and path == "/snapshots": fault = "start500"
            elif m and m.group(1) == "0": fault = "block503"
            elif m and m.group(1) == "4": fault = "blockdrop"
            elif action == "RegisterImage": fault = "register503"
            elif action == "DescribeImages": fault = "describeimagesdrop"
            elif action == "CreateSecurityGroup": fault = "creategroup500"
            elif action == "RunInstances": fault = "run400throttle"
            elif action == "AllocateAddress": fault = "allocate503"
        if fault and first_time(fault + " " + path):
            if fault.endswith("drop"):
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "block503":
                return self.answer(503, b'{"message":"slow down"}', [("Retry-After", "0"), ("x-amzn-ErrorType", "ThrottlingException")])
            if fault in ("register503", "run400throttle"):
                status = 503 if fault == "register503" else 400
                return self.answer(status, b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>x</RequestID></Response>")
            if fault == "allocate503":
                return self.answer(503, b"<Response><Errors><Error><Code>Unavailable</Code><Message>The service is unavailable.</Message></Error></Errors><RequestID>y</RequestID></Response>")
            return self.answer(500, b"<Response><Errors><Error><Code>InternalError</Code><Message>injected</Message></Error></Errors></Response>")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "connection", "transfer-encoding", "content-length")}
        conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items(): conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        out = [(k, v) for k, v in r.getheaders() if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date")]
        conn.close()
        self.answer(r.status, data, out)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

server = ThreadingHTTPServer(("127.0.0.1", port), Proxy)
server.daemon_threads = True
server.serve_forever()
"""#
