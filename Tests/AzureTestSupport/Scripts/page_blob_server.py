"""A small Azure Blob page-blob endpoint for tests, on 127.0.0.1 only.

Every request must carry `Authorization: SharedKey account:signature`; the signature is
recomputed with Microsoft's own code (azure-storage-blob's SharedKeyCredentialPolicy) applied to
a request rebuilt from what arrived, and a mismatch is refused with 403 AuthenticationFailed, as
the service does. Path-style URLs, like Azurite: /<account>/<container>[/<blob>].

Implements: Create Container, Put Blob (PageBlob only), Put Page (update/clear), Get Page Ranges,
Get Blob (x-ms-range or Range), Get Blob Properties (HEAD), Set Blob Properties, Delete Blob. Blob bytes are
kept in sparse files under a folder; written ranges in memory.

Admin endpoints (no auth, outside any account path):
  GET  /_admin/stats   counters as JSON (with the signatures received, for leak checks)
  POST /_admin/reset   zero the counters
  POST /_admin/config  JSON {"page_delay": seconds}: sleep before answering each Put Page

usage: page_blob_server.py PORT ACCOUNT BASE64KEY DATA_DIR
"""
import base64, bisect, datetime, email.utils, hashlib, json, os, re, sys, threading, time, uuid
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse, parse_qs, unquote

from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.transport import HttpRequest
from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy

PORT, ACCOUNT, KEY, DATA = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
POLICY = SharedKeyCredentialPolicy(ACCOUNT, KEY)
MAX_PAGE = 4 * 1024 * 1024
ZERO_SECTOR = bytes(512)

lock = threading.Lock()
containers = set()
blobs = {}      # (container, name) -> Blob
stats = {}
config = {"page_delay": 0.0}


def reset_stats():
    stats.clear()
    stats.update({"requests": 0, "auth_failures": 0, "put_page": 0, "page_bytes": 0, "zero_sectors_received": 0,
                  "unaligned_pages": 0, "md5_checked": 0, "versions": [], "ops": {}, "signatures": []})


reset_stats()


def count(name, n=1):
    with lock:
        stats[name] = stats.get(name, 0) + n


class Blob:
    def __init__(self, container, name, size):
        self.size = size
        self.path = os.path.join(DATA, hashlib.sha256(f"{container}/{name}".encode()).hexdigest())
        with open(self.path, "wb") as f:
            f.truncate(size)
        self.fd = os.open(self.path, os.O_RDWR)
        self.ranges = []        # sorted, merged [start, end) pairs
        self.lock = threading.Lock()
        self.etag = '"0x%X"' % (time.time_ns())
        self.md5 = None
        self.created = email.utils.formatdate(usegmt=True)
        self.modified = self.created
        self.sequence = 0

    def touch(self):
        self.etag = '"0x%X"' % (time.time_ns())
        self.modified = email.utils.formatdate(usegmt=True)

    def add_range(self, start, end):
        r = self.ranges
        i = bisect.bisect_left(r, [start, start])
        if i > 0 and r[i - 1][1] >= start:
            i -= 1
        j = i
        while j < len(r) and r[j][0] <= end:
            start, end = min(start, r[j][0]), max(end, r[j][1])
            j += 1
        r[i:j] = [[start, end]]

    def clear_range(self, start, end):
        out = []
        for a, b in self.ranges:
            if b <= start or a >= end:
                out.append([a, b])
                continue
            if a < start:
                out.append([a, start])
            if b > end:
                out.append([end, b])
        self.ranges = out


def xml_error(code, message):
    text = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}\nRequestId:{uuid.uuid4()}\nTime:{datetime.datetime.utcnow().isoformat()}Z</Message></Error>'
    return text.encode()


