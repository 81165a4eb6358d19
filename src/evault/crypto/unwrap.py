"""Hashed-ElGamal key wrap and its blinded threshold unwrap (DESIGN §7, paper §4.2).

Garay, Gennaro, Jutla, Rabin, "Secure distributed storage and retrieval" (1997) combine
threshold decryption with blinding so that the client can recover a file key with the help of
k nodes while neither the gateway nor any k − 1 nodes learn it. This module is that protocol
over the prime-order group of Ed25519 (:mod:`evault.crypto.group`, written additively:
``s·P`` is the papers' ``P^s``), with the unwrap key x dealt by :mod:`evault.crypto.feldman`.

Wrap (client, at deposit)
    r random; c1 = r·B; KEK = HKDF-SHA256(ikm = r·Y, info = T_kek ‖ 0x00 ‖ frame(c1, Y, ctx));
    sealed = ChaCha20-Poly1305(KEK, nonce = 0^96, plaintext = file key, aad = ctx), where ctx
    is the canonical JSON of {vault, owner, name, version}. The all-zero nonce is safe because
    each KEK encrypts exactly one message (a fresh r gives a fresh KEK). Byte layout of a
    :class:`WrappedKey` (113 bytes, goes into the stream header as opaque key material)::

        0    1   format version = 0x01
        1   32   Y, the client's public unwrap key (names the key to ask the nodes for)
        33  32   c1 = r·B
        65  48   sealed file key (32) ‖ Poly1305 tag (16)

Unwrap (client with k nodes, at retrieval)
    1. The client picks ρ and sends c1' = c1 + ρ·B, in an :class:`UnwrapRequest` signed with
       its Ed25519 identity key.
    2. Node i checks the signature against the identity key that came sealed with its share
       (:func:`verify_unwrap_request`), checks freshness and that the request id is new, and
       answers d_i = x_i·c1' with a Chaum–Pedersen proof that log_B(Y_i) = log_{c1'}(d_i)
       (:func:`partial_unwrap`).
    3. The client verifies every proof against Y_i from the Feldman commitments, excludes bad
       answers naming the node, combines k good ones by Lagrange interpolation in the exponent
       (Σ λ_i·d_i = x·c1' = x·c1 + ρ·Y), subtracts ρ·Y, derives the KEK and opens the wrap
       (:func:`recover_file_key`).

Chaum–Pedersen proof (non-interactive, Fiat–Shamir)
    Prover: w = H(T_cp_nonce; x_i, c1', request_id, 32 random bytes) (hedged: a broken RNG
    cannot repeat w for two different statements); A = w·B; A' = w·c1';
    c = H(T_cp; Y, i, Y_i, c1', d_i, A, A', request_id); z = w + c·x_i mod ℓ. Send (d_i, c, z).
    Verifier: A = z·B − c·Y_i, A' = z·c1' − c·d_i, accept iff c = H(…) again. H is
    :func:`evault.crypto.group.hash_to_scalar`. Byte layout of a :class:`PartialUnwrap`
    (99 bytes)::

        0    1   format version = 0x01
        1    2   node index i, big-endian
        3   32   d_i
        35  32   c, little-endian scalar < ℓ
        67  32   z, little-endian scalar < ℓ

Signed unwrap request
    ``signed = signature (64) ‖ body``, body = canonical JSON (RFC 8785) of
    {"type": "evault/unwrap-request/v1", "vault", "owner", "key": hex(Y), "c1": hex(c1'),
    "request_id": hex(16 random bytes), "issued_at": unix seconds, "node": i (optional: the
    request is then good at that node only)}; signature = Ed25519 over
    b"evault/unwrap-request/v1" ‖ 0x00 ‖ body. A node verifies the signature *before* parsing.

Why the gateway cannot ask on the client's behalf
    Every node checks the request's signature itself, against the identity public key that
    reached it sealed together with its share of x (see :mod:`evault.crypto.feldman`): the
    gateway relays but can neither read nor replace that key, and it cannot sign without the
    client's identity private key. This matters because blinding hides *which* ciphertext is
    being unwrapped: a node cannot authorise by document, only by who asks.

Why a replayed request yields nothing usable
    A node refuses a request id it has seen and a request older than ``max_age_s``; but even a
    node that answered a replay would only return d_i = x_i·c1' again. The combination of
    such answers is x·c1' = x·c1 + ρ·Y, and ρ was chosen by the original client and never
    left it: for anyone else ρ·Y is a uniformly random group element that hides x·c1 (a
    one-time pad in the group), so the replayed answers tell nothing beyond what the original
    answers (which the gateway relayed and saw) already told — which is nothing about the
    file key. The same argument covers the gateway combining the answers it relays. Any t < k
    nodes together hold t points of a degree-(k − 1) polynomial, which say nothing about x.

Everything here is pure: randomness (``rng``), the clock (``now``, ``issued_at``) and the
replay cache (``seen_before``) are passed in.

Usage (what the vault / CLI wiring does; the bytes in between travel through the gateway)::

    # client, at registration (evault.crypto.feldman)
    dealing = deal_unwrap_key(threshold=k, nodes=n, rng=os.urandom)
    sealed = seal_dealing(dealing, vault=v, owner=o, node_public_keys=pks, identity=sk)
    # node i
    share = open_key_share(sealed[i], node_private_key=nk, vault=v, owner=o, node_index=i)
    store(share.to_bytes())                    # and publish dealing.commitments.to_bytes()

    # client, at deposit (with evault.crypto.stream)
    wrapped = wrap_file_key(file_key, dealing.public_key, WrapContext(v, o, name, ver), rng=…)
    encrypt_stream(pieces, file_key, key_material=wrapped.to_bytes(), rng=…)

    # client, at retrieval
    header, body = read_stream_header(pieces); wrapped = WrappedKey.from_bytes(header.key_material)
    b = blind(wrapped, rng=…)
    req = make_unwrap_request(b, vault=v, owner=o, issued_at=int(time.time()), rng=…)
    signed = sign_unwrap_request(req, sk)
    # node i
    r = verify_unwrap_request(signed, key_share=share, now=time.time(), seen_before=cache)
    answer = partial_unwrap(share, r, rng=os.urandom).to_bytes()
    # client
    partials = [PartialUnwrap.from_bytes(a, node=i) for i, a in answers.items()]
    got = recover_file_key(wrapped, ctx, blinding=b, request=req,
                           commitments=FeldmanCommitments.from_bytes(c), partials=partials)
    decrypt_stream_body(header, body, got.file_key)     # got.bad names lying nodes

The client must get the commitments (or at least check ``commitments.public_key`` against
its own Y, which the wrapped key also names) and the nodes' X25519 keys from a source the
gateway cannot forge; with forged commitments a gateway can only deny service (the wrap
does not open) and make honest nodes' proofs look bad, never learn the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from evault.crypto.feldman import MAX_NODES, FeldmanCommitments, NodeKeyShare
from evault.crypto.group import (
    ORDER,
    Element,
    RandomBytes,
    base_mul,
    decode_element,
    decode_scalar,
    frame,
    hash_to_scalar,
    lagrange_at_zero,
    random_scalar,
    scalar_to_bytes,
)
from evault.encoding import TAGS, canonical_json, parse_canonical_json
from evault.errors import (
    CryptoError,
    DecryptionError,
    FormatError,
    InvalidElement,
    InvalidPartialUnwrap,
    NotEnoughPartialUnwraps,
    UnwrapRequestRejected,
)

FILE_KEY_BYTES: Final = 32
WRAPPED_KEY_VERSION: Final = 1
WRAPPED_KEY_BYTES: Final = 1 + 32 + 32 + FILE_KEY_BYTES + 16
PARTIAL_UNWRAP_VERSION: Final = 1
PARTIAL_UNWRAP_BYTES: Final = 1 + 2 + 32 + 32 + 32
REQUEST_TYPE: Final = TAGS["unwrap-request"]
REQUEST_ID_BYTES: Final = 16
#: Defaults for the node-side freshness check (seconds).
DEFAULT_MAX_AGE_S: Final = 300.0
DEFAULT_MAX_SKEW_S: Final = 60.0

_SIGNATURE_BYTES: Final = 64
_MAX_REQUEST_BYTES: Final = 4096
_REQUEST_KEYS: Final = frozenset({"type", "vault", "owner", "key", "c1", "request_id", "issued_at"})
_HEX_RE: Final = re.compile(r"[0-9a-f]*")
_ZERO_NONCE: Final = bytes(12)


def _check_name(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: expected a non-empty string")
    return value


def _check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected int")
    return value


# -- the wrap ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrapContext:
    """What a wrapped file key is bound to: it opens only under the same four values."""

    vault: str
    owner: str
    name: str
    version: int

    def __post_init__(self) -> None:
        _check_name(self.vault, "vault")
        _check_name(self.owner, "owner")
        _check_name(self.name, "name")
        if _check_int(self.version, "version") < 0:
            raise ValueError("version: must be >= 0")

    def to_bytes(self) -> bytes:
        return canonical_json(
            {"vault": self.vault, "owner": self.owner, "name": self.name, "version": self.version}
        )


@dataclass(frozen=True)
class WrappedKey:
    """A file key wrapped under the public key ``key_id`` = Y (see the module docstring)."""

    key_id: Element
    c1: Element
    sealed: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, Element) or not isinstance(self.c1, Element):
            raise TypeError("key_id, c1: expected Element")
        if not isinstance(self.sealed, bytes) or len(self.sealed) != FILE_KEY_BYTES + 16:
            raise ValueError(f"sealed: expected {FILE_KEY_BYTES + 16} bytes")

    def to_bytes(self) -> bytes:
        return bytes([WRAPPED_KEY_VERSION]) + self.key_id.encoding + self.c1.encoding + self.sealed

    @classmethod
    def from_bytes(cls, data: bytes) -> WrappedKey:
        """Parse and validate a wrapped key: ``FormatError`` / ``InvalidElement`` if bad."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("data: expected bytes")
        raw = bytes(data)
        if len(raw) != WRAPPED_KEY_BYTES:
            raise FormatError(f"wrapped key must be {WRAPPED_KEY_BYTES} bytes, got {len(raw)}")
        if raw[0] != WRAPPED_KEY_VERSION:
            raise FormatError(f"unsupported wrapped-key version {raw[0]}")
        return cls(
            decode_element(raw[1:33], what="wrapped key: public key"),
            decode_element(raw[33:65], what="wrapped key: c1"),
            raw[65:],
        )


