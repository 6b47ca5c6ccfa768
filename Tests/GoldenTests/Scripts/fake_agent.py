#!/usr/bin/env python3
"""A fake cvm-agent for the pinning tests: HTTPS on 127.0.0.1 with a self-signed EC P-256
certificate made at start (like the real agent), serving GET /golden-measurement (with the
certificate's tls_fingerprint, or a wrong one with --wrong-fingerprint), GET /api-token once
(then 410) and POST /update-workload. Every request line it receives is appended to --log, so
tests can assert that a refused client sent nothing.

POST /update-workload is checked and measured here independently of cvm-cli's Swift code:
Python's tarfile reads the archive, and the measurement (docs/measurement.md) extends PCR 23 on
top of its current value, as the real agent does (docs/agent-api.md).

  fake_agent.py agent --cert-dir D --log L --port-file P [--wrong-fingerprint] [--port N]
                [--update-status N]   answer every update with N (403, 413, 415: as the agent)
                [--extra-extend]      also extend PCR 23 once more after the update (something else did)
                [--extend-before]     extend PCR 23 once just before applying the update
                [--report-delay S]    /golden-measurement shows an update S seconds late
  fake_agent.py mitm  --cert-dir D --log L --port-file P --upstream PORT
      A TLS-terminating relay presenting its own certificate and forwarding to the upstream.
"""
import argparse, datetime, gzip, hashlib, hmac, http.server, io, json, os, secrets, socket, ssl, sys, tarfile, threading, time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_cert(directory, name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    os.makedirs(directory, exist_ok=True)
    cert_path, key_path = os.path.join(directory, name + ".crt"), os.path.join(directory, name + ".key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    with open(os.path.join(directory, name + ".sha256"), "w") as f:
        f.write(fingerprint)
    return cert_path, key_path, fingerprint


def log_line(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")


def tls_context(cert_path, key_path):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def measure_tar(body):
    """The workload events of a tar.gz (compose file, config/ entries, top-level *.tar)."""
    content = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(body)), mode="r:") as tar:
        for member in tar.getmembers():
            name = "/".join(p for p in member.name.split("/") if p not in ("", "."))
            if not name:
                continue
            if member.name.startswith("/") or ".." in name.split("/"):
                raise ValueError("tar: path '%s' leaves the workload folder" % member.name)
            if member.isfile():
                content[name] = hashlib.sha256(tar.extractfile(member).read()).digest()
            elif member.issym():
                content[name] = hashlib.sha256(("symlink:" + member.linkname).encode()).digest()
            elif not member.isdir():
                raise ValueError("tar: %s is not a file, folder or symlink" % name)
    key = lambda n: n.encode()
    order = [n for n in ["docker-compose.yml"] if n in content]
    order += sorted((n for n in content if n.startswith("config/")), key=key)
    order += sorted((n for n in content if "/" not in n and n.endswith(".tar")), key=key)
    events = []
    for name in order:
        digest = hashlib.sha256(name.encode() + b"\0" + content[name]).digest()
        events.append({"name": name, "content_sha256": content[name].hex(), "digest": digest.hex()})
    return events


def serve_agent(args):
    cert_path, key_path, fingerprint = make_cert(args.cert_dir, "agent")
    served = args.wrong_fingerprint and ("0" * 64) or fingerprint
    state = {"token": secrets.token_hex(32), "issued": None, "pcr23": bytes(32), "base": bytes(32),
             "events": [], "updates": 0, "shown": None}
    lock = threading.Lock()
    with open(os.path.join(args.cert_dir, "token"), "w") as f:
        f.write(state["token"])

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, status, obj):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            log_line(args.log, "GET " + self.path)
            if self.path == "/golden-measurement":
                with lock:
                    view = state["shown"] if state["shown"] and time.time() < state["shown"][0] else None
                    pcr23, base, events, updates = view[1] if view else (state["pcr23"], state["base"], state["events"], state["updates"])
                pcrs = {str(i): "00" * 32 for i in range(24)}
                pcrs["23"] = pcr23.hex()
                self.reply(200, {"version": 1, "tee": "none", "pcrs": {"sha256": pcrs},
                                 "event_log": "", "workload_events": events,
                                 "workload_pcr23_base": base.hex(), "workload_updates": updates,
                                 "tls_fingerprint": "sha256:" + served, "agent_version": "fake"})
            elif self.path == "/api-token":
                if state["token"] is None:
                    self.reply(410, {"error": "the API token was already issued"})
                else:
                    token, state["token"] = state["token"], None
                    state["issued"] = hashlib.sha256(token.encode()).digest()
                    self.reply(200, {"token": token})
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            status, answer = self.update(body)
            log_line(args.log, "POST %s %d" % (self.path, status))
            self.reply(status, answer)

        def update(self, body):
            if self.path != "/update-workload":
                return 404, {"error": "not found"}
            if args.update_status == 403:
                return 403, {"error": "the policy disables the workload update endpoint (https_server.enable_workload_update_endpoint)"}
            auth = self.headers.get("Authorization", "")
            given = hashlib.sha256(auth[len("Bearer "):].encode()).digest() if auth.startswith("Bearer ") else b""
            if state["issued"] is None or not hmac.compare_digest(given, state["issued"]):
                return 401, {"error": "missing or wrong Authorization: Bearer <token> (GET /api-token issues it once)"}
            if args.update_status == 415 or self.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/gzip":
                return 415, {"error": "Content-Type must be application/gzip (a tar.gz of the workload folder's content)"}
            if args.update_status == 413 or len(body) > 64 << 20:
                return 413, {"error": "body larger than %d bytes" % (64 << 20)}
            try:
                events = measure_tar(body)
            except (ValueError, OSError, tarfile.TarError, EOFError) as e:
                return 400, {"error": str(e)}
            with lock:
                old = (state["pcr23"], state["base"], state["events"], state["updates"])
                if args.extend_before:
                    state["pcr23"] = hashlib.sha256(state["pcr23"] + hashlib.sha256(b"in between").digest()).digest()
                pcr = base = state["pcr23"]
                for event in events:
                    pcr = hashlib.sha256(pcr + bytes.fromhex(event["digest"])).digest()
                after = pcr
                if args.extra_extend:
                    pcr = hashlib.sha256(pcr + hashlib.sha256(b"something else").digest()).digest()
                state.update(pcr23=pcr, base=base, events=events, updates=state["updates"] + 1)
                if args.report_delay:
                    state["shown"] = (time.time() + args.report_delay, old)
            return 200, {"previous_pcr23": base.hex(), "pcr23": after.hex(), "workload_events": events}

    class PlainHandler(Handler):
        def do_GET(self):
            log_line(args.log, "HTTP GET " + self.path)
            parts = self.path.split("/")
            if len(parts) == 3 and parts[1] == "collaterals":
                self.reply(200, {"quote": "AAAA", "signature": "AAAA", "ak_public": "PEM", "nonce": parts[2],
                                 "pcrs": {"sha256": {}}, "event_log": "", "workload_events": [],
                                 "tls_fingerprint": "sha256:" + served})
            else:
                self.reply(404, {"error": "not found"})

    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PlainHandler)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    announce(args.port_file + ".http", plain.server_address[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.socket = tls_context(cert_path, key_path).wrap_socket(server.socket, server_side=True)
    announce(args.port_file, server.server_address[1])
    server.serve_forever()


def serve_mitm(args):
    cert_path, key_path, _ = make_cert(args.cert_dir, "mitm")
    ctx = tls_context(cert_path, key_path)
    upstream_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    upstream_ctx.check_hostname = False
    upstream_ctx.verify_mode = ssl.CERT_NONE
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    announce(args.port_file, listener.getsockname()[1])

    def pump(src, dst, tag):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if tag:
                    log_line(args.log, "relayed " + data.split(b"\r\n", 1)[0].decode("latin-1"))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def handle(raw):
        try:
            client = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log_line(args.log, "handshake failed: %s" % e.__class__.__name__)
            raw.close()
            return
        upstream = upstream_ctx.wrap_socket(socket.create_connection(("127.0.0.1", args.upstream)))
        threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()
        pump(client, upstream, True)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def announce(port_file, port):
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, port_file)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["agent", "mitm"])
    p.add_argument("--cert-dir", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--upstream", type=int)
    p.add_argument("--port", type=int, default=0, help="the HTTPS port (default: any free one)")
    p.add_argument("--wrong-fingerprint", action="store_true")
    p.add_argument("--update-status", type=int)
    p.add_argument("--extra-extend", action="store_true")
    p.add_argument("--extend-before", action="store_true")
    p.add_argument("--report-delay", type=float, default=0)
    a = p.parse_args()
    open(a.log, "a").close()
    (serve_agent if a.mode == "agent" else serve_mitm)(a)
