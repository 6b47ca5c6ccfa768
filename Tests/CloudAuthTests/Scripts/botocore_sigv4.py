"""Referee for the SigV4 tests: signs each request with botocore and reports what it computed.

stdin: {"requests": [{"access_key", "secret_key", "token"?, "method", "url", "headers": [[n, v]], "body_hex",
        "service", "region", "timestamp" (YYYYMMDDTHHMMSSZ), "presign_expires"?, "unsigned"?}]}
stdout: [{"authorization"?: str, "signature": str, "canonical_request": str}, ...]
"""
import datetime
import json
import sys
from types import SimpleNamespace
from unittest import mock

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

doc = json.load(sys.stdin)
out = []
for r in doc["requests"]:
    creds = Credentials(r["access_key"], r["secret_key"], r.get("token"))
    when = datetime.datetime.strptime(r["timestamp"], "%Y%m%dT%H%M%SZ")
    body = bytes.fromhex(r["body_hex"])
    request = AWSRequest(method=r["method"], url=r["url"], data=body, headers=dict(r["headers"]))
    expires = r.get("presign_expires")
    if r["service"] == "s3":
        cls = botocore.auth.S3SigV4QueryAuth if expires else botocore.auth.S3SigV4Auth
    else:
        cls = botocore.auth.SigV4QueryAuth if expires else botocore.auth.SigV4Auth
    signer = cls(creds, r["service"], r["region"], expires=expires) if expires else cls(creds, r["service"], r["region"])
    unsigned = r.get("unsigned", False)
    request.context["payload_signing_enabled"] = not unsigned
    request.context["client_config"] = SimpleNamespace(s3={"payload_signing_enabled": not unsigned})
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        signer.add_auth(request)
    canonical = signer.canonical_request(request)
    if expires:
        from urllib.parse import parse_qs, urlsplit
        q = parse_qs(urlsplit(request.url).query, keep_blank_values=True)
        out.append({"signature": q["X-Amz-Signature"][0], "url": request.url})
    else:
        auth = request.headers["Authorization"]
        out.append({"authorization": auth, "signature": auth.rsplit("Signature=", 1)[1],
                    "canonical_request": canonical})
json.dump(out, sys.stdout)