def _kek(shared: Element, key_id: Element, c1: Element, context: WrapContext) -> bytes:
    info = (
        TAGS["kek"].encode("ascii")
        + b"\x00"
        + frame(c1.encoding, key_id.encoding, context.to_bytes())
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared.encoding)


def wrap_file_key(
    file_key: bytes, public_key: Element, context: WrapContext, *, rng: RandomBytes
) -> WrappedKey:
    """Wrap a 32-byte file key under Y = ``public_key``, bound to ``context``."""
    if not isinstance(file_key, bytes) or len(file_key) != FILE_KEY_BYTES:
        raise ValueError(f"file_key: expected {FILE_KEY_BYTES} bytes")
    if not isinstance(public_key, Element) or public_key.is_identity:
        raise ValueError("public_key: expected a non-identity Element")
    if not isinstance(context, WrapContext):
        raise TypeError("context: expected WrapContext")
    r = random_scalar(rng)
    c1 = base_mul(r)
    kek = _kek(r * public_key, public_key, c1, context)
    sealed = ChaCha20Poly1305(kek).encrypt(_ZERO_NONCE, file_key, context.to_bytes())
    return WrappedKey(public_key, c1, sealed)


def open_wrapped_key(wrapped: WrappedKey, shared: Element, context: WrapContext) -> bytes:
    """Open the wrap given the shared point x·c1 (= r·Y); raises ``DecryptionError``."""
    if not isinstance(wrapped, WrappedKey) or not isinstance(shared, Element):
        raise TypeError("wrapped, shared: expected WrappedKey and Element")
    if not isinstance(context, WrapContext):
        raise TypeError("context: expected WrapContext")
    kek = _kek(shared, wrapped.key_id, wrapped.c1, context)
    try:
        return ChaCha20Poly1305(kek).decrypt(_ZERO_NONCE, wrapped.sealed, context.to_bytes())
    except InvalidTag as exc:
        raise DecryptionError(
            "the wrapped file key does not open (wrong vault/owner/name/version, "
            "wrong unwrap key, or tampered)"
        ) from exc


