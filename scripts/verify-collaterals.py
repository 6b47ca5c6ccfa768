#!/usr/bin/env python3
"""Verifies a cvm-agent `GET /collaterals/{nonce}` answer independently of cvm-cli.

usage: verify-collaterals.py COLLATERALS.json NONCE_HEX

Checks (docs/agent-api.md): the ECDSA-SHA256 signature over the TPMS_ATTEST with ak_public;
the attestation's magic and type; extraData == SHA-256(nonce || tls fingerprint bytes);
pcrDigest == SHA-256 of the reported SHA-256 PCR values of the quoted selection, in index order.
Prints a JSON summary on success, exits 1 with the reason otherwise.
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


def main():
    if len(sys.argv) != 3:
        fail("usage: verify-collaterals.py COLLATERALS.json NONCE_HEX")
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    nonce = bytes.fromhex(sys.argv[2])
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

    print(json.dumps({"verified": True, "pcrs": sorted(selected), "extra_data": extra.hex(),
                      "pcr_digest": pcr_digest.hex()}))


if __name__ == "__main__":
    main()
