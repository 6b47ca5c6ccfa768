"""A fake Compute Engine v1 endpoint for deploy-gcp's tests (127.0.0.1 only, tests only).

Every request is checked against the official compute.v1 discovery document shipped in
google-api-python-client: the route must be one of its methods, path parameters must match
their patterns, query parameters must be known with the right type or enum, required
parameters present, and the JSON body must fit the method's request schema (no unknown field,
no output-only field, right types, enum values, required fields). A violation answers 400 and is
recorded (the tests assert there were none). Requests need `Authorization: Bearer <token>` with a
token the test token server issued (its /harness-stats lists them), else 401.

State: images, firewalls, instances, disks. Mutations answer an Operation that goes
PENDING -> RUNNING -> DONE, one step per poll (operations/{op}/wait or get); its effect happens
at DONE, and semantic problems (image source object missing from the storage emulator, SEV_SNP
on a non-n2d type, TDX on a non-c3 type, a confidential VM without onHostMaintenance TERMINATE,
an image without the matching guest OS feature) end the Operation with an error. requestId
makes a retried insert return the same Operation.

GET /harness-stats   requests seen (method id, path, query, body), violations, faults, 401s
GET /harness-state   the resources held
POST /harness-validate/<method id>   validates a body without acting (to test the validator)
--faults             answers 503 (Retry-After) / 429 on operation polls 1, 2 and 4, and the first
                     insert is carried out but answered 503 (its retry must reuse the requestId)
POST /harness-config {"stuck": true} keeps Operations RUNNING (deadline tests);
                     {"instance_status": {"NAME": "TERMINATED"}} stops an instance (as a host event would)
"""
import argparse
import base64
import itertools
import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import googleapiclient

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--token-server", required=True, help="base URL of the token server (its /harness-stats)")
parser.add_argument("--storage", help="storage emulator base URL, to check images' rawDisk.source")
parser.add_argument("--faults", action="store_true")
args = parser.parse_args()

DISCOVERY_PATH = os.path.join(os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents", "compute.v1.json")
with open(DISCOVERY_PATH) as f:
    DOC = json.load(f)
SCHEMAS = DOC["schemas"]
GLOBAL_PARAMS = DOC["parameters"]
PREFIX = "/" + DOC["servicePath"]  # /compute/v1/


def all_methods(resources):
    for res in resources.values():
        for m in res.get("methods", {}).values():
            yield m
        yield from all_methods(res.get("resources", {}))


ROUTES = []
for m in all_methods(DOC["resources"]):
    names = []
    def repl(match):
        names.append(match.group(1).lstrip("+"))
        return "([^/]+)"
    regex = re.compile("^" + re.sub(r"\{([^}]+)\}", repl, re.escape(m["path"]).replace("\\{", "{").replace("\\}", "}")) + "$")
    ROUTES.append((m["httpMethod"], regex, names, m))

lock = threading.Lock()
stats = {"requests": [], "violations": [], "unauthorized": 0, "faults": {}, "polls": 0, "replayed": 0}
config = {"stuck": False}
state = {"images": {}, "firewalls": {}, "instances": {}, "disks": {}}
operations = {}   # name -> operation dict (+ private "_effect")
request_ids = {}  # requestId -> operation name
known_tokens = set()
ids = itertools.count(1000000000000000001)
ips = itertools.count(10)


# MARK: validation against the discovery document

def check_value(value, schema, path, method_id, errors):
    if "$ref" in schema:
        schema = SCHEMAS[schema["$ref"]]
    t = schema.get("type")
    described = schema.get("description", "").lstrip().lower()
    if schema.get("readOnly") or described.startswith("[output only]") or described.startswith("output only."):
        errors.append("%s: output-only field must not be sent" % path)
        return
    if t == "object" or ("properties" in schema and t is None):
        if not isinstance(value, dict):
            errors.append("%s: expected an object" % path)
            return
        props = schema.get("properties", {})
        for key, sub in props.items():
            req = sub.get("annotations", {}).get("required", [])
            if method_id in req and key not in value:
                errors.append("%s.%s: required for %s" % (path, key, method_id))
        for key, v in value.items():
            if key in props:
                check_value(v, props[key], "%s.%s" % (path, key), method_id, errors)
            elif "additionalProperties" in schema:
                check_value(v, schema["additionalProperties"], "%s[%s]" % (path, key), method_id, errors)
            else:
                errors.append("%s.%s: unknown field" % (path, key))
    elif t == "array":
        if not isinstance(value, list):
            errors.append("%s: expected an array" % path)
            return
        for i, v in enumerate(value):
            check_value(v, schema["items"], "%s[%d]" % (path, i), method_id, errors)
    elif t == "string":
        fmt = schema.get("format")
        if fmt in ("int64", "uint64"):
            ok = (isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value)) or (isinstance(value, int) and not isinstance(value, bool))
            if not ok:
                errors.append("%s: expected an %s (string of digits), got %r" % (path, fmt, value))
            return
        if not isinstance(value, str):
            errors.append("%s: expected a string, got %r" % (path, value))
            return
        if "enum" in schema and value not in schema["enum"]:
            errors.append("%s: %r is not one of %s" % (path, value, schema["enum"]))
        if fmt == "byte":
            try:
                base64.b64decode(value, validate=True)
            except Exception:
                try:
                    base64.urlsafe_b64decode(value)
                except Exception:
                    errors.append("%s: not base64" % path)
        if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
            errors.append("%s: %r does not match %s" % (path, value, schema["pattern"]))
    elif t == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append("%s: expected an integer, got %r" % (path, value))
    elif t == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append("%s: expected a number, got %r" % (path, value))
    elif t == "boolean":
        if not isinstance(value, bool):
            errors.append("%s: expected a boolean, got %r" % (path, value))
    elif t == "any":
        pass
    else:
        errors.append("%s: schema type %r not understood" % (path, t))