def unwrap_file_key_with_secret(wrapped: WrappedKey, secret: int, context: WrapContext) -> bytes:
    """Open the wrap with x itself (dealer-side tools and tests; clients normally forget x)."""
    if _check_int(secret, "secret") <= 0 or secret >= ORDER:
        raise ValueError("secret: must be in [1, ℓ)")
    return open_wrapped_key(wrapped, secret * wrapped.c1, context)


# -- blinding and the signed request -----------------------------------------------------------


@dataclass(frozen=True)
class Blinding:
    """The client's secret state for one unwrap: ρ, c1' = c1 + ρ·B and ρ·Y."""

    key_id: Element
    c1: Element
    c1_blinded: Element
    rho: int = field(repr=False)
    y_rho: Element = field(repr=False)


def blind(wrapped: WrappedKey, *, rng: RandomBytes) -> Blinding:
    """Pick ρ and blind c1; keep the result only until the unwrap is done."""
    while True:
        rho = random_scalar(rng)
        c1_blinded = wrapped.c1 + base_mul(rho)
        if not c1_blinded.is_identity:  # c1 = −ρ·B: probability 1/ℓ
            break
    return Blinding(wrapped.key_id, wrapped.c1, c1_blinded, rho, rho * wrapped.key_id)


@dataclass(frozen=True)
class UnwrapRequest:
    """The body of an unwrap request (see the module docstring for its canonical form)."""

    vault: str
    owner: str
    key_id: Element
    c1_blinded: Element
    request_id: bytes
    issued_at: int
    node: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.vault, "vault")
        _check_name(self.owner, "owner")
        if not isinstance(self.key_id, Element) or not isinstance(self.c1_blinded, Element):
            raise TypeError("key_id, c1_blinded: expected Element")
        if self.key_id.is_identity or self.c1_blinded.is_identity:
            raise ValueError("key_id, c1_blinded: may not be the identity")
        if not isinstance(self.request_id, bytes) or not 16 <= len(self.request_id) <= 64:
            raise ValueError("request_id: expected 16 to 64 bytes")
        if _check_int(self.issued_at, "issued_at") < 0:
            raise ValueError("issued_at: must be >= 0")
        if self.node is not None and not 1 <= _check_int(self.node, "node") <= MAX_NODES:
            raise ValueError(f"node: must be in [1, {MAX_NODES}]")

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {
            "type": REQUEST_TYPE,
            "vault": self.vault,
            "owner": self.owner,
            "key": self.key_id.hex(),
            "c1": self.c1_blinded.hex(),
            "request_id": self.request_id.hex(),
            "issued_at": self.issued_at,
        }
        if self.node is not None:
            body["node"] = self.node
        return canonical_json(body)


