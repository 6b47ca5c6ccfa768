"""A fake Entra ID token endpoint and Azure Resource Manager for tests, on 127.0.0.1 only.

Token endpoint: POST /<tenant>/oauth2/v2.0/token with the client-credentials form; the client id,
secret and scope are checked, a random bearer token is issued (expires_in configurable).

ARM: every request needs `Authorization: Bearer <issued token>` and an `api-version`. Every PUT
body is deserialized with Microsoft's own models (azure-mgmt-compute / -network / -storage, old
model style) and refused with 400 when it has a property the model does not know or lacks a
required one. State is kept in memory: resource groups, storage accounts (listKeys; 202 +
Location on creation), galleries, image definitions and versions, NSGs, VNets, public IPs, NICs,
VMs and their managed disks. PUT and DELETE answer 201/202 with Azure-AsyncOperation, which
takes `polls` polls to finish. Deleting something still in use fails as ARM does (NIC of a VM,
public IP/NSG of a NIC, gallery with images, ...), so the cleanup order is checked too.

Admin endpoints (no auth): GET /_admin/state, GET /_admin/stats, POST /_admin/config (JSON:
blob_endpoint (e.g. a fault proxy), polls, retry_after, throttle_every, poll_503_every, expires_in), GET /_admin/tokens (issued),
POST /_admin/seed (a resource made elsewhere), POST /_admin/check (JSON
{"type": ..., "body": ...} → the checker's verdict, to prove it rejects bad bodies).

usage: arm_server.py PORT TENANT CLIENT_ID CLIENT_SECRET SUBSCRIPTION BLOB_ENDPOINT STORAGE_KEY
"""
import json, re, secrets, sys, threading, uuid
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse, parse_qs, unquote

import azure.mgmt.compute.models as cm
import azure.mgmt.network.models as nm
import azure.mgmt.storage.models as sm

PORT, TENANT, CLIENT_ID, CLIENT_SECRET, SUB, BLOB_ENDPOINT, STORAGE_KEY = sys.argv[1:8]
PORT = int(PORT)
SCOPE = "https://management.azure.com/.default"

lock = threading.RLock()
tokens = set()
resources = {}      # lower-case id -> dict (the resource as GET shows it)
operations = {}     # op id -> {"left": polls, "done": callable, "status": ..., "result": id or None}
config = {"blob_endpoint": BLOB_ENDPOINT, "polls": 2, "retry_after": "0", "throttle_every": 0, "poll_503_every": 0, "expires_in": 3599}
stats = {"requests": 0, "tokens": 0, "token_refusals": 0, "auth_failures": 0, "rejected": [], "mutations": 0,
         "polls": 0, "throttled": 0, "ops": {}, "bodies": []}
ip_counter = [10]

# Resource type by path pattern -> (model class or None, name)
TYPES = [
    (r"/subscriptions/[^/]+/resourcegroups/[^/]+", None, "resourceGroups"),
    (r".*/providers/microsoft\.storage/storageaccounts/[^/]+", sm.StorageAccountCreateParameters, "storageAccounts"),
    (r".*/providers/microsoft\.compute/galleries/[^/]+", cm.Gallery, "galleries"),
    (r".*/providers/microsoft\.compute/galleries/[^/]+/images/[^/]+", cm.GalleryImage, "images"),
    (r".*/providers/microsoft\.compute/galleries/[^/]+/images/[^/]+/versions/[^/]+", cm.GalleryImageVersion, "versions"),
    (r".*/providers/microsoft\.compute/virtualmachines/[^/]+", cm.VirtualMachine, "virtualMachines"),
    (r".*/providers/microsoft\.compute/disks/[^/]+", cm.Disk, "disks"),
    (r".*/providers/microsoft\.network/networksecuritygroups/[^/]+", nm.NetworkSecurityGroup, "networkSecurityGroups"),
    (r".*/providers/microsoft\.network/virtualnetworks/[^/]+", nm.VirtualNetwork, "virtualNetworks"),
    (r".*/providers/microsoft\.network/publicipaddresses/[^/]+", nm.PublicIPAddress, "publicIPAddresses"),
    (r".*/providers/microsoft\.network/networkinterfaces/[^/]+", nm.NetworkInterface, "networkInterfaces"),
]
MODELS = {name: model for _, model, name in TYPES}


