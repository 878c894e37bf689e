#!/usr/bin/env python3
"""Writes the seed corpus of the `amqp_frames` fuzz target to seeds/amqp_frames/.

One seed per captured connection in testdata/vectors/amqp-*.jsonl: every client->server byte
in order (protocol headers and frames), after a first byte of 2 (the target's "no header of
its own" mode). The captures' policy SAS tokens were signed with the all-zero key the target's
hub uses, but expired long ago: each is re-signed with an expiry in 2100, at the same length,
so the frames around it stay valid and a seed authenticates (SASL PLAIN or CBS) and reaches
the links behind it. Device-key tokens are left as captured (the emulator refuses them
anyway). Run from fuzz/: python3 amqp_frames_seeds.py
"""

import base64
import collections
import glob
import hashlib
import hmac
import json
import os
import re
import urllib.parse

ZERO_KEY = bytes(32)
TOKEN = re.compile(rb"SharedAccessSignature [A-Za-z0-9%/+=&._-]+")


def resign(token: bytes) -> bytes:
    """The same policy token, expiring in 2100, exactly as long as `token`."""
    fields = dict(f.split(b"=", 1) for f in token[len(b"SharedAccessSignature "):].split(b"&"))
    if b"skn" not in fields or b"sr" not in fields:
        return token
    old_sig, old_se = fields[b"sig"], fields[b"se"]
    for se in range(4102444800, 4102444800 + 10000):
        se = str(se).encode()
        sig = base64.b64encode(hmac.new(ZERO_KEY, fields[b"sr"] + b"\n" + se, hashlib.sha256).digest())
        encoded = urllib.parse.quote(sig, safe="").encode()
        if len(encoded) == len(old_sig) and len(se) == len(old_se):
            out = token.replace(b"sig=" + old_sig, b"sig=" + encoded).replace(b"se=" + old_se, b"se=" + se)
            assert len(out) == len(token)
            return out
    raise SystemExit(f"no same-length signature for {token!r}")


def main() -> None:
    streams = collections.OrderedDict()
    for path in sorted(glob.glob("../testdata/vectors/amqp-*.jsonl")):
        for line in open(path):
            record = json.loads(line)
            if record["direction"] != "client->server" or "raw_hex" not in record:
                continue
            key = (path, record["flow"], record["conn"])
            streams.setdefault(key, bytearray()).extend(bytes.fromhex(record["raw_hex"]))
    out_dir = "seeds/amqp_frames"
    os.makedirs(out_dir, exist_ok=True)
    for key, stream in streams.items():
        seed = b"\x02" + TOKEN.sub(lambda m: resign(m.group(0)), bytes(stream))
        name = hashlib.sha256(seed).hexdigest()[:16]
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(seed)
        print(name, len(seed), *key)


if __name__ == "__main__":
    main()
