"""Per-client unwrap keys: Shamir shares with Feldman commitments, sealed to each node.

DESIGN §7; paper §4.2; Garay, Gennaro, Jutla, Rabin (1997); Feldman, "A practical scheme for
non-interactive verifiable secret sharing" (FOCS 1987).

Dealing (by the client, once, then it forgets x)
    Pick a random polynomial f(z) = a_0 + a_1 z + … + a_{k-1} z^{k-1} over Z_ℓ with
    a_0 = x, the client's unwrap key. Node i (1 ≤ i ≤ n) gets the share x_i = f(i); everyone
    gets the commitments C_j = a_j·B. Then

      * the public key is Y = C_0 = x·B;
      * node i's public verification key is Y_i = x_i·B = Σ_j (i^j)·C_j, which anyone computes
        from the commitments (evaluated by Horner's rule);
      * node i checks its share by x_i·B == Y_i — a share that passes lies on the same
        polynomial as every other passing share, so any k of them interpolate to x.

    The dealer re-draws the polynomial in the (probability ~n/ℓ) case that a coefficient or a
    share is 0, so every commitment and every Y_i is a valid, non-identity element and can be
    validated as such wherever it is received.

Sealing (so the relaying gateway cannot read a share)
    Share i travels to node i through the gateway inside ``nacl.public.SealedBox`` (X25519 +
    XSalsa20-Poly1305, anonymous sender) under node i's public key. The sealed plaintext is a
    *record*::

        record = signature (64 bytes) ‖ body
        body   = canonical JSON (RFC 8785) of
                 {"type": "evault/unwrap-key-share/v1", "vault": str, "owner": str,
                  "node": i, "nodes": n, "threshold": k,
                  "commitments": [hex(C_0), …, hex(C_{k-1})],
                  "share": hex(x_i as 32 bytes little-endian),
                  "identity": hex(client's Ed25519 identity public key)}
        signature = Ed25519 signature by the identity key over
                    b"evault/unwrap-key-share/v1" ‖ 0x00 ‖ body

    The node opens the box and checks: the body is canonical and complete, it is addressed to
    this vault, owner and node index, every commitment is a valid element, the share matches
    the commitments (Feldman), and the signature verifies under the identity key inside.

    Why the identity key travels *inside* the box: the node later accepts unwrap requests for
    this key only when they are signed by that identity key. The gateway cannot swap it: it
    cannot read or re-seal the share (it does not know x_i), and it cannot make a share of the
    same Y that passes the Feldman check without knowing x. (The node's X25519 public keys
    must reach the client authentically — from the vault's signed configuration, not from
    an unauthenticated gateway answer — or the gateway could receive the shares itself.)

The node keeps the record (``NodeKeyShare.to_bytes()``) and can reload it with
``NodeKeyShare.from_bytes``, which repeats every check except the sealing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import nacl.exceptions
import nacl.public
import nacl.signing

from evault.crypto.group import (
    ORDER,
    Element,
    RandomBytes,
    base_mul,
    decode_element,
    random_scalar,
    scalar_to_bytes,
)
from evault.encoding import TAGS, canonical_json, parse_canonical_json
from evault.errors import EvaultError, InvalidElement, InvalidKeyShare

#: Largest n we deal to (node indices travel as u16; IDA over GF(2^8) caps n far lower).
MAX_NODES: Final = 255

KEY_SHARE_TYPE: Final = TAGS["key-share"]
_SIGNATURE_BYTES: Final = 64
_MAX_RECORD_BYTES: Final = 32 * 1024
_RECORD_KEYS: Final = frozenset(
    {"type", "vault", "owner", "node", "nodes", "threshold", "commitments", "share", "identity"}
)


def _check_params(threshold: int, nodes: int) -> None:
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"nodes: must be an int in [1, {MAX_NODES}]")
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise TypeError("threshold: expected int")
    if not 1 <= threshold <= nodes:
        raise ValueError("threshold: must be in [1, nodes]")


def _check_name(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: expected a non-empty string")
    return value


@dataclass(frozen=True)
class FeldmanCommitments:
    """C_0 … C_{k-1}: public, validated elements; C_0 is the client's public key Y."""

    elements: tuple[Element, ...]
    _cache: dict[int, Element] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.elements, tuple) or not self.elements:
            raise ValueError("elements: expected a non-empty tuple of Element")
        if len(self.elements) > MAX_NODES:
            raise ValueError(f"elements: at most {MAX_NODES} commitments")
        for e in self.elements:
            if not isinstance(e, Element):
                raise TypeError("elements: expected Element values")
            if e.is_identity:
                raise ValueError("elements: a commitment may not be the identity")

    @property
    def threshold(self) -> int:
        """k: how many shares rebuild x (the polynomial has degree k − 1)."""
        return len(self.elements)

    @property
    def public_key(self) -> Element:
        """Y = C_0 = x·B."""
        return self.elements[0]

    def verification_key(self, index: int) -> Element:
        """Y_i = Σ_j (i^j)·C_j = x_i·B, by Horner's rule (cached per index)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= MAX_NODES:
            raise ValueError(f"index: must be an int in [1, {MAX_NODES}]")
        cached = self._cache.get(index)
        if cached is None:
            acc = self.elements[-1]
            for c in reversed(self.elements[:-1]):
                acc = index * acc + c
            cached = self._cache[index] = acc
        return cached

    def to_bytes(self) -> bytes:
        """C_0 ‖ … ‖ C_{k-1}, 32 bytes each."""
        return b"".join(e.encoding for e in self.elements)

    @classmethod
    def from_bytes(cls, data: bytes) -> FeldmanCommitments:
        """Parse and validate every commitment (raises ``InvalidElement``)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("data: expected bytes")
        raw = bytes(data)
        if not raw or len(raw) % 32 or len(raw) // 32 > MAX_NODES:
            raise InvalidElement("commitments", f"expected 1..{MAX_NODES} × 32 bytes")
        return cls(
            tuple(
                decode_element(raw[i : i + 32], what=f"commitment {i // 32}")
                for i in range(0, len(raw), 32)
            )
        )

    def to_hex(self) -> list[str]:
        return [e.hex() for e in self.elements]


