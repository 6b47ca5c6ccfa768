"""What the fault-injecting proxies of the provider tests share (tests only).

Each proxy sits on 127.0.0.1 in front of an emulator written by others (moto, the page-blob
server, gcp-storage-emulator), fails chosen requests once, and forwards everything else with the
path and every signed header untouched, so the upstream still checks SigV4 / SharedKey / tokens.
"""
import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Hop-by-hop or recomputed headers: never copied from one side to the other.
_REQUEST_SKIP = ("connection", "transfer-encoding", "content-length", "expect")
_RESPONSE_SKIP = ("transfer-encoding", "connection", "content-length", "server", "date")


class Faults:
    """Which requests already failed once, and how many faults of each kind were injected."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = set()
        self.counts = {}

    def first_time(self, key):
        with self.lock:
            if key in self.seen:
                return False
            self.seen.add(key)
            return True

    def count(self, kind, amount=1):
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + amount

    def snapshot(self):
        with self.lock:
            return dict(self.counts)


class ForwardingHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler with the answer/cut/forward primitives; subclasses set `upstream_port`."""

    protocol_version = "HTTP/1.1"
    upstream_port = 0
    upstream_timeout = 60

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def cut(self):
        """Closes the connection without an answer (the client sees a dropped connection)."""
        self.close_connection = True
        self.connection.shutdown(2)

    def forward(self, method, path, body):
        """Sends the request upstream as received; returns (status, body, headers to relay)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=self.upstream_timeout)
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in self.headers.items():
            if k.lower() not in _REQUEST_SKIP:
                conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        out = [(k, v) for k, v in r.getheaders() if k.lower() not in _RESPONSE_SKIP]
        conn.close()
        return r.status, data, out

    def relay(self, method, path, body):
        status, data, headers = self.forward(method, path, body)
        self.answer(status, data, headers)
        return status


def serve(port, handler):
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.serve_forever()
