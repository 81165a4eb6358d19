"""Streaming authenticated encryption of documents: evault STREAM, format version 1.

DESIGN §7 asks the client to encrypt a document with a random 256-bit file key, in chunks,
each authenticated, before depositing it. This is the STREAM construction of Hoang,
Reyhanitabar, Rogaway and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse
Misuse-Resistance" (CRYPTO 2015), as used by age and by Tink's streaming AEAD: the plaintext
is cut into fixed-size chunks, chunk i is sealed with an AEAD under a nonce made of a per-file
prefix, the counter i and a flag that is 1 only on the last chunk. So a chunk moved to
another position, a chunk from another file, a dropped chunk, or a stream cut short (at a
chunk boundary or not) all fail authentication. Every chunk is checked before it is released,
and memory stays bounded by one chunk whatever the document size.

Byte layout (all integers big-endian)::

    offset   size  field
    0        8     magic 89 45 56 53 0D 0A 1A 0A ("\\x89EVS\\r\\n\\x1a\\n": as PNG's, it
                   shows 7-bit transfer and newline conversion as a bad magic)
    8        1     format version = 0x01
    9        1     AEAD id: 0x01 = ChaCha20-Poly1305 (RFC 8439)
    10       4     chunk_bytes: plaintext bytes per chunk, 16 ≤ chunk_bytes ≤ 2^24
    14       32    salt, random per file
    46       7     nonce prefix, random per file
    53       2     L = length of the key material
    55       L     key material: opaque to this module (evault puts the 113-byte wrapped
                   file key of :mod:`evault.crypto.unwrap` here), authenticated by the MAC
    55+L     32    header MAC = HMAC-SHA256(header_key, bytes 0 … 55+L−1)
    87+L     …     chunks

    header_key  = HKDF-SHA256(ikm = file key, salt = salt, info = "evault/stream-header/v1")
    payload_key = HKDF-SHA256(ikm = file key, salt = salt, info = "evault/stream-payload/v1")

    chunk i (i = 0, 1, …) = ChaCha20-Poly1305(payload_key, nonce_i, plaintext_i, aad = "")
                          = ciphertext_i (|plaintext_i| bytes) ‖ tag (16 bytes)
    nonce_i = nonce prefix (7) ‖ i as u32 (4) ‖ last flag (1: 0x01 on the final chunk, else 0x00)

Every chunk but the last holds exactly chunk_bytes of plaintext; the last holds 1 …
chunk_bytes, or 0 only when the whole document is empty (exactly one chunk). A decoder
therefore knows a chunk is last by the end of input, and a full final chunk is legal (a
document whose size is a multiple of chunk_bytes has no empty trailer). Total size:
87 + L + P + 16·max(1, ⌈P / chunk_bytes⌉) for a P-byte document.

The header is authenticated (MAC checked before any plaintext is released) so chunk size,
key material and salt cannot be swapped. The salt makes the payload key unique per file even
if a file key were ever reused; the nonce prefix is then belt and braces (as in Tink).

Version history
    1 (2025) — first version: ChaCha20-Poly1305, HKDF-SHA256, HMAC-SHA256 header MAC.

A caller who writes the plaintext to a file must treat it as unverified until the iterator
has finished without raising: only then is the *whole* stream known to be complete (write to
a temporary file and rename on success; delete it on ``DecryptionError``).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from hashlib import sha256
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from evault.crypto.group import RandomBytes
from evault.encoding import TAGS
from evault.errors import CryptoError, DecryptionError, FormatError

MAGIC: Final = b"\x89EVS\r\n\x1a\n"
FORMAT_VERSION: Final = 1
AEAD_CHACHA20_POLY1305: Final = 1
FILE_KEY_BYTES: Final = 32
SALT_BYTES: Final = 32
NONCE_PREFIX_BYTES: Final = 7
TAG_BYTES: Final = 16
MAC_BYTES: Final = 32
MIN_CHUNK_BYTES: Final = 16
MAX_CHUNK_BYTES: Final = 1 << 24
DEFAULT_CHUNK_BYTES: Final = 64 * 1024
MAX_KEY_MATERIAL_BYTES: Final = 0xFFFF
MAX_CHUNKS: Final = 1 << 32
#: Header bytes before the key material, and the fixed overhead around it.
_FIXED_PREFIX: Final = 8 + 1 + 1 + 4 + SALT_BYTES + NONCE_PREFIX_BYTES + 2  # 55
HEADER_OVERHEAD: Final = _FIXED_PREFIX + MAC_BYTES  # 87

#: What the iterators accept as input pieces.
Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class StreamHeader:
    """A parsed (not yet authenticated) stream header; ``raw`` is its exact bytes."""

    chunk_bytes: int
    salt: bytes
    nonce_prefix: bytes
    key_material: bytes
    mac: bytes
    raw: bytes

    @property
    def size(self) -> int:
        return len(self.raw)


@dataclass(frozen=True)
class _Keys:
    header: bytes
    payload: ChaCha20Poly1305


def _derive(file_key: bytes, salt: bytes) -> _Keys:
    if not isinstance(file_key, bytes) or len(file_key) != FILE_KEY_BYTES:
        raise ValueError(f"file_key: expected {FILE_KEY_BYTES} bytes")

    def hkdf(info: str) -> bytes:
        kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info.encode("ascii"))
        return kdf.derive(file_key)

    return _Keys(hkdf(TAGS["stream-header"]), ChaCha20Poly1305(hkdf(TAGS["stream-payload"])))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _check_chunk_bytes(chunk_bytes: int) -> None:
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int):
        raise TypeError("chunk_bytes: expected int")
    if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk_bytes: must be in [{MIN_CHUNK_BYTES}, {MAX_CHUNK_BYTES}]")


def ciphertext_size(plaintext_bytes: int, *, chunk_bytes: int, key_material_bytes: int) -> int:
    """Exact size of the encrypted stream of a ``plaintext_bytes``-byte document."""
    _check_chunk_bytes(chunk_bytes)
    if plaintext_bytes < 0 or not 0 <= key_material_bytes <= MAX_KEY_MATERIAL_BYTES:
        raise ValueError("plaintext_bytes, key_material_bytes: out of range")
    chunks = max(1, -(-plaintext_bytes // chunk_bytes))
    return HEADER_OVERHEAD + key_material_bytes + plaintext_bytes + TAG_BYTES * chunks


def plaintext_size(ciphertext_bytes: int, header: StreamHeader) -> int:
    """Size of the document inside a well-formed stream of ``ciphertext_bytes`` bytes."""
    body = ciphertext_bytes - header.size
    full = header.chunk_bytes + TAG_BYTES
    if body < TAG_BYTES:
        raise DecryptionError("stream is shorter than its header and one chunk")
    chunks = -(-body // full)
    last = body - (chunks - 1) * full
    if last < TAG_BYTES or (last == TAG_BYTES and chunks > 1):
        raise DecryptionError("stream length is impossible for its chunk size (truncated?)")
    return body - TAG_BYTES * chunks


def _make_header(
    keys: _Keys, salt: bytes, prefix: bytes, chunk_bytes: int, key_material: bytes
) -> bytes:
    body = (
        MAGIC
        + bytes([FORMAT_VERSION, AEAD_CHACHA20_POLY1305])
        + chunk_bytes.to_bytes(4, "big")
        + salt
        + prefix
        + len(key_material).to_bytes(2, "big")
        + key_material
    )
    return body + hmac.new(keys.header, body, sha256).digest()


def encrypt_stream(
    plaintext: Iterable[Buffer],
    file_key: bytes,
    *,
    rng: RandomBytes,
    key_material: bytes = b"",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[bytes]:
    """Encrypt pieces of any sizes; yield the header, then one sealed chunk at a time.

    Holds at most one chunk plus one input piece in memory.
    """
    _check_chunk_bytes(chunk_bytes)
    if not isinstance(key_material, bytes) or len(key_material) > MAX_KEY_MATERIAL_BYTES:
        raise ValueError(f"key_material: expected at most {MAX_KEY_MATERIAL_BYTES} bytes")
    salt = rng(SALT_BYTES)
    prefix = rng(NONCE_PREFIX_BYTES)
    if len(salt) != SALT_BYTES or len(prefix) != NONCE_PREFIX_BYTES:
        raise ValueError("rng: must return the number of bytes asked for")
    keys = _derive(file_key, salt)
    return _encrypt(plaintext, keys, salt, prefix, chunk_bytes, key_material)


def _rechunk(pieces: Iterable[Buffer], size: int) -> Iterator[tuple[Buffer, bool]]:
    """Cut pieces of any sizes into ``size``-byte chunks, flagging the last one.

    A chunk is released only once a byte beyond it is known (the last chunk may be full, and
    is empty only when there was no input at all). Whole chunks inside a piece are handed out
    as views without copying; at most one partial chunk is buffered.
    """
    pending = bytearray()
    for piece in pieces:
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise TypeError("expected an iterable of bytes")
        view = memoryview(piece).cast("B")
        n = len(view)
        if n == 0:
            continue
        pos = 0
        if pending:
            pos = min(size - len(pending), n)
            pending += view[:pos]
            if pos == n:
                continue  # pending may now be full; whether it is last is not known yet
            yield pending, False
            pending = bytearray()
        while n - pos > size:
            yield view[pos : pos + size], False
            pos += size
        pending = bytearray(view[pos:])
    yield pending, True


def _encrypt(
    plaintext: Iterable[Buffer],
    keys: _Keys,
    salt: bytes,
    prefix: bytes,
    chunk_bytes: int,
    key_material: bytes,
) -> Iterator[bytes]:
    yield _make_header(keys, salt, prefix, chunk_bytes, key_material)
    for index, (chunk, last) in enumerate(_rechunk(plaintext, chunk_bytes)):
        if index >= MAX_CHUNKS:
            raise CryptoError("document too long for one stream (2^32 chunks)")
        yield keys.payload.encrypt(_nonce(prefix, index, last), chunk, None)


# -- decryption -------------------------------------------------------------------------------


def parse_stream_header(data: bytes) -> StreamHeader:
    """Parse a header from the start of ``data`` (which may hold more). Not authenticated.

    Raises ``FormatError`` if the bytes are not an evault stream of a supported version, or
    ``DecryptionError`` if ``data`` ends inside the header.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("data: expected bytes")
    raw = bytes(data[: HEADER_OVERHEAD + MAX_KEY_MATERIAL_BYTES])
    if len(raw) < len(MAGIC) or raw[: len(MAGIC)] != MAGIC:
        if MAGIC.startswith(raw):
            raise DecryptionError("stream is truncated inside its header")
        raise FormatError("not an evault encrypted stream (bad magic)")
    if len(raw) < _FIXED_PREFIX:
        raise DecryptionError("stream is truncated inside its header")
    if raw[8] != FORMAT_VERSION:
        raise FormatError(f"unsupported evault stream version {raw[8]}")
    if raw[9] != AEAD_CHACHA20_POLY1305:
        raise FormatError(f"unsupported evault stream AEAD id {raw[9]}")
    chunk_bytes = int.from_bytes(raw[10:14], "big")
    if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise FormatError(f"evault stream chunk size {chunk_bytes} is out of range")
    salt = raw[14:46]
    prefix = raw[46:53]
    material_len = int.from_bytes(raw[53:55], "big")
    end = _FIXED_PREFIX + material_len + MAC_BYTES
    if len(raw) < end:
        raise DecryptionError("stream is truncated inside its header")
    return StreamHeader(
        chunk_bytes=chunk_bytes,
        salt=salt,
        nonce_prefix=prefix,
        key_material=raw[_FIXED_PREFIX : _FIXED_PREFIX + material_len],
        mac=raw[end - MAC_BYTES : end],
        raw=raw[:end],
    )