def make_unwrap_request(
    blinding: Blinding,
    *,
    vault: str,
    owner: str,
    issued_at: int,
    rng: RandomBytes,
    node: int | None = None,
) -> UnwrapRequest:
    """A fresh request (random 16-byte id) for the blinded c1 of ``blinding``."""
    request_id = rng(REQUEST_ID_BYTES)
    return UnwrapRequest(
        vault, owner, blinding.key_id, blinding.c1_blinded, request_id, issued_at, node
    )


def _request_message(body: bytes) -> bytes:
    return REQUEST_TYPE.encode("ascii") + b"\x00" + body


def sign_unwrap_request(request: UnwrapRequest, identity: nacl.signing.SigningKey) -> bytes:
    """``signature ‖ body``, signed with the client's identity key."""
    if not isinstance(identity, nacl.signing.SigningKey):
        raise TypeError("identity: expected nacl.signing.SigningKey")
    body = request.to_bytes()
    signature = identity.sign(_request_message(body)).signature
    if not isinstance(signature, bytes) or len(signature) != _SIGNATURE_BYTES:
        raise TypeError("identity: produced a malformed signature")  # pragma: no cover
    return signature + body


def _malformed(detail: str) -> UnwrapRequestRejected:
    return UnwrapRequestRejected("malformed", detail)


