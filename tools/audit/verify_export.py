#!/usr/bin/env python3
"""Independent check of a pmcore audit export, written from the specifications
(RFC 6962/9162, C2SP signed-note and tlog-checkpoint) and docs/audit.md, sharing
no code with the service: hashlib for SHA-256, `cryptography` for Ed25519.

    python3 tools/audit/verify_export.py export.jsonl '<verifier key>'

Exits 0 when the checkpoint's signature, every entry's leaf and every inclusion
proof check; 1 otherwise, printing the first bad position.
"""
import base64, datetime, hashlib, json, sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def open_note(note: str, vkey: str):
    name, key_id, key64 = vkey.split("+", 2)
    raw = base64.b64decode(key64)
    assert raw[0] == 1, "only Ed25519 keys"
    # The key id is the first 4 bytes of SHA-256(name || 0x0A || 0x01 || key).
    assert hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() == key_id
    text, sigs = note.split("\n\n", 1)
    text += "\n"
    for line in sigs.splitlines():
        prefix = "\u2014 " + name + " "
        if not line.startswith(prefix):
            continue
        blob = base64.b64decode(line[len(prefix):])
        if blob[:4].hex() != key_id:
            continue
        Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[4:], text.encode())
        origin, size, root = text.splitlines()[:3]
        assert origin == name, "origin is not the key's name"
        return int(size), base64.b64decode(root)
    raise ValueError("no signature by this key")


def leaf_bytes(entry: dict) -> bytes:
    """The leaf as docs/audit.md defines it: the entry with the format tag, times
    with six fractional digits, keys sorted, no whitespace."""
    leaf = dict(entry, format="pmcore-audit-entry/v1")
    for key in ("occurred_at", "recorded_at"):
        t = datetime.datetime.fromisoformat(leaf[key].replace("Z", "+00:00"))
        leaf[key] = t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps(leaf, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: list) -> bytes:
    # RFC 9162, section 2.1.3.2.
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ValueError("proof too long")
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("proof too short")
    return r


def main(path: str, vkey: str) -> int:
    lines = open(path, encoding="utf-8").read().splitlines()
    header = json.loads(lines[0])
    size, root = open_note(header["checkpoint"], vkey)
    assert size == header["tree_size"]
    expected = header["from"]
    for text in lines[1:]:
        line = json.loads(text)
        entry = line["entry"]
        index = entry["index"]
        leaf = hashlib.sha256(b"\x00" + leaf_bytes(entry)).digest()
        proof = [base64.b64decode(p) for p in line["proof"]]
        ok = index == expected and base64.b64decode(line["leaf_hash"]) == leaf
        try:
            ok = ok and root_from_inclusion(index, size, leaf, proof) == root
        except ValueError:
            ok = False
        if not ok:
            print(f"NOT verified: first bad position {min(index, expected)}")
            return 1
        expected = index + 1
    if expected != header["to"]:
        print(f"NOT verified: the export ends at {expected}")
        return 1
    print(f"verified: {expected - header['from']} entries against the checkpoint of {size}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
