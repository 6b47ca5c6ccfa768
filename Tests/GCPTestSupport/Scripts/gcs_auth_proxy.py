"""OAuth token server + bearer-checking proxy in front of gcp-storage-emulator (tests only).

POST /token            JWT-bearer grant: the RS256 assertion is verified with PyJWT against the
                       test service account's public key (aud = our token_uri or Google's,
                       exp - iat <= 3600, scope and iss present); answers an access token.
                       With --user, also the refresh-token grant of authorized_user credentials.
GET  /harness-stats    what happened: body bytes received on storage requests, faults injected,
                       tokens issued, assertions and upload ids seen (the tests grep outputs for them).
anything else          needs `Authorization: Bearer <a token issued here>` (else 401), then is
                       forwarded to the emulator with its Host header (so the session URI points here).

--faults injects, on chunk PUT attempts 1..6: a 308 without Range (nothing kept), a dropped connection, 503 + Retry-After, 429,
a chunk forwarded and then its answer dropped, and a slow answer; plus a 500 on the first
session start and a 503 on the first token request.
--chunk-delay S holds every chunk PUT S seconds before forwarding (kill tests).
"""
import argparse
import json
import secrets
import threading
import time
import urllib.parse

import jwt
from cryptography.hazmat.primitives import serialization

from proxy_common import Faults, ForwardingHandler, serve

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--upstream-port", type=int, required=True)
parser.add_argument("--public-key", required=True)
parser.add_argument("--client-email", required=True)
parser.add_argument("--token-uri", required=True)
parser.add_argument("--token-lifetime", type=int, default=3600)
parser.add_argument("--user", default="", help="CLIENT_ID:CLIENT_SECRET:REFRESH_TOKEN accepted by the refresh-token grant")
parser.add_argument("--faults", action="store_true")
parser.add_argument("--chunk-delay", type=float, default=0.0)
args = parser.parse_args()

with open(args.public_key, "rb") as f:
    PUBLIC_KEY = serialization.load_pem_public_key(f.read())

lock = threading.Lock()
stats = {"bytes_in": 0, "chunk_puts": 0, "status_queries": 0, "unauthorized": 0,
         "tokens": [], "assertions": [], "upload_ids": [], "token_requests": 0, "rejected_grants": 0}
issued = {}  # token -> expiry
faults = Faults()
first, note_fault = faults.first_time, faults.count


CHUNK_FAULTS = {1: "308-no-range", 2: "drop", 3: "503", 4: "429", 5: "drop-after-forward", 6: "slow"}