def _parse_request(body_bytes: bytes) -> UnwrapRequest:
    try:
        body = parse_canonical_json(body_bytes, max_bytes=_MAX_REQUEST_BYTES)
    except FormatError as exc:
        raise _malformed(str(exc)) from exc
    if not isinstance(body, dict):
        raise _malformed("body is not a JSON object")
    keys = set(body)
    if keys != _REQUEST_KEYS and keys != _REQUEST_KEYS | {"node"}:
        raise _malformed("body does not have the v1 fields")
    if body["type"] != REQUEST_TYPE:
        raise _malformed(f"unknown request type {body['type']!r}")
    for name in ("vault", "owner", "key", "c1", "request_id"):
        if not isinstance(body[name], str) or not body[name]:
            raise _malformed(f"field {name!r} must be a non-empty string")
    for name in ("key", "c1", "request_id"):
        if _HEX_RE.fullmatch(body[name]) is None or len(body[name]) % 2:
            raise _malformed(f"field {name!r} must be lowercase hex")
    issued_at = body["issued_at"]
    if isinstance(issued_at, bool) or not isinstance(issued_at, int) or issued_at < 0:
        raise _malformed("field 'issued_at' must be a non-negative integer")
    node = body.get("node")
    if node is not None and (
        isinstance(node, bool) or not isinstance(node, int) or not 1 <= node <= MAX_NODES
    ):
        raise _malformed(f"field 'node' must be an integer in [1, {MAX_NODES}]")
    request_id = bytes.fromhex(body["request_id"])
    if not 16 <= len(request_id) <= 64:
        raise _malformed("request_id must be 16 to 64 bytes")
    try:
        key_id = decode_element(bytes.fromhex(body["key"]), what="request key")
        c1_blinded = decode_element(bytes.fromhex(body["c1"]), what="request c1")
    except InvalidElement as exc:
        raise _malformed(str(exc)) from exc
    return UnwrapRequest(
        body["vault"], body["owner"], key_id, c1_blinded, request_id, issued_at, node
    )


def _split_signed(signed: bytes) -> tuple[bytes, bytes]:
    if not isinstance(signed, bytes | bytearray | memoryview):
        raise TypeError("signed: expected bytes")
    raw = bytes(signed)
    if not _SIGNATURE_BYTES < len(raw) <= _SIGNATURE_BYTES + _MAX_REQUEST_BYTES:
        raise _malformed("signed request has an impossible length")
    return raw[:_SIGNATURE_BYTES], raw[_SIGNATURE_BYTES:]


def peek_unwrap_request(signed: bytes) -> UnwrapRequest:
    """Parse *without* checking the signature — only to find which key share to load.

    Never act on the result; pass the same bytes to :func:`verify_unwrap_request`.
    """
    return _parse_request(_split_signed(signed)[1])