def read_stream_header(ciphertext: Iterable[Buffer]) -> tuple[StreamHeader, Iterator[Buffer]]:
    """Pull just enough input to parse the header; return it and an iterator of the rest.

    Use it to get at the key material (the wrapped file key) before the file key is known,
    then pass both to :func:`decrypt_stream_body`. Reads at most one input piece beyond the
    header (and never more than 64 KiB + one piece for a hostile length field).
    """
    pieces = iter(ciphertext)
    buf = bytearray()
    need = _FIXED_PREFIX
    while len(buf) < need:
        piece = next(pieces, None)
        if piece is None:
            break
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise TypeError("ciphertext: expected an iterable of bytes")
        buf += piece
        if len(buf) >= _FIXED_PREFIX:
            need = _FIXED_PREFIX + int.from_bytes(buf[53:55], "big") + MAC_BYTES
    header = parse_stream_header(bytes(buf))  # raises: bad magic / version / truncated
    rest = bytes(buf[header.size :])
    del buf

    def remaining() -> Iterator[Buffer]:
        if rest:
            yield rest
        yield from pieces

    return header, remaining()


def verify_stream_header(header: StreamHeader, file_key: bytes) -> None:
    """Check the header MAC under ``file_key``; raises ``DecryptionError``."""
    keys = _derive(file_key, header.salt)
    _verify_header(header, keys)