def check_param(name, value, spec, errors):
    t = spec.get("type")
    if t == "boolean" and value not in ("true", "false"):
        errors.append("query %s: expected true/false, got %r" % (name, value))
    elif t == "integer" and not re.fullmatch(r"-?[0-9]+", value):
        errors.append("query %s: expected an integer, got %r" % (name, value))
    if "enum" in spec and value not in spec["enum"]:
        errors.append("parameter %s: %r is not one of %s" % (name, value, spec["enum"]))
    if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
        errors.append("parameter %s: %r does not match %s" % (name, value, spec["pattern"]))


def validate_request(http_method, path, query, body_bytes):
    """-> (method, path params, body, errors)"""
    errors = []
    if not path.startswith(PREFIX):
        return None, {}, None, ["path %s is not under %s" % (path, PREFIX)]
    rest = path[len(PREFIX):]
    for verb, regex, names, m in ROUTES:
        if verb != http_method:
            continue
        match = regex.match(rest)
        if not match:
            continue
        params = {n: urllib.parse.unquote(v) for n, v in zip(names, match.groups())}
        specs = m.get("parameters", {})
        for n, v in params.items():
            check_param(n, v, specs.get(n, {}), errors)
        for n, values in query.items():
            spec = specs.get(n) or GLOBAL_PARAMS.get(n)
            if spec is None or (n in specs and specs[n].get("location") != "query"):
                errors.append("query parameter %s is not a parameter of %s" % (n, m["id"]))
                continue
            if len(values) > 1 and not spec.get("repeated"):
                errors.append("query parameter %s given %d times" % (n, len(values)))
            for v in values:
                check_param(n, v, spec, errors)
        for n, spec in specs.items():
            if spec.get("required") and n not in params and n not in query:
                errors.append("required parameter %s missing" % n)
        body = None
        if "request" in m:
            try:
                body = json.loads(body_bytes or b"")
            except ValueError:
                errors.append("body is not JSON")
                return m, params, None, errors
            check_value(body, m["request"], "body", m["id"], errors)
        elif body_bytes:
            errors.append("%s takes no body" % m["id"])
        return m, params, body, errors
    return None, {}, None, ["no compute.v1 method is %s %s" % (http_method, rest)]


# MARK: state

def now():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())


def link(host, *parts):
    return "http://%s%sprojects/%s" % (host, PREFIX, "/".join(parts))