@dataclass(frozen=True)
class KeyShare:
    """Node ``index``'s share x_i = f(i) of an unwrap key (secret: kept out of repr)."""

    index: int
    value: int = field(repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int):
            raise TypeError("index: expected int")
        if not 1 <= self.index <= MAX_NODES:
            raise ValueError(f"index: must be in [1, {MAX_NODES}]")
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise TypeError("value: expected int")
        if not 0 < self.value < ORDER:
            raise ValueError("value: must be in [1, ℓ)")


@dataclass(frozen=True)
class Dealing:
    """What :func:`deal_unwrap_key` hands out: public commitments and one share per node."""

    commitments: FeldmanCommitments
    shares: tuple[KeyShare, ...] = field(repr=False)

    @property
    def public_key(self) -> Element:
        return self.commitments.public_key


def deal_unwrap_key(
    *, threshold: int, nodes: int, rng: RandomBytes, secret: int | None = None
) -> Dealing:
    """Deal a fresh (or the given) unwrap key x k-of-n with Feldman commitments.

    The secret is not returned: the caller forgets it by not having it. ``secret`` is for
    re-sharing a key the caller still holds (and for tests).
    """
    _check_params(threshold, nodes)
    if secret is not None and (
        isinstance(secret, bool) or not isinstance(secret, int) or not 0 < secret < ORDER
    ):
        raise ValueError("secret: must be an int in [1, ℓ)")
    while True:
        coeffs = [secret if secret is not None else random_scalar(rng)]
        coeffs += [random_scalar(rng) for _ in range(threshold - 1)]
        values = []
        for i in range(1, nodes + 1):
            acc = 0
            for a in reversed(coeffs):
                acc = (acc * i + a) % ORDER
            values.append(acc)
        if all(values):  # a zero share (probability ~n/ℓ) would commit to the identity
            break
    commitments = FeldmanCommitments(tuple(base_mul(a) for a in coeffs))
    shares = tuple(KeyShare(i, v) for i, v in enumerate(values, start=1))
    return Dealing(commitments, shares)


