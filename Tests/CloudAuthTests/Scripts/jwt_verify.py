"""Referee for the Google JWT tests: verifies RS256 JWTs with `cryptography` against a PEM key.

stdin: {"key_path": PEM private key file, "jwts": [str, ...]}
stdout: [{"valid": bool, "header": {...}, "claims": {...}}, ...]
"""
import base64
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def b64url(segment):
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


doc = json.load(sys.stdin)
with open(doc["key_path"], "rb") as f:
    public_key = serialization.load_pem_private_key(f.read(), password=None).public_key()
out = []
for token in doc["jwts"]:
    header, claims, signature = token.split(".")
    try:
        public_key.verify(b64url(signature), (header + "." + claims).encode(), padding.PKCS1v15(), hashes.SHA256())
        valid = True
    except InvalidSignature:
        valid = False
    out.append({"valid": valid, "header": json.loads(b64url(header)), "claims": json.loads(b64url(claims))})
json.dump(out, sys.stdout)