def type_of(path):
    for pattern, _, name in TYPES:
        if re.fullmatch(pattern, path.lower()):
            return name
    return None


def diff(sent, kept, where=""):
    """Keys in `sent` that the model round-trip dropped: properties the model does not know."""
    out = []
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [where or "(root)"]
        for k, v in sent.items():
            if k not in kept:
                out.append(f"{where}.{k}".lstrip("."))
            else:
                out += diff(v, kept[k], f"{where}.{k}")
    elif isinstance(sent, list):
        if not isinstance(kept, list) or len(kept) != len(sent):
            return [where]
        for i, (a, b) in enumerate(zip(sent, kept)):
            out += diff(a, b, f"{where}[{i}]")
    return out


def missing_required(obj, where=""):
    """Required attributes (per the model's _validation) left unset, recursively."""
    out = []
    if isinstance(obj, list):
        for i, o in enumerate(obj):
            out += missing_required(o, f"{where}[{i}]")
        return out
    if not hasattr(obj, "_attribute_map"):
        return out
    for attr, rule in getattr(obj, "_validation", {}).items():
        if rule.get("required") and getattr(obj, attr, None) is None:
            out.append(f"{where}.{obj._attribute_map[attr]['key']}".lstrip("."))
    for attr in obj._attribute_map:
        value = getattr(obj, attr, None)
        if value is not None:
            out += missing_required(value, f"{where}.{obj._attribute_map[attr]['key']}")
    return out


