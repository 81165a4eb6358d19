"""evault STREAM: round trips, and every kind of damage is refused (issue 6)."""

from __future__ import annotations

import hashlib
import hmac
import os
import tracemalloc
from collections.abc import Iterator

import nacl.bindings
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evault.crypto.stream import (
    DEFAULT_CHUNK_BYTES,
    HEADER_OVERHEAD,
    MAGIC,
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    TAG_BYTES,
    ciphertext_size,
    decrypt_stream,
    decrypt_stream_body,
    encrypt_stream,
    parse_stream_header,
    plaintext_size,
    read_stream_header,
    verify_stream_header,
)
from evault.errors import CryptoError, DecryptionError, FormatError
from tests.vectors.gen_stream_kat import hkdf_sha256

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = bytes(range(32))


def _encrypt(data: bytes, *, chunk_bytes: int = 16, key: bytes = KEY, km: bytes = b"") -> bytes:
    return b"".join(
        encrypt_stream([data], key, rng=os.urandom, key_material=km, chunk_bytes=chunk_bytes)
    )


def _decrypt(ct: bytes, key: bytes = KEY) -> bytes:
    return b"".join(decrypt_stream([ct], key))


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@st.composite
def documents(draw: st.DrawFn) -> tuple[int, bytes]:
    """A chunk size and a document; sizes 0 and exact multiples of the chunk are frequent."""
    chunk = draw(st.sampled_from([16, 17, 64]))
    full = draw(st.integers(0, 5))
    extra = draw(st.sampled_from([0, 0, 1, chunk - 1, None]))
    if extra is None:
        extra = draw(st.integers(0, chunk - 1))
    size = full * chunk + extra
    return chunk, draw(st.binary(min_size=size, max_size=size))