def verify_unwrap_request(
    signed: bytes,
    *,
    key_share: NodeKeyShare,
    now: float,
    seen_before: Callable[[bytes], bool],
    max_age_s: float = DEFAULT_MAX_AGE_S,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
) -> UnwrapRequest:
    """Node side: accept a request only if the key's own client signed it, freshly, once.

    Checks, in this order: the signature (against ``key_share.identity_public_key``, before
    parsing anything), the fields, that vault / owner / key (and node, if named) are this
    share's, that ``now − max_age_s ≤ issued_at ≤ now + max_skew_s``, and finally
    ``seen_before(request_id)``. ``seen_before`` is the caller's replay cache: it must return
    True if the id was already recorded and otherwise record it (atomically); ids need to be
    kept only for ``max_age_s + max_skew_s``. Only authentic, fresh requests reach the cache,
    so forgeries cannot fill it. Raises ``UnwrapRequestRejected`` with ``reason`` one of
    malformed, bad_signature, wrong_vault, wrong_owner, wrong_key, wrong_node, stale,
    from_future, replayed.
    """
    if not isinstance(key_share, NodeKeyShare):
        raise TypeError("key_share: expected NodeKeyShare")
    if max_age_s <= 0 or max_skew_s < 0:
        raise ValueError("max_age_s, max_skew_s: must be positive")
    signature, body = _split_signed(signed)
    try:
        nacl.signing.VerifyKey(key_share.identity_public_key).verify(
            _request_message(body), signature
        )
    except nacl.exceptions.BadSignatureError as exc:
        raise UnwrapRequestRejected(
            "bad_signature", "not signed by the identity key registered with this unwrap key"
        ) from exc
    request = _parse_request(body)
    rid = request.request_id.hex()
    if request.vault != key_share.vault:
        raise UnwrapRequestRejected("wrong_vault", "request is for another vault", rid)
    if request.owner != key_share.owner:
        raise UnwrapRequestRejected("wrong_owner", "request is for another owner", rid)
    if request.key_id != key_share.public_key:
        raise UnwrapRequestRejected("wrong_key", "request names another unwrap key", rid)
    if request.node is not None and request.node != key_share.index:
        raise UnwrapRequestRejected(
            "wrong_node", f"request is addressed to node {request.node}", rid
        )
    if request.issued_at < now - max_age_s:
        raise UnwrapRequestRejected(
            "stale", f"issued {now - request.issued_at:.0f} s ago (limit {max_age_s:.0f} s)", rid
        )
    if request.issued_at > now + max_skew_s:
        raise UnwrapRequestRejected(
            "from_future", f"issued {request.issued_at - now:.0f} s in the future", rid
        )
    if seen_before(request.request_id):
        raise UnwrapRequestRejected("replayed", "this request id was already served", rid)
    return request


# -- partial unwraps ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PartialUnwrap:
    """Node ``node``'s answer d_i = x_i·c1' with its Chaum–Pedersen proof (c, z)."""

    node: int
    d: Element
    challenge: int
    response: int

    def __post_init__(self) -> None:
        if not 1 <= _check_int(self.node, "node") <= MAX_NODES:
            raise ValueError(f"node: must be in [1, {MAX_NODES}]")
        if not isinstance(self.d, Element):
            raise TypeError("d: expected Element")
        for name in ("challenge", "response"):
            if not 0 <= _check_int(getattr(self, name), name) < ORDER:
                raise ValueError(f"{name}: must be in [0, ℓ)")

    def to_bytes(self) -> bytes:
        return (
            bytes([PARTIAL_UNWRAP_VERSION])
            + self.node.to_bytes(2, "big")
            + self.d.encoding
            + scalar_to_bytes(self.challenge)
            + scalar_to_bytes(self.response)
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, node: int | None = None) -> PartialUnwrap:
        """Parse and validate; ``node`` (who actually sent it) names the culprit on error.

        Without ``node``, an error about bytes too garbled to name their sender says node 0.
        """
        culprit = node if node is not None else 0
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("data: expected bytes")
        raw = bytes(data)
        if len(raw) != PARTIAL_UNWRAP_BYTES:
            raise InvalidPartialUnwrap(culprit, f"expected {PARTIAL_UNWRAP_BYTES} bytes")
        if raw[0] != PARTIAL_UNWRAP_VERSION:
            raise InvalidPartialUnwrap(culprit, f"unsupported version {raw[0]}")
        index = int.from_bytes(raw[1:3], "big")
        if not 1 <= index <= MAX_NODES or (node is not None and index != node):
            raise InvalidPartialUnwrap(culprit, f"claims to be from node {index}")
        try:
            d = decode_element(raw[3:35], what="d")
            c = decode_scalar(raw[35:67], what="challenge")
            z = decode_scalar(raw[67:99], what="response")
        except InvalidElement as exc:
            raise InvalidPartialUnwrap(index, str(exc)) from exc
        return cls(index, d, c, z)