def new_operation(host, project, scope, op_type, target, effect):
    name = "operation-%d-%s" % (int(time.time() * 1000), next(ids))
    op = {"kind": "compute#operation", "id": str(next(ids)), "name": name, "operationType": op_type,
          "status": "PENDING", "progress": 0, "insertTime": now(), "targetLink": target,
          "targetId": str(next(ids)), "user": "uploader@cvm-test.iam.gserviceaccount.com"}
    if scope[0] == "zones":
        op["zone"] = link(host, project, "zones", scope[1])
        op["selfLink"] = link(host, project, "zones", scope[1], "operations", name)
    elif scope[0] == "regions":
        op["region"] = link(host, project, "regions", scope[1])
        op["selfLink"] = link(host, project, "regions", scope[1], "operations", name)
    else:
        op["selfLink"] = link(host, project, "global", "operations", name)
    operations[name] = dict(op, _effect=effect)
    return name


def public(op):
    return {k: v for k, v in op.items() if not k.startswith("_")}


def advance(name):
    op = operations[name]
    if config["stuck"]:
        op["status"] = "RUNNING"
        return
    if op["status"] == "PENDING":
        op["status"] = "RUNNING"
        op["startTime"] = now()
    elif op["status"] == "RUNNING":
        error = op["_effect"]()
        op["status"] = "DONE"
        op["progress"] = 100
        op["endTime"] = now()
        if error:
            op["error"] = {"errors": [{"code": error[0], "message": error[1]}]}
            op["httpErrorStatusCode"] = 400
            op["httpErrorMessage"] = "BAD REQUEST"


