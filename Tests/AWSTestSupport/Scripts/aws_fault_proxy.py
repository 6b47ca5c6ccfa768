"""A proxy in front of moto that fails the first attempt of chosen requests, then forwards
retries untouched (Host and every signed header kept, so moto still checks SigV4):
- StartSnapshot (POST /snapshots): 500
- PutSnapshotBlock of even block indices: 503 + Retry-After 0 (throttling)
- PutSnapshotBlock of block indices = 1 mod 4: the body is read, then the connection is cut
- CompleteSnapshot: 500 InternalError
- EC2 DescribeSnapshots: 503 RequestLimitExceeded
- S3 UploadPart 2: 500; CompleteMultipartUpload: 503 SlowDown
- any PUT whose path contains `/stall-`: held 30 s before it is forwarded (interrupt tests)
GET /proxy-stats answers how many failures were injected per kind.
As S3 does (moto does not), every complete S3 UploadPart body is checked against its
`x-amz-checksum-sha256` (400 BadDigest) and a signed `x-amz-content-sha256` (400
XAmzContentSHA256Mismatch); `part_checksum_ok` / `part_checksum_bad` count the outcomes.
With a third argument `count:SECONDS` it injects no faults: each PUT waits SECONDS before its
body is read (so a client killed meanwhile has delivered nothing), and the stats count the
bytes of complete PUT bodies (`put_bytes`; a body cut short by a killed client is counted in
`put_cut_bytes` and not forwarded) and the PUTs the upstream accepted (`put_ok`).

usage: aws_fault_proxy.py PORT UPSTREAM_PORT [count:SECONDS]
"""
import base64
import hashlib
import json
import re
import sys
import time

from proxy_common import Faults, ForwardingHandler, serve

count_delay = float(sys.argv[3].split(":")[1]) if len(sys.argv) > 3 and sys.argv[3].startswith("count:") else None
faults = Faults()


def choose_fault(method, path, body):
    block = re.match(r"^/snapshots/[^/]+/blocks/(\d+)$", path)
    if method == "POST" and path == "/snapshots":
        return "start500"
    if method == "PUT" and block and int(block.group(1)) % 2 == 0:
        return "block503"
    if method == "PUT" and block and int(block.group(1)) % 4 == 1:
        return "blockdrop"
    if method == "POST" and path.startswith("/snapshots/completion/"):
        return "complete500"
    if method == "POST" and path == "/" and b"Action=DescribeSnapshots" in body:
        return "describe503"
    if method == "PUT" and "partNumber=2&" in path:
        return "part500"
    if method == "POST" and "uploadId=" in path:
        return "completeupload503"
    return None


def part_digest_error(method, path, headers, body):
    if method != "PUT" or "partNumber=" not in path:
        return None
    sha = hashlib.sha256(body)
    declared = headers.get("x-amz-checksum-sha256")
    if declared is not None and declared != base64.b64encode(sha.digest()).decode():
        faults.count("part_checksum_bad")
        return b"<Error><Code>BadDigest</Code><Message>The sha256 you specified did not match the calculated checksum.</Message></Error>"
    signed = headers.get("x-amz-content-sha256")
    if signed not in (None, "UNSIGNED-PAYLOAD") and signed != sha.hexdigest():
        faults.count("part_checksum_bad")
        return b"<Error><Code>XAmzContentSHA256Mismatch</Code><Message>The provided 'x-amz-content-sha256' header does not match what was computed.</Message></Error>"
    if declared is not None:
        faults.count("part_checksum_ok")
    return None


class Proxy(ForwardingHandler):
    upstream_port = int(sys.argv[2])

    def handle_any(self):
        if count_delay is not None and self.command == "PUT":
            time.sleep(count_delay)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        path, method = self.path, self.command
        if path == "/proxy-stats":
            return self.answer(200, json.dumps(faults.snapshot()).encode())
        if count_delay is not None:
            if method == "PUT":
                complete = len(body) == n
                faults.count("put_bytes" if complete else "put_cut_bytes", len(body))
                if not complete:
                    self.close_connection = True
                    return
            digest_error = part_digest_error(method, path, self.headers, body)
            if digest_error:
                return self.answer(400, digest_error)
            return self.forward_counting(method, path, body)
        if method == "PUT" and "/stall-" in path:
            faults.count("stall")
            time.sleep(30)
        fault = choose_fault(method, path, body)
        digest_error = part_digest_error(method, path, self.headers, body)
        if digest_error:
            return self.answer(400, digest_error)
        if fault and faults.first_time(fault + " " + path):
            faults.count(fault)
            if fault == "blockdrop":
                return self.cut()
            if fault == "block503":
                return self.answer(503, b'{"message":"slow down"}', [("Retry-After", "0"), ("x-amzn-ErrorType", "ThrottlingException"), ("Content-Type", "application/json")])
            if fault == "describe503":
                return self.answer(503, b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>x</RequestID></Response>")
            if fault == "completeupload503":
                return self.answer(503, b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>", [("Retry-After", "0")])
            return self.answer(500, b"<Error><Code>InternalError</Code><Message>injected</Message></Error>")
        self.forward_counting(method, path, body)

    def forward_counting(self, method, path, body):
        status, data, headers = self.forward(method, path, body)
        if method == "PUT" and 200 <= status < 300:
            faults.count("put_ok")  # before answering: the client reads the stats right after
        self.answer(status, data, headers)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


serve(int(sys.argv[1]), Proxy)
