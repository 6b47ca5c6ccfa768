/// A proxy in front of moto that records every request (method, path, body) as one JSON line,
/// and with faults on fails the first attempt of chosen calls before forwarding retries
/// untouched (Host and every signed header kept, so moto still checks SigV4):
/// - EBS StartSnapshot: 500; PutSnapshotBlock of block 0: 503 throttling; of block 4: cut connection
/// - EC2 RegisterImage: 503 RequestLimitExceeded; DescribeImages: cut connection
/// - EC2 CreateSecurityGroup: 500; RunInstances: 400 RequestLimitExceeded; AllocateAddress: 503 Unavailable
/// `GET /proxy-stats` answers the injected failures per kind.
///
/// moto has no ImportSnapshot, so the proxy plays that part (the requests are still judged by
/// botocore's model through the log): it reads the object back from moto's S3 with boto3,
/// makes a real snapshot in moto for it, and answers ImportSnapshot and
/// DescribeImportSnapshotTasks (active, then completed) in XML written by moto's own EC2
/// serializer from the botocore model. `GET /proxy-imports` lists what it imported.
let deployProxyScript = #"""
import base64, http.client, json, re, sys, threading, urllib.parse
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

port, upstream_port, log_path, faults = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
creds, region = json.loads(sys.argv[5]), sys.argv[6]
seen, stats, lock = set(), {}, threading.Lock()
tasks, imports = {}, []

def boto(service):
    import boto3, hashlib
    from botocore.config import Config
    c = boto3.client(service, endpoint_url=f"http://127.0.0.1:{upstream_port}", region_name=region,
                     aws_access_key_id=creds["id"], aws_secret_access_key=creds["secret"],
                     config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
    def fix(request, **kw):
        body = request.body or b""
        if isinstance(body, str): body = body.encode()
        request.headers["x-amz-content-sha256"] = hashlib.sha256(body if isinstance(body, bytes) else b"").hexdigest()
    c.meta.events.register("before-sign", fix)
    return c

def ec2_xml(op, result):
    from moto.core.responses import get_service_model
    from moto.core.serialize import EC2Serializer
    return EC2Serializer(get_service_model("ec2").operation_model(op)).serialize(result)["body"].encode()

def import_call(action, params, authorization):
    import hashlib
    if f"Credential={creds['id']}/" not in authorization:
        return 401, b"<Response><Errors><Error><Code>AuthFailure</Code><Message>no signature</Message></Error></Errors></Response>"
    if action == "ImportSnapshot":
        token = params.get("ClientToken", "")
        with lock:
            known = [t for t, v in tasks.items() if v["token"] == token and token]
        if known:
            task = known[0]
        else:
            bucket, key = params["DiskContainer.UserBucket.S3Bucket"], params["DiskContainer.UserBucket.S3Key"]
            body = boto("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
            ec2 = boto("ec2")
            vol = ec2.create_volume(AvailabilityZone=region + "a", Size=max(1, (len(body) + (1 << 30) - 1) >> 30))
            snap = ec2.create_snapshot(VolumeId=vol["VolumeId"], Description="imported by the test proxy")
            ec2.delete_volume(VolumeId=vol["VolumeId"])
            task = "import-snap-%05d" % (len(tasks) + 1)
            with lock:
                tasks[task] = {"token": token, "snapshot": snap["SnapshotId"], "polls": 0}
                imports.append({"task": task, "bucket": bucket, "key": key, "size": len(body),
                                "sha256": hashlib.sha256(body).hexdigest(), "format": params.get("DiskContainer.Format")})
        return 200, ec2_xml("ImportSnapshot", {"ImportTaskId": task, "SnapshotTaskDetail": {"Status": "active", "Progress": "0"}})
    task = params.get("ImportTaskId.1")
    with lock:
        t = tasks.get(task)
        if t: t["polls"] += 1
    if not t:
        return 400, b"<Response><Errors><Error><Code>InvalidConversionTaskId.Malformed</Code><Message>no such task</Message></Error></Errors></Response>"
    detail = {"Status": "active", "Progress": "40", "StatusMessage": "converting"} if t["polls"] < 2 else \
             {"Status": "completed", "Progress": "100", "SnapshotId": t["snapshot"], "Format": "VMDK"}
    return 200, ec2_xml("DescribeImportSnapshotTasks", {"ImportSnapshotTasks": [{"ImportTaskId": task, "SnapshotTaskDetail": detail}]})

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
        if path == "/proxy-imports":
            return self.answer(200, json.dumps(imports).encode())
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
        if action in ("ImportSnapshot", "DescribeImportSnapshotTasks"):
            params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}
            status, xml = import_call(action, params, self.headers.get("Authorization") or "")
            return self.answer(status, xml, [("Content-Type", "text/xml")])
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
