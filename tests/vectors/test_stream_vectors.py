"""Vectors pinning the primitives under evault STREAM, and known answers for the format.

* RFC 8439 §2.8.2: the AEAD_CHACHA20_POLY1305 example, through ``cryptography`` (the library
  the stream uses) and through libsodium (the one the cross-check uses).
* RFC 5869 Appendix A.1: HKDF-SHA256 test case 1, through ``cryptography`` and through the
  hand-written HKDF of the cross-check.
* tests/vectors/stream_kat.json: fixed-key answers made by tests/vectors/gen_stream_kat.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from evault.crypto.stream import decrypt_stream, read_stream_header
from tests.vectors.gen_stream_kat import (
    evault_encrypt,
    hkdf_sha256,
    independent_decrypt,
    plaintext_of,
    vector_inputs,
)

# RFC 8439 §2.8.2
RFC8439_KEY = bytes(range(0x80, 0xA0))
RFC8439_NONCE = bytes.fromhex("070000004041424344454647")
RFC8439_AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
RFC8439_PLAINTEXT = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
    b"the future, sunscreen would be it."
)
RFC8439_CIPHERTEXT = bytes.fromhex(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
    "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
    "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
    "3ff4def08e4b7a9de576d26586cec64b6116"
)
RFC8439_TAG = bytes.fromhex("1ae10b594f09e26a7e902ecbd0600691")

# RFC 5869 Appendix A.1
RFC5869_IKM = bytes([0x0B] * 22)
RFC5869_SALT = bytes(range(0x00, 0x0D))
RFC5869_INFO = bytes(range(0xF0, 0xFA))
RFC5869_OKM = bytes.fromhex(
    "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
)

KAT_PATH = Path(__file__).with_name("stream_kat.json")


def test_rfc8439_aead_vector_through_cryptography() -> None:
    aead = ChaCha20Poly1305(RFC8439_KEY)
    sealed = aead.encrypt(RFC8439_NONCE, RFC8439_PLAINTEXT, RFC8439_AAD)
    assert sealed == RFC8439_CIPHERTEXT + RFC8439_TAG
    assert aead.decrypt(RFC8439_NONCE, sealed, RFC8439_AAD) == RFC8439_PLAINTEXT


def test_rfc8439_aead_vector_through_libsodium() -> None:
    sealed = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
        RFC8439_PLAINTEXT, RFC8439_AAD, RFC8439_NONCE, RFC8439_KEY
    )
    assert sealed == RFC8439_CIPHERTEXT + RFC8439_TAG


def test_rfc5869_hkdf_vector_both_implementations() -> None:
    kdf = HKDF(algorithm=hashes.SHA256(), length=42, salt=RFC5869_SALT, info=RFC5869_INFO)
    assert kdf.derive(RFC5869_IKM) == RFC5869_OKM
    assert hkdf_sha256(RFC5869_IKM, RFC5869_SALT, RFC5869_INFO, 42) == RFC5869_OKM


def _kat() -> list[dict[str, Any]]:
    doc = json.loads(KAT_PATH.read_text())
    vectors: list[dict[str, Any]] = doc["vectors"]
    return vectors


def test_kat_file_matches_its_generator_inputs() -> None:
    # The committed answers were made from exactly the inputs the script defines today.
    stored = [{k: v[k] for k in inputs} for v, inputs in zip(_kat(), vector_inputs(), strict=True)]
    assert stored == vector_inputs()


@pytest.mark.parametrize("vector", _kat(), ids=lambda v: v["comment"])
def test_stream_known_answer(vector: dict[str, Any]) -> None:
    ct = evault_encrypt(vector)
    assert len(ct) == vector["ciphertext_bytes"]
    assert hashlib.sha256(ct).hexdigest() == vector["ciphertext_sha256"]
    if "ciphertext" in vector:
        assert ct.hex() == vector["ciphertext"]
    key = bytes.fromhex(vector["file_key"])
    plaintext = plaintext_of(vector)
    assert b"".join(decrypt_stream([ct], key)) == plaintext
    assert independent_decrypt(key, ct) == plaintext
    header, _ = read_stream_header([ct])
    assert header.chunk_bytes == vector["chunk_bytes"]
    assert header.key_material.hex() == vector["key_material"]
