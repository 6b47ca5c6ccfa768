#!/usr/bin/env python3
"""Verifies a cvm-agent `GET /collaterals/{nonce}` answer independently of cvm-cli.

usage: verify-collaterals.py COLLATERALS.json NONCE_HEX [--golden GOLDEN.json [--pubkey PUBLIC.pem]]
                             [--tls-fingerprint sha256:HEX]

Checks (docs/agent-api.md): the ECDSA-SHA256 signature over the TPMS_ATTEST with ak_public;
the attestation's magic and type; extraData == SHA-256(nonce || tls fingerprint bytes);
pcrDigest == SHA-256 of the reported SHA-256 PCR values of the quoted selection, in index order;
the firmware event log (TCG2 crypto-agile) and the workload events (from workload_pcr23_base)
replay to the reported PCRs. With --golden: its signature (a signed document needs --pubkey;
RFC 8785 canonical JSON), its tls_fingerprint, and each of its pcrs.sha256 against the quote.
Prints a JSON summary on success, exits 1 with the failed check and reason otherwise.
The test oracle of `cvm-cli verify` (an independent implementation).
"""
import base64
import hashlib
import json
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


class Reader:
    def __init__(self, data):
        self.data, self.offset = data, 0

    def take(self, n):
        if self.offset + n > len(self.data):
            raise ValueError("truncated structure")
        out = self.data[self.offset:self.offset + n]
        self.offset += n
        return out

    def u8(self): return self.take(1)[0]
    def u16(self): return struct.unpack(">H", self.take(2))[0]
    def u32(self): return struct.unpack(">I", self.take(4))[0]
    def u64(self): return struct.unpack(">Q", self.take(8))[0]
    def sized(self): return self.take(self.u16())


def fail(message):
    print("verify-collaterals: " + message, file=sys.stderr)
    sys.exit(1)


def replay_event_log(log):
    """SHA-256 bank values of the PCRs a TCG2 crypto-agile log mentions (TCG PFP spec §10)."""
    r = Reader(log)
    le32 = lambda: struct.unpack("<I", r.take(4))[0]
    le16 = lambda: struct.unpack("<H", r.take(2))[0]
    le32(); first_type = le32(); r.take(20)
    spec = r.take(le32())
    if first_type != 3 or not spec.startswith(b"Spec ID Event03"):
        raise ValueError("not a crypto-agile log")
    sizes = {}
    for i in range(struct.unpack("<I", spec[24:28])[0]):
        alg, size = struct.unpack("<HH", spec[28 + 4 * i:32 + 4 * i])
        sizes[alg] = size
    pcrs = {}
    while r.offset + 8 <= len(log):
        pcr, kind = le32(), le32()
        digests = {}
        for _ in range(le32()):
            alg = le16()
            digests[alg] = r.take(sizes[alg])
        r.take(le32())
        if kind != 3 and 0x000B in digests:
            pcrs[pcr] = hashlib.sha256(pcrs.get(pcr, bytes(32)) + digests[0x000B]).digest()
    return pcrs


