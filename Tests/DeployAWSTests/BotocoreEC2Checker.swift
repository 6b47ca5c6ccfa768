/// Judges recorded EC2 query requests by botocore's `ec2` service model: the flat form body is
/// decoded along the operation's input shape with EC2's query flattening (`queryName`, else
/// the capitalised `locationName`, else the member name; lists as `Name.N` from 1), then
/// botocore validates it (required members, types) and serializes it again; the two bodies must
/// be identical, so an unknown or misspelt parameter fails. Enum values are checked against the
/// model too. Prints one JSON object: {"checked": N, "errors": [...], "requests": [{action, params}]}.
let botocoreEC2CheckerScript = #"""
import base64, json, sys, urllib.parse
import botocore.session
from botocore.serialize import create_serializer
from botocore.validate import ParamValidator

model = botocore.session.get_session().get_service_model("ec2")
serializer = create_serializer("ec2", include_validation=False)

def wire_name(shape, default):
    if "queryName" in shape.serialization: return shape.serialization["queryName"]
    if "name" in shape.serialization:
        n = shape.serialization["name"]; return n[0].upper() + n[1:]
    return default

def present(flat, p):
    return any(k == p or k.startswith(p + ".") for k in flat)

def decode(shape, flat, prefix, errors):
    t = shape.type_name
    if t == "structure":
        out = {}
        for name, member in shape.members.items():
            p = (prefix + "." if prefix else "") + wire_name(member, name)
            if present(flat, p): out[name] = decode(member, flat, p, errors)
        return out
    if t == "list":
        items, i = [], 1
        while present(flat, f"{prefix}.{i}"):
            items.append(decode(shape.member, flat, f"{prefix}.{i}", errors)); i += 1
        return items
    if prefix not in flat:
        errors.append(f"{prefix}: a {t} cannot have sub-keys"); return None
    v = flat[prefix]
    if getattr(shape, "enum", None) and v not in shape.enum:
        errors.append(f"{prefix}={v!r} is not one of {shape.enum}")
    if t == "boolean":
        if v not in ("true", "false"): errors.append(f"{prefix}={v!r} is not a boolean")
        return v == "true"
    if t in ("integer", "long"):
        try: return int(v)
        except ValueError: errors.append(f"{prefix}={v!r} is not an integer"); return 0
    if t in ("float", "double"): return float(v)
    if t == "blob": return base64.b64decode(v)
    return v

records = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = {"checked": 0, "errors": [], "requests": []}
for r in records:
    if not r.get("action"): continue
    flat = {k: v[0] for k, v in urllib.parse.parse_qs(r["body"], keep_blank_values=True).items()}
    action = flat.pop("Action"); version = flat.pop("Version", None)
    errors = []
    if version != "2016-11-15": errors.append(f"Version={version}")
    try:
        op = model.operation_model(action)
    except Exception:
        out["errors"].append(f"{action}: no such EC2 operation"); continue
    params = decode(op.input_shape, flat, "", errors)
    report = ParamValidator().validate(params, op.input_shape)
    if report.has_errors(): errors.append(report.generate_report())
    again = serializer.serialize_to_request(params, op)["body"]
    again.pop("Action", None); again.pop("Version", None)
    again = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in again.items()}
    for k in sorted(set(flat) - set(again)): errors.append(f"unknown parameter {k}")
    for k in sorted(set(again) - set(flat)): errors.append(f"botocore adds {k}")
    for k in sorted(set(flat) & set(again)):
        if flat[k] != again[k]: errors.append(f"{k}: ours {flat[k]!r}, botocore {again[k]!r}")
    out["checked"] += 1
    out["errors"] += [f"{action}: {e}" for e in errors]
    out["requests"].append({"action": action, "params": flat})
print(json.dumps(out))
"""#
