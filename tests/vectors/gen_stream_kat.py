"""Generate tests/vectors/stream_kat.json: known answers for the evault STREAM format v1.

Run from the repository root:  .venv/bin/python -m tests.vectors.gen_stream_kat

Each vector fixes the file key, salt, nonce prefix, chunk size, key material and plaintext,
and records the ciphertext that ``evault.crypto.stream.encrypt_stream`` produces. Before
anything is written, every vector is cross-checked against the independent implementation
below, written from the byte layout in the docstring of ``evault.crypto.stream`` alone, on
different code: RFC 5869 HKDF by hand on ``hmac``/``hashlib`` and libsodium's
ChaCha20-Poly1305-IETF through PyNaCl instead of OpenSSL through ``cryptography``.
Large vectors store the SHA-256 of the ciphertext instead of its bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import nacl.bindings

MAGIC = b"\x89EVS\r\n\x1a\n"
OUT = Path(__file__).with_name("stream_kat.json")
INLINE_LIMIT = 4096  # ciphertexts larger than this are stored as their SHA-256


# -- independent implementation ---------------------------------------------------------------


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 §2.2-2.3."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def _keys(file_key: bytes, salt: bytes) -> tuple[bytes, bytes]:
    return (
        hkdf_sha256(file_key, salt, b"evault/stream-header/v1", 32),
        hkdf_sha256(file_key, salt, b"evault/stream-payload/v1", 32),
    )


def independent_encrypt(
    file_key: bytes,
    salt: bytes,
    prefix: bytes,
    chunk_bytes: int,
    key_material: bytes,
    plaintext: bytes,
) -> bytes:
    header_key, payload_key = _keys(file_key, salt)
    header = (
        MAGIC
        + bytes([1, 1])
        + chunk_bytes.to_bytes(4, "big")
        + salt
        + prefix
        + len(key_material).to_bytes(2, "big")
        + key_material
    )
    out = [header, hmac.new(header_key, header, hashlib.sha256).digest()]
    chunks = [plaintext[i : i + chunk_bytes] for i in range(0, len(plaintext), chunk_bytes)]
    chunks = chunks or [b""]
    for i, chunk in enumerate(chunks):
        nonce = prefix + i.to_bytes(4, "big") + bytes([i == len(chunks) - 1])
        out.append(
            nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(chunk, None, nonce, payload_key)
        )
    return b"".join(out)


def independent_decrypt(file_key: bytes, stream: bytes) -> bytes:
    if stream[:8] != MAGIC or stream[8:10] != b"\x01\x01":
        raise ValueError("not a v1 ChaCha20-Poly1305 stream")
    chunk_bytes = int.from_bytes(stream[10:14], "big")
    salt, prefix = stream[14:46], stream[46:53]
    material_len = int.from_bytes(stream[53:55], "big")
    mac_at = 55 + material_len
    header_key, payload_key = _keys(file_key, salt)
    expected = hmac.new(header_key, stream[:mac_at], hashlib.sha256).digest()
    if not hmac.compare_digest(expected, stream[mac_at : mac_at + 32]):
        raise ValueError("header MAC")
    body = stream[mac_at + 32 :]
    full = chunk_bytes + 16
    pieces = [body[i : i + full] for i in range(0, len(body), full)]
    out = []
    for i, piece in enumerate(pieces):
        nonce = prefix + i.to_bytes(4, "big") + bytes([i == len(pieces) - 1])
        out.append(
            nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(piece, None, nonce, payload_key)
        )
    return b"".join(out)


# -- the vectors ------------------------------------------------------------------------------


def _pattern(n: int, seed: int) -> bytes:
    """Deterministic, non-repeating-looking bytes (SHA-256 in counter mode)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed.to_bytes(4, "big") + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:n])


def vector_inputs() -> list[dict[str, Any]]:
    wrapped_like = _pattern(113, 99)  # the size of an evault wrapped file key
    cases = [
        ("empty document, no key material", 0, 64, b""),
        ("one byte", 1, 64, b""),
        ("less than a chunk", 50, 64, b"km"),
        ("exactly one chunk (full final chunk)", 64, 64, b""),
        ("exactly two chunks", 128, 64, b""),
        ("two chunks and one byte", 129, 64, wrapped_like),
        ("minimum chunk size, several chunks", 100, 16, wrapped_like),
        ("default chunk size, three chunks", 150_000, 65_536, wrapped_like),
    ]
    return [
        {
            "comment": comment,
            "file_key": _pattern(32, 1000 + i).hex(),
            "salt": _pattern(32, 2000 + i).hex(),
            "nonce_prefix": _pattern(7, 3000 + i).hex(),
            "chunk_bytes": chunk_bytes,
            "key_material": material.hex(),
            "plaintext_bytes": size,
            "plaintext_seed": 4000 + i,
        }
        for i, (comment, size, chunk_bytes, material) in enumerate(cases)
    ]


def plaintext_of(vector: dict[str, Any]) -> bytes:
    return _pattern(vector["plaintext_bytes"], vector["plaintext_seed"])


def evault_encrypt(vector: dict[str, Any]) -> bytes:
    from evault.crypto.stream import encrypt_stream

    given = [bytes.fromhex(vector["salt"]), bytes.fromhex(vector["nonce_prefix"])]

    def rng(n: int) -> bytes:
        value = given.pop(0)
        if len(value) != n:
            raise AssertionError("rng asked for an unexpected size")
        return value

    pt = plaintext_of(vector)
    pieces = [pt[i : i + 1000] for i in range(0, len(pt), 1000)]
    return b"".join(
        encrypt_stream(
            pieces,
            bytes.fromhex(vector["file_key"]),
            rng=rng,
            key_material=bytes.fromhex(vector["key_material"]),
            chunk_bytes=vector["chunk_bytes"],
        )
    )


def main() -> None:
    vectors = []
    for v in vector_inputs():
        ct = evault_encrypt(v)
        indep = independent_encrypt(
            bytes.fromhex(v["file_key"]),
            bytes.fromhex(v["salt"]),
            bytes.fromhex(v["nonce_prefix"]),
            v["chunk_bytes"],
            bytes.fromhex(v["key_material"]),
            plaintext_of(v),
        )
        if ct != indep or independent_decrypt(bytes.fromhex(v["file_key"]), ct) != plaintext_of(v):
            raise SystemExit(f"cross-check failed for {v['comment']!r}")
        v["ciphertext_bytes"] = len(ct)
        v["ciphertext_sha256"] = hashlib.sha256(ct).hexdigest()
        if len(ct) <= INLINE_LIMIT:
            v["ciphertext"] = ct.hex()
        vectors.append(v)
    doc = {
        "source": "generated by tests/vectors/gen_stream_kat.py; cross-checked against an "
        "independent implementation (hand-written RFC 5869 HKDF + libsodium ChaCha20-Poly1305)",
        "format": "evault STREAM v1 (src/evault/crypto/stream.py)",
        "plaintext": "SHA-256(seed u32 BE || counter u64 BE) blocks, truncated to plaintext_bytes",
        "vectors": vectors,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
