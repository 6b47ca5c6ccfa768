"""A proxy in front of the page-blob server that fails the first attempt of chosen requests,
then forwards retries untouched (path and every signed header kept, so SharedKey is still
checked upstream):
- Create Container: 503 ServerBusy + Retry-After 1
- Put Blob: 500 InternalError
- Put Page, by the page's first 512-byte sector number modulo 5:
  0 -> 503 ServerBusy + Retry-After 0, 1 -> 429 TooManyRequests, 2 -> the body is read, then the
  connection is cut, 3 -> held 1.5 s, then forwarded (slow), 4 -> forwarded
- Set Blob Properties: 500 OperationTimedOut
GET /_proxy/stats answers how many faults were injected per kind.

usage: fault_proxy.py PORT UPSTREAM_PORT
"""
import http.client, json, re, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

upstream_port = int(sys.argv[2])
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


def error(code, message):
    return f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'.encode()


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
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        path, method = self.path, self.command
        if path == "/_proxy/stats":
            with lock:
                return self.answer(200, json.dumps(stats).encode())
        fault = None
        key = method + " " + path
        if method == "PUT" and path.endswith("?restype=container"):
            fault = "container503"
        elif method == "PUT" and "?" not in path and self.headers.get("x-ms-blob-type") == "PageBlob":
            fault = "putblob500"
        elif method == "PUT" and path.endswith("?comp=page"):
            m = re.match(r"bytes=(\d+)-", self.headers.get("x-ms-range", ""))
            sector = int(m.group(1)) // 512 if m else 0
            fault = ["page503", "page429", "pagedrop", "pageslow", None][sector % 5]
            key += " " + self.headers.get("x-ms-range", "")
        elif method == "PUT" and path.endswith("?comp=properties"):
            fault = "properties500"
        if fault and first_time(key):
            count(fault)
            if fault == "pagedrop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "pageslow":
                time.sleep(1.5)
            elif fault in ("container503", "page503"):
                retry = "1" if fault == "container503" else "0"
                return self.answer(503, error("ServerBusy", "The server is busy."),
                                   [("Retry-After", retry), ("x-ms-error-code", "ServerBusy"), ("Content-Type", "application/xml")])
            elif fault == "page429":
                return self.answer(429, error("TooManyRequests", "Too many requests."), [("x-ms-error-code", "TooManyRequests")])
            elif fault == "properties500":
                return self.answer(500, error("OperationTimedOut", "Operation could not be completed within the specified time."),
                                   [("x-ms-error-code", "OperationTimedOut")])
            else:
                return self.answer(500, error("InternalError", "The server encountered an internal error."),
                                   [("x-ms-error-code", "InternalError")])
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "transfer-encoding", "content-length")}
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
        self.answer(r.status, data, out)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Proxy)
server.daemon_threads = True
server.serve_forever()