def verify_key_share(share: KeyShare, commitments: FeldmanCommitments) -> None:
    """Feldman's check x_i·B == Σ_j (i^j)·C_j; raises ``InvalidKeyShare`` naming the node."""
    if base_mul(share.value) != commitments.verification_key(share.index):
        raise InvalidKeyShare(share.index, "share does not match the Feldman commitments")


# -- sealing ----------------------------------------------------------------------------------


def _signing_message(body: bytes) -> bytes:
    return KEY_SHARE_TYPE.encode("ascii") + b"\x00" + body


def _identity_bytes(identity: nacl.signing.SigningKey) -> bytes:
    if not isinstance(identity, nacl.signing.SigningKey):
        raise TypeError("identity: expected nacl.signing.SigningKey")
    return bytes(identity.verify_key)


def seal_key_share(
    share: KeyShare,
    *,
    commitments: FeldmanCommitments,
    vault: str,
    owner: str,
    nodes: int,
    node_public_key: bytes,
    identity: nacl.signing.SigningKey,
) -> bytes:
    """Sign and seal share ``share.index`` to that node's X25519 public key."""
    _check_params(commitments.threshold, nodes)
    if share.index > nodes:
        raise ValueError("share: index is larger than nodes")
    if not isinstance(node_public_key, bytes) or len(node_public_key) != 32:
        raise ValueError("node_public_key: expected 32 bytes (X25519)")
    body = canonical_json(
        {
            "type": KEY_SHARE_TYPE,
            "vault": _check_name(vault, "vault"),
            "owner": _check_name(owner, "owner"),
            "node": share.index,
            "nodes": nodes,
            "threshold": commitments.threshold,
            "commitments": commitments.to_hex(),
            "share": scalar_to_bytes(share.value).hex(),
            "identity": _identity_bytes(identity).hex(),
        }
    )
    record = identity.sign(_signing_message(body)).signature + body
    box = nacl.public.SealedBox(nacl.public.PublicKey(node_public_key))
    sealed = box.encrypt(record)
    if not isinstance(sealed, bytes):  # pragma: no cover - PyNaCl contract
        raise TypeError("SealedBox returned a non-bytes value")
    return sealed


def seal_dealing(
    dealing: Dealing,
    *,
    vault: str,
    owner: str,
    node_public_keys: Mapping[int, bytes],
    identity: nacl.signing.SigningKey,
) -> dict[int, bytes]:
    """Seal every share of ``dealing``; ``node_public_keys`` maps node index → X25519 key."""
    nodes = len(dealing.shares)
    if set(node_public_keys) != set(range(1, nodes + 1)):
        raise ValueError(f"node_public_keys: expected exactly the node indices 1..{nodes}")
    return {
        s.index: seal_key_share(
            s,
            commitments=dealing.commitments,
            vault=vault,
            owner=owner,
            nodes=nodes,
            node_public_key=node_public_keys[s.index],
            identity=identity,
        )
        for s in dealing.shares
    }


@dataclass(frozen=True)
class NodeKeyShare:
    """A node's checked unwrap-key share, with everything needed to serve unwrap requests."""

    vault: str
    owner: str
    nodes: int
    share: KeyShare = field(repr=False)
    commitments: FeldmanCommitments
    identity_public_key: bytes
    verification_key: Element
    record: bytes = field(repr=False)

    @property
    def index(self) -> int:
        return self.share.index

    @property
    def threshold(self) -> int:
        return self.commitments.threshold

    @property
    def public_key(self) -> Element:
        """Y, which also names the key (the ``key`` of an unwrap request)."""
        return self.commitments.public_key

    def to_bytes(self) -> bytes:
        """The signed record (secret!): store it as the node stores its signing share."""
        return self.record

    @classmethod
    def from_bytes(cls, record: bytes, *, vault: str, owner: str, node_index: int) -> NodeKeyShare:
        """Parse and check a record for this node; raises ``InvalidKeyShare``."""
        return _check_record(record, vault=vault, owner=owner, node_index=node_index)