def _challenge(
    key_id: Element,
    node: int,
    verification_key: Element,
    c1_blinded: Element,
    d: Element,
    a: Element,
    a_prime: Element,
    request_id: bytes,
) -> int:
    return hash_to_scalar(
        TAGS["cp-proof"],
        key_id.encoding,
        node.to_bytes(2, "big"),
        verification_key.encoding,
        c1_blinded.encoding,
        d.encoding,
        a.encoding,
        a_prime.encoding,
        request_id,
    )


def partial_unwrap(
    key_share: NodeKeyShare, request: UnwrapRequest, *, rng: RandomBytes
) -> PartialUnwrap:
    """Node side: d_i = x_i·c1' with its proof, for a request already verified."""
    if not isinstance(key_share, NodeKeyShare) or not isinstance(request, UnwrapRequest):
        raise TypeError("key_share, request: expected NodeKeyShare and UnwrapRequest")
    if request.key_id != key_share.public_key:
        raise ValueError("request: names another unwrap key than key_share")
    x_i = key_share.share.value
    c1b = request.c1_blinded
    d = x_i * c1b
    while True:
        entropy = rng(32)
        if not isinstance(entropy, bytes) or len(entropy) != 32:
            raise ValueError("rng: must return the number of bytes asked for")
        w = hash_to_scalar(
            TAGS["cp-nonce"], scalar_to_bytes(x_i), c1b.encoding, request.request_id, entropy
        )
        if w:
            break
    c = _challenge(
        key_share.public_key,
        key_share.index,
        key_share.verification_key,
        c1b,
        d,
        base_mul(w),
        w * c1b,
        request.request_id,
    )
    return PartialUnwrap(key_share.index, d, c, (w + c * x_i) % ORDER)


def verify_partial_unwrap(
    partial: PartialUnwrap, *, commitments: FeldmanCommitments, request: UnwrapRequest
) -> None:
    """Client side: check the Chaum–Pedersen proof; raises ``InvalidPartialUnwrap``."""
    if not isinstance(partial, PartialUnwrap):
        raise TypeError("partial: expected PartialUnwrap")
    if partial.d.is_identity:
        raise InvalidPartialUnwrap(partial.node, "d is the identity")
    y_i = commitments.verification_key(partial.node)
    c1b = request.c1_blinded
    c, z = partial.challenge, partial.response
    a = base_mul(z) - c * y_i
    a_prime = z * c1b - c * partial.d
    expected = _challenge(
        request.key_id, partial.node, y_i, c1b, partial.d, a, a_prime, request.request_id
    )
    if expected != c:
        raise InvalidPartialUnwrap(partial.node, "Chaum–Pedersen proof does not verify")


@dataclass(frozen=True)
class PartialUnwrapReport:
    """What :func:`check_partial_unwraps` found: valid answers and reasons for the rest."""

    valid: Mapping[int, PartialUnwrap]
    bad: Mapping[int, str]


def check_partial_unwraps(
    partials: Iterable[PartialUnwrap],
    *,
    commitments: FeldmanCommitments,
    request: UnwrapRequest,
) -> PartialUnwrapReport:
    """Verify every answer; report each bad one by node index (never raises for bad ones)."""
    if commitments.public_key != request.key_id:
        raise CryptoError(
            "the Feldman commitments are for another unwrap key than the request",
            key=request.key_id.hex(),
        )
    seen: dict[int, PartialUnwrap] = {}
    valid: dict[int, PartialUnwrap] = {}
    bad: dict[int, str] = {}
    for p in partials:
        if not isinstance(p, PartialUnwrap):
            raise TypeError("partials: expected PartialUnwrap values")
        if p.node in seen:
            if seen[p.node] != p:
                bad[p.node] = "sent two different answers"
                valid.pop(p.node, None)
            continue
        seen[p.node] = p
        try:
            verify_partial_unwrap(p, commitments=commitments, request=request)
        except InvalidPartialUnwrap as exc:
            bad[p.node] = exc.reason
        else:
            valid[p.node] = p
    return PartialUnwrapReport(valid, bad)