def parse_range(value):
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", value or "")
    if not m:
        return None
    return int(m.group(1)), (int(m.group(2)) if m.group(2) else None)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=(), code=None, head=False):
        self.send_response(status)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.send_header("x-ms-version", "2021-08-06")
        self.send_header("Date", email.utils.formatdate(usegmt=True))
        if code:
            self.send_header("x-ms-error-code", code)
            if body:
                self.send_header("Content-Type", "application/xml")
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def fail(self, status, code, message, head=False):
        self.answer(status, b"" if head else xml_error(code, message), code=code, head=head)

    def authorized(self):
        """Recompute the signature with the SDK's policy on the request as received."""
        given = self.headers.get("Authorization", "")
        # The service reads header names case-insensitively; the SDK's policy expects lower case.
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        request = HttpRequest(self.command, f"http://127.0.0.1:{PORT}{self.path}", headers=headers)
        POLICY.on_request(PipelineRequest(request, PipelineContext(None)))
        expected = request.headers["Authorization"]
        date = self.headers.get("x-ms-date")
        fresh = False
        if date:
            try:
                fresh = abs(time.time() - email.utils.parsedate_to_datetime(date).timestamp()) < 15 * 60
            except (TypeError, ValueError):
                fresh = False
        return given == expected and fresh

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlparse(self.path)
        head = self.command == "HEAD"
        if url.path.startswith("/_admin/"):
            return self.admin(url.path, body)
        count("requests")
        signature = self.headers.get("Authorization", "").rpartition(":")[2]
        with lock:
            if signature and len(stats["signatures"]) < 5000:
                stats["signatures"].append(signature)
        if not self.authorized():
            count("auth_failures")
            return self.fail(403, "AuthenticationFailed",
                             "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.", head)
        version = self.headers.get("x-ms-version")
        if not version:
            return self.fail(400, "MissingRequiredHeader", "An HTTP header that's mandatory for this request is not specified.", head)
        with lock:
            if version not in stats["versions"]:
                stats["versions"].append(version)
        parts = url.path.split("/", 3)   # '', account, container, blob
        if len(parts) < 3 or parts[1] != ACCOUNT:
            return self.fail(400, "InvalidUri", "The requested URI does not represent any resource on the server.", head)
        container = unquote(parts[2])
        name = unquote(parts[3]) if len(parts) > 3 and parts[3] else None
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        op = f"{self.command} {query.get('comp') or query.get('restype') or ('blob' if name else 'container')}"
        with lock:
            stats["ops"][op] = stats["ops"].get(op, 0) + 1
        if name is None:
            return self.container_op(container, query, head)
        with lock:
            exists = container in containers
            blob = blobs.get((container, name))
        if not exists:
            return self.fail(404, "ContainerNotFound", "The specified container does not exist.", head)
        if self.command == "PUT" and not query.get("comp"):
            return self.put_blob(container, name, body)
        if blob is None:
            return self.fail(404, "BlobNotFound", "The specified blob does not exist.", head)
        comp = query.get("comp")
        if self.command == "PUT" and comp == "page":
            return self.put_page(blob, body)
        if self.command == "GET" and comp == "pagelist":
            return self.page_list(blob)
        if self.command == "PUT" and comp == "properties":
            if "x-ms-blob-content-md5" in self.headers:
                blob.md5 = self.headers["x-ms-blob-content-md5"]
            blob.touch()
            return self.answer(200, headers=[("ETag", blob.etag), ("Last-Modified", blob.modified)])
        if self.command in ("GET", "HEAD") and comp is None:
            return self.get_blob(blob, head)
        if self.command == "DELETE" and comp is None:
            with lock:
                blobs.pop((container, name), None)
            os.close(blob.fd)
            return self.answer(202)
        return self.fail(400, "UnsupportedHttpVerb", "The resource doesn't support the specified HTTP verb.", head)

    def container_op(self, container, query, head):
        if self.command == "PUT" and query.get("restype") == "container":
            if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", container):
                return self.fail(400, "InvalidResourceName", "The specified resource name contains invalid characters.")
            with lock:
                if container in containers:
                    return self.fail(409, "ContainerAlreadyExists", "The specified container already exists.")
                containers.add(container)
            return self.answer(201, headers=[("ETag", '"0x1"'), ("Last-Modified", email.utils.formatdate(usegmt=True))])
        if self.command in ("GET", "HEAD") and query.get("restype") == "container":
            with lock:
                if container not in containers:
                    return self.fail(404, "ContainerNotFound", "The specified container does not exist.", head)
            return self.answer(200, headers=[("ETag", '"0x1"'), ("Last-Modified", email.utils.formatdate(usegmt=True))], head=head)
        return self.fail(400, "UnsupportedHttpVerb", "The resource doesn't support the specified HTTP verb.", head)

    def put_blob(self, container, name, body):
        if self.headers.get("x-ms-blob-type") != "PageBlob":
            return self.fail(400, "InvalidHeaderValue", "Only page blobs are implemented by this test server.")
        if body:
            return self.fail(400, "InvalidHeaderValue", "A page blob is created empty (Content-Length must be 0).")
        try:
            size = int(self.headers.get("x-ms-blob-content-length", ""))
        except ValueError:
            return self.fail(400, "MissingRequiredHeader", "x-ms-blob-content-length is required for a page blob.")
        if size < 0 or size % 512:
            return self.fail(400, "InvalidHeaderValue", "x-ms-blob-content-length must be a multiple of 512.")
        blob = Blob(container, name, size)
        with lock:
            old = blobs.get((container, name))
            blobs[(container, name)] = blob
        if old:
            os.close(old.fd)
        count("put_blob")
        return self.answer(201, headers=[("ETag", blob.etag), ("Last-Modified", blob.modified), ("x-ms-request-server-encrypted", "true")])

    def put_page(self, blob, body):
        rng = parse_range(self.headers.get("x-ms-range") or self.headers.get("Range"))
        mode = self.headers.get("x-ms-page-write")
        if rng is None or rng[1] is None:
            return self.fail(400, "InvalidHeaderValue", "x-ms-range must be bytes=start-end.")
        start, end = rng[0], rng[1] + 1
        if start % 512 or end % 512 or end <= start:
            count("unaligned_pages")
            return self.fail(416, "InvalidPageRange", "The page range specified is invalid.")
        if end > blob.size:
            return self.fail(416, "InvalidPageRange", "The page range specified is invalid.")
        if mode == "update":
            if end - start > MAX_PAGE:
                return self.fail(413, "RequestBodyTooLarge", "The request body is too large and exceeds the maximum permissible limit.")
            if len(body) != end - start:
                return self.fail(400, "InvalidHeaderValue", "The value for one of the HTTP headers is not in the correct format (Content-Length vs x-ms-range).")
            md5 = self.headers.get("Content-MD5")
            if md5:
                count("md5_checked")
                if base64.b64encode(hashlib.md5(body).digest()).decode() != md5:
                    return self.fail(400, "Md5Mismatch", "The MD5 value specified in the request did not match with the MD5 value calculated by the server.")
            zero = sum(1 for i in range(0, len(body), 512) if body[i:i + 512] == ZERO_SECTOR)
            with blob.lock:
                os.pwrite(blob.fd, body, start)
                blob.add_range(start, end)
                blob.touch()
            with lock:
                stats["put_page"] += 1
                stats["page_bytes"] += len(body)
                stats["zero_sectors_received"] += zero
        elif mode == "clear":
            if body:
                return self.fail(400, "InvalidHeaderValue", "Clear has no body.")
            with blob.lock:
                os.pwrite(blob.fd, bytes(end - start), start)
                blob.clear_range(start, end)
                blob.touch()
        else:
            return self.fail(400, "InvalidHeaderValue", "x-ms-page-write must be update or clear.")
        if config["page_delay"]:
            time.sleep(config["page_delay"])
        return self.answer(201, headers=[("ETag", blob.etag), ("Last-Modified", blob.modified),
                                         ("x-ms-blob-sequence-number", str(blob.sequence)),
                                         ("Content-MD5", base64.b64encode(hashlib.md5(body).digest()).decode())])

    def page_list(self, blob):
        with blob.lock:
            ranges = [list(r) for r in blob.ranges]
        rng = parse_range(self.headers.get("x-ms-range") or self.headers.get("Range"))
        if rng:
            lo, hi = rng[0], (rng[1] + 1 if rng[1] is not None else blob.size)
            ranges = [[max(a, lo), min(b, hi)] for a, b in ranges if b > lo and a < hi]
        items = "".join(f"<PageRange><Start>{a}</Start><End>{b - 1}</End></PageRange>" for a, b in ranges)
        body = f'<?xml version="1.0" encoding="utf-8"?><PageList>{items}</PageList>'.encode()
        return self.answer(200, body, [("Content-Type", "application/xml"), ("ETag", blob.etag),
                                       ("Last-Modified", blob.modified), ("x-ms-blob-content-length", str(blob.size))])

    def properties(self, blob):
        out = [("ETag", blob.etag), ("Last-Modified", blob.modified), ("x-ms-creation-time", blob.created),
               ("x-ms-blob-type", "PageBlob"), ("x-ms-blob-sequence-number", str(blob.sequence)),
               ("x-ms-lease-status", "unlocked"), ("x-ms-lease-state", "available"),
               ("x-ms-server-encrypted", "true"), ("Accept-Ranges", "bytes"),
               ("Content-Type", "application/octet-stream")]
        return out

    def get_blob(self, blob, head):
        headers = self.properties(blob)
        rng = parse_range(self.headers.get("x-ms-range") or self.headers.get("Range"))
        if rng is None:
            start, end, status = 0, blob.size, 200
            if blob.md5:
                headers.append(("Content-MD5", blob.md5))
        else:
            start = rng[0]
            end = min(blob.size, rng[1] + 1) if rng[1] is not None else blob.size
            if start >= blob.size:
                return self.fail(416, "InvalidRange", "The range specified is invalid for the current size of the resource.", head)
            status = 206
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{blob.size}"))
            if blob.md5:
                headers.append(("x-ms-blob-content-md5", blob.md5))
        if head:
            headers = self.properties(blob) + [("Content-Length", str(blob.size))]
            if blob.md5:
                headers.append(("Content-MD5", blob.md5))
            return self.answer(200, headers=headers, head=True)
        headers.append(("Content-Length", str(end - start)))
        data = os.pread(blob.fd, end - start, start)
        return self.answer(status, data, headers)

    def admin(self, path, body):
        if path == "/_admin/stats":
            with lock:
                text = json.dumps(stats)
            return self.answer(200, text.encode(), [("Content-Type", "application/json")])
        if path == "/_admin/reset":
            with lock:
                reset_stats()
            return self.answer(200)
        if path == "/_admin/config":
            config.update(json.loads(body or b"{}"))
            return self.answer(200)
        return self.answer(404)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
server.serve_forever()