def open_key_share(
    sealed: bytes,
    *,
    node_private_key: nacl.public.PrivateKey,
    vault: str,
    owner: str,
    node_index: int,
) -> NodeKeyShare:
    """Node side: open a sealed share addressed to (vault, owner, node_index) and check it."""
    if not isinstance(node_private_key, nacl.public.PrivateKey):
        raise TypeError("node_private_key: expected nacl.public.PrivateKey")
    if not isinstance(sealed, bytes):
        raise TypeError("sealed: expected bytes")
    try:
        record = nacl.public.SealedBox(node_private_key).decrypt(sealed)
    except nacl.exceptions.CryptoError as exc:
        raise InvalidKeyShare(
            node_index, "sealed box does not open with this node's key (tampered or misaddressed)"
        ) from exc
    return _check_record(record, vault=vault, owner=owner, node_index=node_index)


def _field(body: Mapping[str, Any], name: str, kind: type, node: int) -> Any:
    value = body[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidKeyShare(node, f"field {name!r} has the wrong type")
    return value


def _unhex(value: str, size: int, what: str, node: int) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise InvalidKeyShare(node, f"{what} is not hex") from exc
    if len(raw) != size or raw.hex() != value:
        raise InvalidKeyShare(node, f"{what} must be {size} bytes in lowercase hex")
    return raw


def _check_record(record: bytes, *, vault: str, owner: str, node_index: int) -> NodeKeyShare:
    _check_name(vault, "vault")
    _check_name(owner, "owner")
    if isinstance(node_index, bool) or not isinstance(node_index, int):
        raise TypeError("node_index: expected int")
    if not isinstance(record, bytes):
        raise TypeError("record: expected bytes")
    if not _SIGNATURE_BYTES < len(record) <= _MAX_RECORD_BYTES:
        raise InvalidKeyShare(node_index, "record has an impossible length")
    signature, body_bytes = record[:_SIGNATURE_BYTES], record[_SIGNATURE_BYTES:]
    try:
        body = parse_canonical_json(body_bytes, max_bytes=_MAX_RECORD_BYTES)
    except EvaultError as exc:
        raise InvalidKeyShare(node_index, f"record body: {exc}") from exc
    if not isinstance(body, dict) or set(body) != _RECORD_KEYS:
        raise InvalidKeyShare(node_index, "record body does not have the v1 fields")
    if body["type"] != KEY_SHARE_TYPE:
        raise InvalidKeyShare(node_index, f"unknown record type {body['type']!r}")
    if _field(body, "vault", str, node_index) != vault:
        raise InvalidKeyShare(node_index, "share is for another vault")
    if _field(body, "owner", str, node_index) != owner:
        raise InvalidKeyShare(node_index, "share is for another owner")
    if _field(body, "node", int, node_index) != node_index:
        raise InvalidKeyShare(node_index, f"share is addressed to node {body['node']}")
    nodes = _field(body, "nodes", int, node_index)
    threshold = _field(body, "threshold", int, node_index)
    if not 1 <= threshold <= nodes <= MAX_NODES or node_index > nodes:
        raise InvalidKeyShare(node_index, "impossible threshold / node count")
    hex_list: Sequence[Any] = _field(body, "commitments", list, node_index)
    if len(hex_list) != threshold or not all(isinstance(h, str) for h in hex_list):
        raise InvalidKeyShare(node_index, f"expected {threshold} commitments")
    commitments = FeldmanCommitments(
        tuple(
            decode_element(_unhex(h, 32, f"commitment {j}", node_index), what=f"commitment {j}")
            for j, h in enumerate(hex_list)
        )
    )
    share_raw = _unhex(_field(body, "share", str, node_index), 32, "share", node_index)
    value = int.from_bytes(share_raw, "little")
    if not 0 < value < ORDER:
        raise InvalidKeyShare(node_index, "share is not a non-zero reduced scalar")
    share = KeyShare(node_index, value)
    verification_key = commitments.verification_key(node_index)
    if base_mul(value) != verification_key:
        raise InvalidKeyShare(node_index, "share does not match the Feldman commitments")
    identity = _unhex(_field(body, "identity", str, node_index), 32, "identity", node_index)
    try:
        nacl.signing.VerifyKey(identity).verify(_signing_message(body_bytes), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
        raise InvalidKeyShare(node_index, "record is not signed by the identity key in it") from exc
    return NodeKeyShare(
        vault=vault,
        owner=owner,
        nodes=nodes,
        share=share,
        commitments=commitments,
        identity_public_key=identity,
        verification_key=verification_key,
        record=record,
    )