def check_body(kind, body):
    """None when the body is a valid `kind`, else the reason."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if kind == "resourceGroups":   # azure-mgmt-resource's ResourceGroup: location, tags, managedBy, properties
        extra = set(body) - {"location", "tags", "managedBy", "properties"}
        if extra or "location" not in body:
            return f"unknown properties {sorted(extra)}" if extra else "location is required"
        return None
    model = MODELS[kind]
    try:
        obj = model.deserialize(body)
        kept = obj.serialize(keep_readonly=True)
    except Exception as e:
        return f"{model.__name__}: {e}"
    unknown = diff(body, kept)
    if unknown:
        return f"{model.__name__} has no properties {unknown}"
    missing = missing_required(obj)
    if missing:
        return f"{model.__name__} lacks required {missing}"
    return None


def prop(r, *keys):
    for k in keys:
        if not isinstance(r, dict):
            return None
        r = r.get(k)
    return r


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("arm: " + (fmt % args) + "\n")

    def answer(self, status, body=None, headers=()):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.send_header("x-ms-correlation-request-id", str(uuid.uuid4()))
        if data:
            self.send_header("Content-Type", "application/json")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, code, message, target=None, headers=()):
        e = {"code": code, "message": message}
        if target:
            e["target"] = target
        return self.answer(status, {"error": e}, headers)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = unquote(url.path).rstrip("/")
        if path.startswith("/_admin/"):
            return self.admin(path, raw)
        if path.endswith("/oauth2/v2.0/token"):
            return self.token(path, raw)
        with lock:
            stats["requests"] += 1
            n = stats["requests"]
            if len(stats["bodies"]) < 2000:
                stats["bodies"].append(raw.decode(errors="replace"))
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in tokens:
            stats["auth_failures"] += 1
            return self.error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        if config["throttle_every"] and n % config["throttle_every"] == 0:
            stats["throttled"] += 1
            return self.error(429, "TooManyRequests", "Too many requests, retry later.", headers=[("Retry-After", "1")])
        if path.startswith("/_ops/"):
            return self.operation(path, query)
        if "api-version" not in query:
            return self.error(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
        if not path.lower().startswith(f"/subscriptions/{SUB}/"):
            return self.error(404, "SubscriptionNotFound", f"The subscription '{path.split('/')[2] if path.count('/') > 1 else ''}' could not be found.")
        op = f"{self.command} {type_of(path) or path.rsplit('/', 1)[-1]}"
        with lock:
            stats["ops"][op] = stats["ops"].get(op, 0) + 1
        if self.command == "POST" and path.lower().endswith("/listkeys"):
            account = path[: -len("/listKeys")]
            if account.lower() not in resources:
                return self.error(404, "ResourceNotFound", f"The Resource '{account}' was not found.")
            return self.answer(200, {"keys": [{"keyName": "key1", "value": STORAGE_KEY, "permissions": "FULL"}]})
        if self.command == "GET" and path.lower().endswith("/versions"):
            parent = path[: -len("/versions")]
            if parent.lower() not in resources:
                return self.error(404, "ResourceNotFound", f"The Resource '{parent}' was not found.")
            with lock:
                items = [r for k, r in resources.items() if k.startswith(parent.lower() + "/versions/") and k.count("/") == parent.count("/") + 2]
            return self.answer(200, {"value": items})
        kind = type_of(path)
        if kind is None:
            return self.error(400, "InvalidResourceType", f"no resource type at {path}")
        rg = "/".join(path.split("/")[:5]).lower()
        if kind != "resourceGroups" and rg not in resources:
            return self.error(404, "ResourceGroupNotFound", f"Resource group '{path.split('/')[4]}' could not be found.")
        if self.command == "GET":
            with lock:
                r = resources.get(path.lower())
            if r is None:
                return self.error(404, "ResourceNotFound", f"The Resource '{path}' under resource group was not found.")
            return self.answer(200, r)
        if self.command == "PUT":
            return self.put(path, kind, raw)
        if self.command == "DELETE":
            return self.delete(path, kind)
        return self.error(405, "MethodNotAllowed", "not supported here")

    # MARK: token endpoint

    def token(self, path, raw):
        form = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        ok = (path == f"/{TENANT}/oauth2/v2.0/token" and form.get("grant_type") == "client_credentials"
              and form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET
              and form.get("scope") == SCOPE
              and self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"))
        if not ok:
            stats["token_refusals"] += 1
            return self.answer(401, {"error": "invalid_client",
                                     "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value."})
        token = secrets.token_urlsafe(48)
        with lock:
            tokens.add(token)
            stats["tokens"] += 1
        return self.answer(200, {"token_type": "Bearer", "expires_in": config["expires_in"], "access_token": token})

    # MARK: long-running operations

    def start_operation(self, status, body, finish, location_style=False, result_id=None):
        op = uuid.uuid4().hex
        with lock:
            operations[op] = {"left": config["polls"], "finish": finish, "result": result_id}
        base = f"http://127.0.0.1:{PORT}/_ops/{op}"
        headers = [("Retry-After", config["retry_after"])]
        if location_style:
            headers.append(("Location", base + "/result?api-version=2023-05-01"))
        else:
            headers.append(("Azure-AsyncOperation", base + "?api-version=2024-07-01"))
        return self.answer(status, body, headers)

    def operation(self, path, query):
        parts = path.split("/")
        op = operations.get(parts[2])
        if op is None:
            return self.error(404, "OperationNotFound", "no such operation")
        with lock:
            stats["polls"] += 1
            n = stats["polls"]
        if config["poll_503_every"] and n % config["poll_503_every"] == 0:
            return self.error(503, "ServiceUnavailable", "try again", headers=[("Retry-After", "1")])
        with lock:
            if op["left"] > 0:
                op["left"] -= 1
                running = True
            else:
                running = False
                if op["finish"]:
                    op["finish"]()
                    op["finish"] = None
        if len(parts) > 3 and parts[3] == "result":
            if running:
                return self.answer(202, None, [("Retry-After", config["retry_after"]), ("Location", f"http://127.0.0.1:{PORT}{path}?api-version=2023-05-01")])
            with lock:
                r = resources.get(op["result"] or "")
            return self.answer(200, r) if r else self.answer(204)
        return self.answer(200, {"status": "InProgress" if running else "Succeeded", "name": parts[2]},
                           [("Retry-After", config["retry_after"])] if running else [])

    # MARK: PUT

    def put(self, path, kind, raw):
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return self.error(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized.")
        problem = check_body(kind, body)
        if problem is None:
            problem = self.semantics(path, kind, body)
        if problem:
            stats["rejected"].append(f"{kind}: {problem}")
            return self.error(400, "InvalidRequestContent", problem, target=kind)
        with lock:
            stats["mutations"] += 1
        key = path.lower()
        existed = key in resources
        name = path.rsplit("/", 1)[1]
        rtype = "Microsoft.Resources/resourceGroups" if kind == "resourceGroups" else kind
        resource = dict(body)
        resource.update({"id": path, "name": name, "type": rtype})
        props = dict(resource.get("properties") or {})
        props["provisioningState"] = "Creating" if not existed else "Updating"
        resource["properties"] = props
        if kind == "storageAccounts":
            props["primaryEndpoints"] = {"blob": config["blob_endpoint"]}
            props.pop("provisioningState")
        if kind == "publicIPAddresses":
            old = resources.get(key)
            props["ipAddress"] = prop(old, "properties", "ipAddress") or f"20.30.40.{ip_counter[0]}"
            ip_counter[0] += 1
        if kind == "virtualNetworks":
            for s in props.get("subnets", []):
                s["id"] = f"{path}/subnets/{s['name']}"
        if kind == "networkSecurityGroups":
            for s in props.get("securityRules", []):
                s["id"] = f"{path}/securityRules/{s['name']}"
        if kind == "virtualMachines":
            props["vmId"] = str(uuid.uuid4())

        def finish():
            resource["properties"]["provisioningState"] = "Succeeded"
            if kind == "storageAccounts":
                resource["properties"]["provisioningState"] = "Succeeded"
            with lock:
                resources[key] = resource
                if kind == "virtualMachines":
                    self.make_disks(path, resource)

        if kind == "storageAccounts":
            return self.start_operation(202, None, finish, location_style=True, result_id=key)
        if kind == "resourceGroups":
            resource["properties"] = {"provisioningState": "Succeeded"}
            with lock:
                resources[key] = resource
            return self.answer(200 if existed else 201, resource)
        with lock:
            if existed:
                resources[key]["properties"]["provisioningState"] = "Updating"
        return self.start_operation(200 if existed else 201, resource, finish)

    def make_disks(self, vm_path, vm):
        rg = "/".join(vm_path.split("/")[:5])
        sp = prop(vm, "properties", "storageProfile") or {}
        disks = [sp.get("osDisk") or {}] + list(sp.get("dataDisks") or [])
        for d in disks:
            name = d.get("name") or f"{vm['name']}_disk_{uuid.uuid4().hex[:8]}"
            did = f"{rg}/providers/Microsoft.Compute/disks/{name}"
            resources[did.lower()] = {"id": did, "name": name, "type": "Microsoft.Compute/disks", "location": vm["location"],
                                      "properties": {"provisioningState": "Succeeded", "diskState": "Attached"},
                                      "managedBy": vm_path, "deleteOption": d.get("deleteOption", "Detach")}

    def semantics(self, path, kind, body):
        """What ARM itself would refuse beyond the schema: references to missing resources."""
        def exists(rid):
            return isinstance(rid, str) and rid.lower() in resources
        if kind in ("galleries", "storageAccounts", "virtualMachines", "images", "versions") and "location" not in body:
            return "location is required"
        if kind == "images":
            gallery = path.lower().rsplit("/images/", 1)[0]
            if gallery not in resources:
                return f"ParentResourceNotFound: gallery {gallery}"
        if kind == "versions":
            image = path.lower().rsplit("/versions/", 1)[0]
            if image not in resources:
                return f"ParentResourceNotFound: image definition {image}"
            if not re.fullmatch(r"\d+\.\d+\.\d+", path.rsplit("/", 1)[1]):
                return "image version names are Major.Minor.Patch"
            src = prop(body, "properties", "storageProfile", "osDiskImage", "source") or {}
            if not exists(src.get("storageAccountId")):
                return f"storageAccountId {src.get('storageAccountId')} does not exist"
            if not str(src.get("uri", "")).startswith(config["blob_endpoint"]):
                return f"source uri {src.get('uri')} is not in the storage account"
            feats = prop(resources[image], "properties", "features") or []
            if {"name": "SecurityType", "value": "TrustedLaunchAndConfidentialVmSupported"} not in feats:
                return "the image definition does not support confidential VMs"
        if kind == "networkInterfaces":
            for ipc in prop(body, "properties", "ipConfigurations") or []:
                subnet = prop(ipc, "properties", "subnet", "id")
                vnet = str(subnet).lower().rsplit("/subnets/", 1)[0]
                if vnet not in resources:
                    return f"subnet {subnet} does not exist"
                pip = prop(ipc, "properties", "publicIPAddress", "id")
                if pip and not exists(pip):
                    return f"public IP {pip} does not exist"
            nsg = prop(body, "properties", "networkSecurityGroup", "id")
            if nsg and not exists(nsg):
                return f"network security group {nsg} does not exist"
        if kind == "virtualMachines":
            image = prop(body, "properties", "storageProfile", "imageReference", "id")
            if not exists(image) or prop(resources[image.lower()], "properties", "provisioningState") != "Succeeded":
                return f"image {image} does not exist or is not ready"
            for nic in prop(body, "properties", "networkProfile", "networkInterfaces") or []:
                if not exists(nic.get("id")):
                    return f"network interface {nic.get('id')} does not exist"
            if prop(body, "properties", "securityProfile", "securityType") != "ConfidentialVM":
                return "this fake only makes confidential VMs"
            if not prop(body, "properties", "storageProfile", "osDisk", "managedDisk", "securityProfile", "securityEncryptionType"):
                return "a ConfidentialVM needs osDisk.managedDisk.securityProfile.securityEncryptionType"
        return None

    # MARK: DELETE

    def delete(self, path, kind):
        key = path.lower()
        with lock:
            if key not in resources:
                return self.answer(204)
            users = self.users_of(key, kind)
        if users:
            return self.error(400 if kind != "galleries" and kind != "images" else 409, "InUse",
                              f"{path} is in use by {users[0]} and cannot be deleted.")
        with lock:
            stats["mutations"] += 1

        def finish():
            with lock:
                r = resources.pop(key, None)
                if kind == "resourceGroups":
                    for k in [k for k in resources if k.startswith(key + "/")]:
                        resources.pop(k)
                if kind == "virtualMachines" and r:
                    for k, d in list(resources.items()):
                        if d.get("managedBy", "").lower() == key:
                            if d.get("deleteOption") == "Delete":
                                resources.pop(k)
                            else:
                                d.pop("managedBy")
        return self.start_operation(202, None, finish)

    def users_of(self, key, kind):
        users = []
        if kind == "disks" and resources[key].get("managedBy"):
            return [resources[key]["managedBy"]]
        for k, r in resources.items():
            text = json.dumps(r.get("properties", {})).lower()
            if k == key or k.startswith(key + "/"):
                if kind in ("galleries", "images") and k != key and k.count("/") == key.count("/") + 2:
                    users.append(k)
                continue
            if kind == "resourceGroups":
                continue
            if f'"{key}"' in text or (kind == "virtualNetworks" and f'"{key}/subnets/' in text):
                users.append(k)
        return users

    # MARK: admin

    def admin(self, path, raw):
        if path == "/_admin/state":
            with lock:
                return self.answer(200, {"resources": sorted(r["id"] for r in resources.values()),
                                         "objects": list(resources.values())})
        if path == "/_admin/stats":
            with lock:
                return self.answer(200, stats)
        if path == "/_admin/config":
            config.update(json.loads(raw or b"{}"))
            return self.answer(200, config)
        if path == "/_admin/tokens":
            with lock:
                return self.answer(200, {"tokens": sorted(tokens)})
        if path == "/_admin/seed":   # a resource made outside this tool (portal, az)
            r = json.loads(raw)
            with lock:
                resources[r["id"].lower()] = r
            return self.answer(200, r)
        if path == "/_admin/check":
            req = json.loads(raw)
            return self.answer(200, {"problem": check_body(req["type"], req["body"])})
        return self.answer(404)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = handle_any


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