def _verify_header(header: StreamHeader, keys: _Keys) -> None:
    expected = hmac.new(keys.header, header.raw[:-MAC_BYTES], sha256).digest()
    if not hmac.compare_digest(expected, header.mac):
        raise DecryptionError("stream header does not authenticate (wrong key or tampered)")


def decrypt_stream_body(
    header: StreamHeader, body: Iterable[Buffer], file_key: bytes
) -> Iterator[bytes]:
    """Check the header MAC, then yield each chunk's plaintext once it authenticates.

    Raises ``DecryptionError`` (naming the chunk) on tampering, reordering or truncation.
    The header is checked when this function is called, before any iteration.
    """
    if not isinstance(header, StreamHeader):
        raise TypeError("header: expected StreamHeader")
    keys = _derive(file_key, header.salt)
    _verify_header(header, keys)
    return _decrypt(header, body, keys)


def _decrypt(header: StreamHeader, body: Iterable[Buffer], keys: _Keys) -> Iterator[bytes]:
    prefix = header.nonce_prefix
    chunks = _rechunk(body, header.chunk_bytes + TAG_BYTES)
    for index, (chunk, last) in enumerate(chunks):
        if index >= MAX_CHUNKS:
            raise DecryptionError("stream has more than 2^32 chunks", index)
        if last:
            yield _open_last(keys, prefix, index, chunk)
            return
        try:
            plaintext = keys.payload.decrypt(_nonce(prefix, index, False), chunk, None)
        except InvalidTag:
            raise DecryptionError(
                "chunk does not authenticate (tampered, reordered or from another file)", index
            ) from None
        yield plaintext


def _open_last(keys: _Keys, prefix: bytes, index: int, chunk: Buffer) -> bytes:
    if len(chunk) < TAG_BYTES:
        raise DecryptionError("stream is truncated (final chunk is incomplete)", index)
    try:
        plaintext = keys.payload.decrypt(_nonce(prefix, index, True), chunk, None)
    except InvalidTag:
        # Tell a cut at a chunk boundary from tampering: the chunk then opens as a non-final one.
        try:
            keys.payload.decrypt(_nonce(prefix, index, False), chunk, None)
        except InvalidTag:
            pass
        else:
            raise DecryptionError(
                "stream is truncated (it ends at a chunk that is not the last)", index
            ) from None
        raise DecryptionError(
            "chunk does not authenticate (tampered, reordered or from another file)", index
        ) from None
    if not plaintext and index > 0:
        raise DecryptionError("stream has an empty final chunk (not a canonical stream)", index)
    return plaintext


def decrypt_stream(ciphertext: Iterable[Buffer], file_key: bytes) -> Iterator[bytes]:
    """Header and body together, when the file key is already known."""
    header, body = read_stream_header(ciphertext)
    return decrypt_stream_body(header, body, file_key)