@dataclass(frozen=True)
class CombinedUnwrap:
    """x·c1 (unblinded), which nodes' answers were used, and which were rejected and why."""

    shared: Element = field(repr=False)
    used: tuple[int, ...]
    bad: Mapping[int, str]


def combine_partial_unwraps(
    partials: Iterable[PartialUnwrap],
    *,
    commitments: FeldmanCommitments,
    request: UnwrapRequest,
    blinding: Blinding,
) -> CombinedUnwrap:
    """Verify, exclude bad answers, combine k by Lagrange in the exponent, remove ρ·Y.

    Raises ``NotEnoughPartialUnwraps(have, need, bad)`` when fewer than k answers verify.
    """
    if blinding.c1_blinded != request.c1_blinded or blinding.key_id != request.key_id:
        raise ValueError("blinding: does not belong to request")
    report = check_partial_unwraps(partials, commitments=commitments, request=request)
    need = commitments.threshold
    if len(report.valid) < need:
        raise NotEnoughPartialUnwraps(len(report.valid), need, report.bad)
    used = tuple(sorted(report.valid)[:need])
    blinded = report.valid[used[0]].d * lagrange_at_zero(used[0], used)
    for i in used[1:]:
        blinded = blinded + lagrange_at_zero(i, used) * report.valid[i].d
    return CombinedUnwrap(blinded - blinding.y_rho, used, dict(report.bad))


@dataclass(frozen=True)
class RecoveredKey:
    """The unwrapped file key, and the nodes used / rejected on the way (for reporting)."""

    file_key: bytes = field(repr=False)
    used: tuple[int, ...]
    bad: Mapping[int, str]


def recover_file_key(
    wrapped: WrappedKey,
    context: WrapContext,
    *,
    blinding: Blinding,
    request: UnwrapRequest,
    commitments: FeldmanCommitments,
    partials: Iterable[PartialUnwrap],
) -> RecoveredKey:
    """Client side, end to end: verify, combine, unblind and open the wrap."""
    if blinding.c1 != wrapped.c1 or blinding.key_id != wrapped.key_id:
        raise ValueError("blinding: was not made for this wrapped key")
    combined = combine_partial_unwraps(
        partials, commitments=commitments, request=request, blinding=blinding
    )
    # Every answer used carried a valid proof, so the combination is x·c1 for the x of these
    # commitments: a DecryptionError here blames the wrap or the context, never a node.
    file_key = open_wrapped_key(wrapped, combined.shared, context)
    return RecoveredKey(file_key, combined.used, combined.bad)


__all__ = [
    "DEFAULT_MAX_AGE_S",
    "DEFAULT_MAX_SKEW_S",
    "FILE_KEY_BYTES",
    "PARTIAL_UNWRAP_BYTES",
    "REQUEST_ID_BYTES",
    "WRAPPED_KEY_BYTES",
    "Blinding",
    "CombinedUnwrap",
    "PartialUnwrap",
    "PartialUnwrapReport",
    "RecoveredKey",
    "UnwrapRequest",
    "WrapContext",
    "WrappedKey",
    "blind",
    "check_partial_unwraps",
    "combine_partial_unwraps",
    "make_unwrap_request",
    "open_wrapped_key",
    "partial_unwrap",
    "peek_unwrap_request",
    "recover_file_key",
    "sign_unwrap_request",
    "unwrap_file_key_with_secret",
    "verify_partial_unwrap",
    "verify_unwrap_request",
    "wrap_file_key",
]
