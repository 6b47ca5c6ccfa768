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
import json
import re
import sys
import time

from proxy_common import Faults, ForwardingHandler, serve

faults = Faults()


def error(code, message):
    return f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'.encode()


class Proxy(ForwardingHandler):
    upstream_port = int(sys.argv[2])

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        path, method = self.path, self.command
        if path == "/_proxy/stats":
            return self.answer(200, json.dumps(faults.snapshot()).encode())
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
        if fault and faults.first_time(key):
            faults.count(fault)
            if fault == "pagedrop":
                return self.cut()
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
        self.relay(method, path, body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


serve(int(sys.argv[1]), Proxy)