@FAST
@given(
    doc=documents(),
    km=st.binary(max_size=130),
    in_cuts=st.lists(st.integers(0, 400), max_size=6),
    out_cuts=st.lists(st.integers(0, 600), max_size=6),
)
def test_round_trip_any_size_any_piece_boundaries(
    doc: tuple[int, bytes], km: bytes, in_cuts: list[int], out_cuts: list[int]
) -> None:
    chunk, data = doc
    pieces = list(
        encrypt_stream(_cut(data, in_cuts), KEY, rng=os.urandom, key_material=km, chunk_bytes=chunk)
    )
    ct = b"".join(pieces)
    chunks = max(1, -(-len(data) // chunk))
    assert len(pieces) == 1 + chunks  # header, then one piece per chunk
    assert len(ct) == ciphertext_size(len(data), chunk_bytes=chunk, key_material_bytes=len(km))
    header, body = read_stream_header(_cut(ct, out_cuts))
    assert header.key_material == km and header.chunk_bytes == chunk
    assert plaintext_size(len(ct), header) == len(data)
    out = list(decrypt_stream_body(header, body, KEY))
    assert b"".join(out) == data
    assert len(out) == chunks


def test_default_chunk_size_round_trip_with_a_full_final_chunk() -> None:
    data = os.urandom(2 * DEFAULT_CHUNK_BYTES)
    ct = _encrypt(data, chunk_bytes=DEFAULT_CHUNK_BYTES)
    assert len(ct) == HEADER_OVERHEAD + len(data) + 2 * TAG_BYTES
    assert _decrypt(ct) == data


def test_same_document_encrypts_differently_each_time() -> None:
    assert _encrypt(b"same") != _encrypt(b"same")


@FAST
@given(data=st.binary(min_size=17, max_size=100), cut=st.integers(1, 10_000))
def test_any_truncation_is_detected(data: bytes, cut: int) -> None:
    ct = _encrypt(data)
    cut = cut % (len(ct) - 1) + 1  # keep 1 … len−1 bytes
    with pytest.raises((DecryptionError, FormatError)):
        _decrypt(ct[:cut])


def test_truncation_at_a_chunk_boundary_is_named() -> None:
    ct = _encrypt(bytes(48))  # three chunks of 16
    header_len = HEADER_OVERHEAD
    with pytest.raises(DecryptionError, match="truncated") as info:
        _decrypt(ct[: header_len + 2 * (16 + TAG_BYTES)])
    assert info.value.chunk_index == 1
    with pytest.raises(DecryptionError, match="truncated"):
        _decrypt(ct[:header_len])  # header only, no chunk at all


@FAST
@given(data=st.binary(min_size=33, max_size=120), pair=st.tuples(st.integers(), st.integers()))
def test_reordered_chunks_are_detected(data: bytes, pair: tuple[int, int]) -> None:
    ct = _encrypt(data)
    body = ct[HEADER_OVERHEAD:]
    full = 16 + TAG_BYTES
    chunks = [body[i : i + full] for i in range(0, len(body), full)]
    i, j = pair[0] % len(chunks), pair[1] % len(chunks)
    if chunks[i] == chunks[j]:
        return
    chunks[i], chunks[j] = chunks[j], chunks[i]
    with pytest.raises(DecryptionError) as info:
        _decrypt(ct[:HEADER_OVERHEAD] + b"".join(chunks))
    assert info.value.chunk_index == min(i, j)


def test_dropped_middle_chunk_is_detected() -> None:
    ct = _encrypt(bytes(64))
    full = 16 + TAG_BYTES
    damaged = ct[: HEADER_OVERHEAD + full] + ct[HEADER_OVERHEAD + 2 * full :]
    with pytest.raises(DecryptionError) as info:
        _decrypt(damaged)
    assert info.value.chunk_index == 1


def test_chunk_from_another_file_with_the_same_key_is_detected() -> None:
    a, b = _encrypt(bytes(40)), _encrypt(bytes(40))
    spliced = a[: HEADER_OVERHEAD + 32] + b[HEADER_OVERHEAD + 32 : HEADER_OVERHEAD + 64]
    spliced += a[HEADER_OVERHEAD + 64 :]
    with pytest.raises(DecryptionError) as info:
        _decrypt(spliced)
    assert info.value.chunk_index == 1


@FAST
@given(data=st.binary(max_size=80), km=st.binary(max_size=20), position=st.integers(0))
def test_any_bit_flip_is_detected(data: bytes, km: bytes, position: int) -> None:
    ct = bytearray(_encrypt(data, km=km))
    bit = position % (8 * len(ct))
    ct[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises((DecryptionError, FormatError)):
        _decrypt(bytes(ct))


def test_wrong_key_fails_at_the_header_before_any_output() -> None:
    ct = _encrypt(b"secret" * 10)
    header, body = read_stream_header([ct])
    with pytest.raises(DecryptionError, match="header"):
        decrypt_stream_body(header, body, bytes(32))  # raises on the call, not on iteration
    with pytest.raises(DecryptionError, match="header"):
        verify_stream_header(header, bytes(32))
    verify_stream_header(header, KEY)


def test_tampered_key_material_fails_the_header_mac() -> None:
    ct = bytearray(_encrypt(b"x", km=b"wrapped key"))
    ct[HEADER_OVERHEAD - 32 + 1] ^= 0x01  # inside the key material
    with pytest.raises(DecryptionError, match="header"):
        _decrypt(bytes(ct))


def test_header_parse_errors() -> None:
    ct = _encrypt(b"abc", km=b"km")
    with pytest.raises(FormatError, match="magic"):
        parse_stream_header(b"PK\x03\x04" + ct[4:])
    with pytest.raises(DecryptionError, match="truncated"):
        parse_stream_header(ct[:5])
    with pytest.raises(DecryptionError, match="truncated"):
        parse_stream_header(ct[:60])
    with pytest.raises(DecryptionError, match="truncated"):
        parse_stream_header(b"")
    with pytest.raises(FormatError, match="version"):
        parse_stream_header(ct[:8] + b"\x02" + ct[9:])
    with pytest.raises(FormatError, match="AEAD"):
        parse_stream_header(ct[:9] + b"\x07" + ct[10:])
    with pytest.raises(FormatError, match="chunk size"):
        parse_stream_header(ct[:10] + (8).to_bytes(4, "big") + ct[14:])
    with pytest.raises(FormatError, match="chunk size"):
        parse_stream_header(ct[:10] + (MAX_CHUNK_BYTES + 1).to_bytes(4, "big") + ct[14:])
    header = parse_stream_header(ct)
    assert header.raw == ct[: header.size] and header.size == HEADER_OVERHEAD + 2
    assert ct.startswith(MAGIC)


def _stream_with_chunks(chunks: list[bytes], last_flags: list[bool], chunk_bytes: int) -> bytes:
    """Build a stream by hand (from the documented layout) to make non-canonical cases."""
    salt, prefix = bytes(32), bytes(7)
    header_key = hkdf_sha256(KEY, salt, b"evault/stream-header/v1", 32)
    payload_key = hkdf_sha256(KEY, salt, b"evault/stream-payload/v1", 32)
    header = MAGIC + b"\x01\x01" + chunk_bytes.to_bytes(4, "big") + salt + prefix + b"\x00\x00"
    out = header + hmac.new(header_key, header, hashlib.sha256).digest()
    for i, (chunk, last) in enumerate(zip(chunks, last_flags, strict=True)):
        nonce = prefix + i.to_bytes(4, "big") + bytes([last])
        out += nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            chunk, None, nonce, payload_key
        )
    return out


def test_hand_built_stream_decodes_and_non_canonical_ones_do_not() -> None:
    good = _stream_with_chunks([bytes(16), b"ab"], [False, True], 16)
    assert _decrypt(good) == bytes(16) + b"ab"
    empty_trailer = _stream_with_chunks([bytes(16), b""], [False, True], 16)
    with pytest.raises(DecryptionError, match="empty final chunk"):
        _decrypt(empty_trailer)
    no_last_flag = _stream_with_chunks([bytes(16), b"ab"], [False, False], 16)
    with pytest.raises(DecryptionError, match="truncated"):
        _decrypt(no_last_flag)
    early_last = _stream_with_chunks([bytes(16), b"ab"], [True, True], 16)
    with pytest.raises(DecryptionError) as info:
        _decrypt(early_last)
    assert info.value.chunk_index == 0


def test_plaintext_size_rejects_impossible_lengths() -> None:
    ct = _encrypt(bytes(40))
    header = parse_stream_header(ct)
    assert plaintext_size(len(ct), header) == 40
    with pytest.raises(DecryptionError):
        plaintext_size(header.size + 5, header)
    with pytest.raises(DecryptionError):
        plaintext_size(header.size + 32 + 3, header)  # one full chunk then 3 bytes
    with pytest.raises(DecryptionError):
        plaintext_size(header.size + 32 + 16, header)  # an empty trailing chunk


def _counting(pieces: list[bytes], seen: list[int]) -> Iterator[bytes]:
    for p in pieces:
        seen[0] += 1
        yield p


def test_encryption_and_decryption_stream_with_bounded_lookahead() -> None:
    data = os.urandom(16 * 100)
    seen = [0]
    enc = encrypt_stream(
        _counting([data[i : i + 1] for i in range(len(data))], seen),
        KEY,
        rng=os.urandom,
        chunk_bytes=16,
    )
    header = next(enc)
    first = next(enc)
    assert len(first) == 16 + TAG_BYTES
    assert seen[0] == 17  # one byte beyond the first chunk, no more
    ct = header + first + b"".join(enc)
    seen = [0]
    dec = decrypt_stream(_counting([ct[i : i + 1] for i in range(len(ct))], seen), KEY)
    assert next(dec) == data[:16]
    assert seen[0] == HEADER_OVERHEAD + 16 + TAG_BYTES + 1
    assert data[:16] + b"".join(dec) == data


def test_bytearray_and_memoryview_pieces_are_accepted() -> None:
    data = os.urandom(50)
    ct = b"".join(
        encrypt_stream([bytearray(data[:20]), memoryview(data)[20:]], KEY, rng=os.urandom)
    )
    assert b"".join(decrypt_stream([memoryview(ct)], KEY)) == data


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="file_key"):
        encrypt_stream([b""], b"short", rng=os.urandom)
    with pytest.raises(ValueError, match="chunk_bytes"):
        encrypt_stream([b""], KEY, rng=os.urandom, chunk_bytes=MIN_CHUNK_BYTES - 1)
    with pytest.raises(ValueError, match="key_material"):
        encrypt_stream([b""], KEY, rng=os.urandom, key_material=bytes(70_000))
    with pytest.raises(ValueError, match="rng"):
        encrypt_stream([b""], KEY, rng=lambda n: b"")
    with pytest.raises(TypeError):
        b"".join(encrypt_stream(["text"], KEY, rng=os.urandom))  # type: ignore[list-item]
    with pytest.raises(ValueError):
        ciphertext_size(-1, chunk_bytes=16, key_material_bytes=0)
    assert issubclass(DecryptionError, CryptoError)


def _lazy_document(total: int, piece: int) -> Iterator[bytes]:
    for offset in range(0, total, piece):
        n = min(piece, total - offset)
        yield hashlib.sha256(offset.to_bytes(8, "big")).digest() * (n // 32) + bytes(n % 32)


@pytest.mark.parametrize("total", [0, 1 << 20, 100 << 20], ids=["0B", "1MiB", "100MiB"])
def test_round_trip_in_bounded_memory(total: int) -> None:
    expected = hashlib.sha256()
    for p in _lazy_document(total, 100_000):
        expected.update(p)
    got = hashlib.sha256()
    tracemalloc.start()
    try:
        ct = encrypt_stream(_lazy_document(total, 100_000), KEY, rng=os.urandom, key_material=b"k")
        for piece in decrypt_stream(ct, KEY):
            got.update(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.digest() == expected.digest()
    assert peak < 1 << 20  # a few 64 KiB chunks and 100 kB pieces, whatever the size