def canonical(value):
    """RFC 8785 for the documents at hand (strings, integers, booleans, objects, arrays)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def check_golden_signature(signed, pem_path):
    from cryptography.hazmat.primitives.asymmetric import padding
    with open(pem_path, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    sig = signed["signature"]
    if sig["key_id"] != hashlib.sha256(spki).hexdigest():
        fail("golden_signature: signed by another key")
    value, message = base64.b64decode(sig["value"]), canonical(signed["golden_measurement"])
    try:
        if sig["alg"] == "ES256":
            key.verify(value, message, ec.ECDSA(hashes.SHA256()))
        elif sig["alg"] == "RS256":
            key.verify(value, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(value, message, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    except InvalidSignature:
        fail("golden_signature: the signature does not verify")


def main():
    args = sys.argv[1:]
    options = {}
    for flag in ("--golden", "--pubkey", "--tls-fingerprint"):
        if flag in args:
            i = args.index(flag)
            options[flag] = args[i + 1]
            del args[i:i + 2]
    if len(args) != 2:
        fail("usage: verify-collaterals.py COLLATERALS.json NONCE_HEX [--golden G [--pubkey P]] [--tls-fingerprint F]")
    with open(args[0]) as f:
        doc = json.load(f)
    nonce = bytes.fromhex(args[1])
    if doc.get("nonce", nonce.hex()) != nonce.hex():
        fail("nonce: the collaterals are for another nonce")
    attest = base64.b64decode(doc["quote"])
    signature = base64.b64decode(doc["signature"])
    key = serialization.load_pem_public_key(doc["ak_public"].encode())
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        fail("ak_public is not a P-256 key")

    # TPMT_SIGNATURE: sigAlg ECDSA (0x0018), hash SHA-256 (0x000B), r, s.
    s = Reader(signature)
    if s.u16() != 0x0018 or s.u16() != 0x000B:
        fail("signature is not ECDSA with SHA-256")
    r_value, s_value = int.from_bytes(s.sized(), "big"), int.from_bytes(s.sized(), "big")
    try:
        key.verify(encode_dss_signature(r_value, s_value), attest, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        fail("the signature over the quote does not verify with ak_public")

    # TPMS_ATTEST of a quote.
    a = Reader(attest)
    if a.u32() != 0xFF544347:
        fail("quote: bad magic (not TPM_GENERATED_VALUE)")
    if a.u16() != 0x8018:
        fail("quote: not TPM_ST_ATTEST_QUOTE")
    a.sized()                                   # qualifiedSigner
    extra = a.sized()
    a.u64(); a.u32(); a.u32(); a.u8()           # clockInfo
    a.u64()                                     # firmwareVersion
    selected = []
    for _ in range(a.u32()):
        alg, size = a.u16(), a.u8()
        bitmap = a.take(size)
        if alg != 0x000B:
            fail("quote: selection of a bank other than SHA-256")
        selected += [i * 8 + b for i in range(size) for b in range(8) if bitmap[i] >> b & 1]
    pcr_digest = a.sized()

    fingerprint = doc.get("tls_fingerprint", "")
    fingerprint_bytes = bytes.fromhex(fingerprint[len("sha256:"):]) if fingerprint else b""
    expected_extra = hashlib.sha256(nonce + fingerprint_bytes).digest()
    if extra != expected_extra:
        fail("quote: extraData is not SHA-256(nonce || tls fingerprint)")
    if doc.get("qualifying_data") not in (None, expected_extra.hex()):
        fail("qualifying_data field differs from the quote's extraData")

    bank = doc["pcrs"]["sha256"]
    if sorted(int(k) for k in bank) != sorted(selected):
        fail("reported PCRs %s differ from the quoted selection %s" % (sorted(bank), selected))
    values = b"".join(bytes.fromhex(bank[str(i)]) for i in sorted(selected))
    if hashlib.sha256(values).digest() != pcr_digest:
        fail("quote: pcrDigest is not SHA-256 of the reported PCR values")

    if doc.get("event_log"):
        try:
            replayed = replay_event_log(base64.b64decode(doc["event_log"]))
        except (ValueError, KeyError) as e:
            fail("event_log: unreadable (%s)" % e)
        for pcr, value in replayed.items():
            if bank.get(str(pcr)) != value.hex():
                fail("event_log: PCR %d does not replay" % pcr)
    pcr23 = bytes.fromhex(doc.get("workload_pcr23_base") or "00" * 32)
    for event in doc.get("workload_events") or []:
        if "content_sha256" in event and hashlib.sha256(event["name"].encode() + b"\0" + bytes.fromhex(event["content_sha256"])).hexdigest() != event["digest"]:
            fail("workload_events: %s has a digest that is not SHA-256(name || 0 || content)" % event["name"])
        pcr23 = hashlib.sha256(pcr23 + bytes.fromhex(event["digest"])).digest()
    if "workload_events" in doc and "23" in bank and pcr23.hex() != bank["23"]:
        fail("workload_events: they do not replay to PCR 23")

    compared = []
    if "--golden" in options:
        with open(options["--golden"]) as f:
            golden = json.load(f)
        if "golden_measurement" in golden:
            if "--pubkey" not in options:
                fail("golden_signature: a signed golden measurement needs --pubkey")
            check_golden_signature(golden, options["--pubkey"])
            golden = golden["golden_measurement"]
        elif "--pubkey" in options:
            fail("golden_signature: the golden measurement is not signed")
        expected = [f for f in (golden.get("tls_fingerprint"), options.get("--tls-fingerprint")) if f]
        if any(f.lower() != fingerprint.lower() for f in expected):
            fail("tls_fingerprint: the quote is bound to another TLS key")
        for pcr, value in sorted(golden["pcrs"]["sha256"].items(), key=lambda kv: int(kv[0])):
            if int(pcr) not in selected or bank.get(pcr) != value.lower():
                fail("PCR %s: quoted %s, golden %s" % (pcr, bank.get(pcr), value))
            compared.append(int(pcr))
    elif "--tls-fingerprint" in options and options["--tls-fingerprint"].lower() != fingerprint.lower():
        fail("tls_fingerprint: the quote is bound to another TLS key")

    print(json.dumps({"verified": True, "pcrs": sorted(selected), "extra_data": extra.hex(),
                      "pcr_digest": pcr_digest.hex(), "golden_pcrs": compared}))


if __name__ == "__main__":
    main()