def object_exists(source):
    m = re.fullmatch(r"https://storage\.googleapis\.com/([^/]+)/(.+)", source or "")
    if not m:
        return False
    if not args.storage:
        return True
    url = "%s/storage/v1/b/%s/o/%s" % (args.storage, m.group(1), urllib.parse.quote(m.group(2), safe=""))
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status == 200, json.loads(r.read())
    except urllib.error.HTTPError:
        return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def answer(self, status, obj=None, headers=()):
        body = json.dumps(obj).encode() if obj is not None else b""
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, reason, message):
        statuses = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS",
                    429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}
        self.answer(status, {"error": {"code": status, "message": message, "status": statuses.get(status, "UNKNOWN"),
                                       "errors": [{"message": message, "domain": "global", "reason": reason}]}},
                    [("Retry-After", "0")] if status in (429, 503) else ())

    def authorized(self):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        token = auth[7:]
        with lock:
            if token in known_tokens:
                return True
        try:
            with urllib.request.urlopen(args.token_server + "/harness-stats", timeout=10) as r:
                issued = json.loads(r.read()).get("tokens", [])
        except Exception:
            return False
        with lock:
            known_tokens.update(issued)
            return token in known_tokens

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body_bytes = self.rfile.read(n) if n else b""
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if url.path == "/harness-stats":
            with lock:
                return self.answer(200, stats)
        if url.path == "/harness-state":
            with lock:
                return self.answer(200, state)
        if url.path == "/harness-config":
            with lock:
                change = json.loads(body_bytes)
                for name, status in change.pop("instance_status", {}).items():
                    state["instances"][name]["status"] = status
                config.update(change)
                return self.answer(200, config)
        if url.path.startswith("/harness-validate/"):
            method_id = url.path.rsplit("/", 1)[1]
            m = next(r[3] for r in ROUTES if r[3]["id"] == method_id)
            errors = []
            check_value(json.loads(body_bytes), m["request"], "body", method_id, errors)
            return self.answer(200, {"errors": errors})

        if not self.authorized():
            with lock:
                stats["unauthorized"] += 1
            return self.error(401, "authError", "Request had invalid authentication credentials.")

        m, params, body, errors = validate_request(self.command, url.path, query, body_bytes)
        with lock:
            stats["requests"].append({"method": self.command, "id": m["id"] if m else None, "path": url.path,
                                      "query": query, "body": body})
            if errors:
                stats["violations"].append({"id": m["id"] if m else None, "path": url.path, "errors": errors})
        if errors:
            return self.error(400, "invalid", "fake compute (discovery check): " + "; ".join(errors))
        with lock:
            return self.act(m["id"], params, query, body)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = handle_any

    # MARK: behaviour

    def act(self, mid, p, query, body):
        host = self.headers.get("Host")
        project = p.get("project")
        request_id = (query.get("requestId") or [None])[0]
        if request_id and request_id in request_ids:
            stats["replayed"] += 1
            return self.answer(200, public(operations[request_ids[request_id]]))

        def started(scope, op_type, target, effect):
            name = new_operation(host, project, scope, op_type, target, effect)
            if request_id:
                request_ids[request_id] = name
            if args.faults and op_type == "insert" and "insert503" not in stats["faults"]:
                # Carried out, but the answer is lost: only the requestId saves a double insert.
                stats["faults"]["insert503"] = 1
                return self.error(503, "backendError", "try again")
            return self.answer(200, public(operations[name]))

        _, kind, verb = mid.split(".")

        if kind in ("zoneOperations", "globalOperations", "regionOperations") and verb in ("wait", "get"):
            stats["polls"] += 1
            if args.faults and stats["polls"] in (1, 2, 4):
                fault = "429" if stats["polls"] == 2 else "503"
                stats["faults"][fault] = stats["faults"].get(fault, 0) + 1
                return self.error(int(fault), "rateLimitExceeded" if fault == "429" else "backendError", "try again")
            op = operations.get(p["operation"])
            if op is None:
                return self.error(404, "notFound", "The resource 'operation %s' was not found" % p["operation"])
            advance(p["operation"])
            return self.answer(200, public(op))

        coll = {"images": "images", "firewalls": "firewalls", "instances": "instances", "disks": "disks"}.get(kind)
        if coll is None:
            return self.error(400, "unsupported", "fake compute does not implement %s" % mid)
        key_param = {"images": "image", "firewalls": "firewall", "instances": "instance", "disks": "disk"}[kind]
        items = state[coll]

        if verb == "get":
            res = items.get(p[key_param])
            if res is None or (kind in ("instances", "disks") and res.get("zone", "").rsplit("/", 1)[-1] != p.get("zone")):
                return self.error(404, "notFound", "The resource '%s' was not found" % p[key_param])
            if kind == "instances" and res["status"] in ("PROVISIONING", "STAGING"):
                shown = dict(res)
                res["status"] = "STAGING" if res["status"] == "PROVISIONING" else "RUNNING"
                return self.answer(200, shown)
            return self.answer(200, res)

        if verb == "delete":
            name = p[key_param]
            if name not in items:
                return self.error(404, "notFound", "The resource '%s' was not found" % name)
            scope = ("zones", p["zone"]) if "zone" in p else ("global",)
            def effect():
                res = items.pop(name, None)
                if kind == "instances" and res:
                    for d in res.get("disks", []):
                        if d.get("autoDelete"):
                            state["disks"].pop(d["source"].rsplit("/", 1)[-1], None)
            return started(scope, "delete", link(host, project, *scope, coll, name), effect)

        if verb == "insert":
            name = body["name"]
            if name in items:
                return self.error(409, "alreadyExists", "The resource '%s' already exists" % name)
            if kind == "images":
                return started(("global",), "insert", link(host, project, "global", "images", name), lambda: self.make_image(host, project, body))
            if kind == "firewalls":
                def effect():
                    items[name] = dict(body, id=str(next(ids)), kind="compute#firewall", creationTimestamp=now(),
                                       selfLink=link(host, project, "global", "firewalls", name))
                return started(("global",), "insert", link(host, project, "global", "firewalls", name), effect)
            if kind == "instances":
                zone = p["zone"]
                return started(("zones", zone), "insert", link(host, project, "zones", zone, "instances", name),
                               lambda: self.make_instance(host, project, zone, body))
        if verb == "patch" and kind == "firewalls":
            name = p["firewall"]
            if name not in items:
                return self.error(404, "notFound", "The resource '%s' was not found" % name)
            def effect():
                items[name].update(body)
            return started(("global",), "patch", link(host, project, "global", "firewalls", name), effect)
        if verb == "start" and kind == "instances":
            name = p["instance"]
            if name not in items:
                return self.error(404, "notFound", "The resource '%s' was not found" % name)
            def effect():
                items[name]["status"] = "STAGING"
            return started(("zones", p["zone"]), "start", link(host, project, "zones", p["zone"], "instances", name), effect)
        return self.error(400, "unsupported", "fake compute does not implement %s" % mid)

    def make_image(self, host, project, body):
        found = object_exists(body.get("rawDisk", {}).get("source"))
        if not found:
            return ("RESOURCE_NOT_FOUND", "The resource '%s' of type 'Cloud Storage object' was not found." % body.get("rawDisk", {}).get("source"))
        size = found[1].get("size", "0") if isinstance(found, tuple) else "0"
        state["images"][body["name"]] = dict(body, id=str(next(ids)), kind="compute#image", status="READY",
                                             creationTimestamp=now(), archiveSizeBytes=str(size), diskSizeGb="1",
                                             selfLink=link(host, project, "global", "images", body["name"]))
        return None

    def make_instance(self, host, project, zone, body):
        machine = body.get("machineType", "").rsplit("/", 1)[-1]
        if not body.get("machineType", "").startswith("zones/%s/machineTypes/" % zone) and "/zones/%s/" % zone not in body.get("machineType", ""):
            return ("INVALID_FIELD_VALUE", "machineType must be in zone %s" % zone)
        cic = (body.get("confidentialInstanceConfig") or {}).get("confidentialInstanceType")
        boot = next((d for d in body.get("disks", []) if d.get("boot")), None)
        if boot is None:
            return ("INVALID_FIELD_VALUE", "Instance needs a boot disk")
        image = (boot.get("initializeParams") or {}).get("sourceImage", "").rsplit("/", 1)[-1]
        img = state["images"].get(image)
        if img is None or img.get("status") != "READY":
            return ("RESOURCE_NOT_FOUND", "The resource 'projects/%s/global/images/%s' was not found" % (project, image))
        features = {f["type"] for f in img.get("guestOsFeatures", [])}
        if cic == "SEV_SNP":
            if not machine.startswith("n2d-"):
                return ("UNSUPPORTED_OPERATION", "SEV_SNP is not supported for machine type %s" % machine)
            if body.get("minCpuPlatform") != "AMD Milan":
                return ("INVALID_FIELD_VALUE", "SEV_SNP needs minCpuPlatform AMD Milan")
            if "SEV_SNP_CAPABLE" not in features:
                return ("INVALID_FIELD_VALUE", "image %s is not SEV_SNP_CAPABLE" % image)
        elif cic == "TDX":
            if not machine.startswith("c3-"):
                return ("UNSUPPORTED_OPERATION", "TDX is not supported for machine type %s" % machine)
            if "TDX_CAPABLE" not in features:
                return ("INVALID_FIELD_VALUE", "image %s is not TDX_CAPABLE" % image)
        if cic and (body.get("scheduling") or {}).get("onHostMaintenance") != "TERMINATE":
            return ("INVALID_FIELD_VALUE", "Confidential VMs need scheduling.onHostMaintenance TERMINATE")
        name = body["name"]
        disks = []
        for i, d in enumerate(body.get("disks", [])):
            ip = d.get("initializeParams") or {}
            disk_name = ip.get("diskName") or (name if d.get("boot") else "%s-%d" % (name, i))
            if disk_name in state["disks"]:
                return ("RESOURCE_ALREADY_EXISTS", "The resource 'disks/%s' already exists" % disk_name)
        for i, d in enumerate(body.get("disks", [])):
            ip = d.get("initializeParams") or {}
            disk_name = ip.get("diskName") or (name if d.get("boot") else "%s-%d" % (name, i))
            state["disks"][disk_name] = {"kind": "compute#disk", "name": disk_name, "id": str(next(ids)),
                                         "zone": link(host, project, "zones", zone),
                                         "sizeGb": str(ip.get("diskSizeGb", "10")), "type": ip.get("diskType", ""),
                                         "sourceImage": ip.get("sourceImage", ""), "status": "READY",
                                         "selfLink": link(host, project, "zones", zone, "disks", disk_name)}
            disks.append(dict(d, source=state["disks"][disk_name]["selfLink"], index=i))
        nics = []
        for i, nic in enumerate(body.get("networkInterfaces", [])):
            nic = dict(nic, name="nic%d" % i, networkIP="10.148.0.%d" % next(ips))
            nic["accessConfigs"] = [dict(a, natIP="203.0.113.%d" % next(ips)) for a in nic.get("accessConfigs", [])]
            nics.append(nic)
        state["instances"][name] = dict(body, id=str(next(ids)), kind="compute#instance", status="PROVISIONING",
                                        zone=link(host, project, "zones", zone), disks=disks, networkInterfaces=nics,
                                        machineType=link(host, project, "zones", zone, "machineTypes", machine),
                                        creationTimestamp=now(),
                                        selfLink=link(host, project, "zones", zone, "instances", name))
        return None


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
server.daemon_threads = True
server.serve_forever()
