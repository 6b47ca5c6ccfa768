"""Referee for the SharedKey tests: recomputes Authorization with Microsoft's own code.

stdin: {"account": str, "key": base64 str, "requests": [{"method", "url", "headers": [[name, value], ...]}]}
stdout: ["SharedKey account:signature", ...] in the same order.
"""
import json
import sys

from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.transport import HttpRequest
from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy

doc = json.load(sys.stdin)
policy = SharedKeyCredentialPolicy(doc["account"], doc["key"])
out = []
for r in doc["requests"]:
    request = HttpRequest(r["method"], r["url"], headers=dict(r["headers"]))
    pipeline_request = PipelineRequest(request, PipelineContext(None))
    policy.on_request(pipeline_request)
    out.append(request.headers["Authorization"])
json.dump(out, sys.stdout)
