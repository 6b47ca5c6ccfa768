#!/usr/bin/env python3
"""A fake cvm-agent for the pinning tests: HTTPS on 127.0.0.1 with a self-signed EC P-256
certificate made at start (like the real agent), serving GET /golden-measurement (with the
certificate's tls_fingerprint, or a wrong one with --wrong-fingerprint) and GET /api-token once
(then 410). Every request line it receives is appended to --log, so tests can assert that a
refused client sent nothing.

  fake_agent.py agent --cert-dir D --log L --port-file P [--wrong-fingerprint]
  fake_agent.py mitm  --cert-dir D --log L --port-file P --upstream PORT
      A TLS-terminating relay presenting its own certificate and forwarding to the upstream.
"""
import argparse, datetime, hashlib, http.server, json, os, secrets, socket, ssl, sys, threading

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


def serve_agent(args):
    cert_path, key_path, fingerprint = make_cert(args.cert_dir, "agent")
    served = args.wrong_fingerprint and ("0" * 64) or fingerprint
    state = {"token": secrets.token_hex(32)}
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
                self.reply(200, {"version": 1, "tee": "none",
                                 "pcrs": {"sha256": {str(i): "00" * 32 for i in range(24)}},
                                 "event_log": "", "workload_events": [],
                                 "tls_fingerprint": "sha256:" + served, "agent_version": "fake"})
            elif self.path == "/api-token":
                if state["token"] is None:
                    self.reply(410, {"error": "the API token was already issued"})
                else:
                    token, state["token"] = state["token"], None
                    self.reply(200, {"token": token})
            else:
                self.reply(404, {"error": "not found"})

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
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
    p.add_argument("--wrong-fingerprint", action="store_true")
    a = p.parse_args()
    open(a.log, "a").close()
    (serve_agent if a.mode == "agent" else serve_mitm)(a)