class Handler(ForwardingHandler):
    upstream_port = args.upstream_port
    upstream_timeout = 120

    def read_body(self, count_it):
        n = int(self.headers.get("Content-Length") or 0)
        parts = []
        while n > 0:
            piece = self.rfile.read(min(n, 65536))
            if not piece:
                break
            parts.append(piece)
            n -= len(piece)
            if count_it:
                with lock:
                    stats["bytes_in"] += len(piece)
        return b"".join(parts)

    def drop(self):
        """Cuts the connection in the middle of an answer (a bare close on a reused connection
        is retried inside libcurl, invisibly; this one reaches the client's retry logic)."""
        self.close_connection = True
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"kind\":")
            self.wfile.flush()
            self.connection.shutdown(2)
        except OSError:
            pass

    def token(self, body):
        with lock:
            stats["token_requests"] += 1
        if args.faults and first("token503"):
            note_fault("token503")
            return self.answer(503, b'{"error":"temporarily_unavailable"}', [("Retry-After", "0"), ("Content-Type", "application/json")])
        form = urllib.parse.parse_qs(body.decode())
        def refuse(description):
            with lock:
                stats["rejected_grants"] += 1
            self.answer(400, json.dumps({"error": "invalid_grant", "error_description": description}).encode(),
                        [("Content-Type", "application/json")])
        if form.get("grant_type") == ["refresh_token"] and args.user:
            # gcloud's authorized_user credentials: all three values must match.
            client_id, client_secret, refresh_token = args.user.split(":", 2)
            got = tuple((form.get(k) or [""])[0] for k in ("client_id", "client_secret", "refresh_token"))
            if got != (client_id, client_secret, refresh_token):
                return refuse("Bad Request")
            return self.issue()
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return refuse("unsupported grant_type")
        assertion = (form.get("assertion") or [""])[0]
        with lock:
            stats["assertions"].append(assertion)
        try:
            claims = jwt.decode(assertion, PUBLIC_KEY, algorithms=["RS256"],
                                audience=[args.token_uri, GOOGLE_TOKEN_URI],
                                options={"require": ["exp", "iat", "iss", "aud"]})
        except jwt.InvalidSignatureError:
            return refuse("Invalid JWT Signature.")
        except jwt.PyJWTError as e:
            return refuse("Invalid JWT: %s" % type(e).__name__)
        if claims["exp"] - claims["iat"] > 3600:
            return refuse("Invalid JWT: lifetime over 3600 s")
        if claims["iss"] != args.client_email:
            return refuse("Invalid JWT: unknown issuer")
        if not str(claims.get("scope", "")).strip():
            return refuse("Invalid JWT: no scope")
        self.issue()

    def issue(self):
        token = "ya29.test-" + secrets.token_urlsafe(32)
        with lock:
            issued[token] = time.time() + args.token_lifetime
            stats["tokens"].append(token)
        self.answer(200, json.dumps({"access_token": token, "expires_in": args.token_lifetime,
                                     "token_type": "Bearer"}).encode(), [("Content-Type", "application/json")])

    def handle_any(self):
        if self.path == "/harness-stats":
            self.read_body(False)
            with lock:
                body = json.dumps(dict(stats, faults=faults.snapshot())).encode()
            return self.answer(200, body, [("Content-Type", "application/json")])
        if self.path == "/token" and self.command == "POST":
            return self.token(self.read_body(False))

        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with lock:
            ok = token in issued and issued[token] > time.time()
        if not ok:
            self.read_body(True)
            with lock:
                stats["unauthorized"] += 1
            return self.answer(401, json.dumps({"error": {"code": 401, "message": "Invalid Credentials",
                                                          "errors": [{"reason": "authError"}]}}).encode(),
                               [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")])

        content_range = self.headers.get("Content-Range", "")
        is_chunk = self.command == "PUT" and "upload_id=" in self.path and "-" in content_range
        body = self.read_body(self.command == "PUT")
        fault = None
        if is_chunk:
            with lock:
                stats["chunk_puts"] += 1
                n = stats["chunk_puts"]
            if args.faults:
                fault = CHUNK_FAULTS.get(n)
            if args.chunk_delay:
                time.sleep(args.chunk_delay)
        elif self.command == "PUT" and "upload_id=" in self.path:
            with lock:
                stats["status_queries"] += 1
        if self.command == "POST" and "uploadType=resumable" in self.path and args.faults and first("start500"):
            note_fault("start500")
            return self.answer(500, b'{"error":{"code":500,"message":"Backend Error"}}', [("Content-Type", "application/json")])
        if fault:
            note_fault(fault)
            if fault == "drop":
                return self.drop()
            if fault == "503":
                return self.answer(503, b'{"error":{"code":503,"message":"Service Unavailable"}}',
                                   [("Retry-After", "1"), ("Content-Type", "application/json")])
            if fault == "429":
                return self.answer(429, b'{"error":{"code":429,"message":"rate limited","errors":[{"reason":"rateLimitExceeded"}]}}',
                                   [("Retry-After", "0"), ("Content-Type", "application/json")])
            if fault == "slow":
                time.sleep(2)
            if fault == "308-no-range":
                # What real GCS says when it kept nothing of the chunk (the emulator never does).
                return self.answer(308, b"", [("X-GUploader-UploadID", "not-a-secret")])

        status, data, out = self.forward(self.command, self.path, body)
        location = next((v for k, v in out if k.lower() == "location"), "")
        if "upload_id=" in location:
            upload_id = urllib.parse.parse_qs(urllib.parse.urlparse(location).query).get("upload_id", [""])[0]
            with lock:
                stats["upload_ids"].append(upload_id)
                stats["upload_ids"].append(urllib.parse.quote(upload_id, safe=""))
        if fault == "drop-after-forward":
            return self.drop()
        self.answer(status, data, out)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = handle_any


serve(args.port, Handler)
