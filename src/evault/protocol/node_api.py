"""The internal gateway → node protocol, version 1: paths, headers, limits, messages.

The normative text is ``docs/spec/node-protocol.md``; this module holds the same constants and
the (de)serialisers for every message, with validation on receipt.  No I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Final

import nacl.exceptions
import nacl.signing

from evault.crypto.feldman import FeldmanCommitments, NodeKeyShare
from evault.crypto.group import Element
from evault.encoding import TAGS, canonical_json, parse_canonical_json, tagged_hash
from evault.errors import FormatError, InvalidElement, InvalidSignature, ProtocolError
from evault.protocol.statement import MAX_STATEMENT_BYTES, Statement

PROTOCOL_VERSION: Final = 1
PREFIX: Final = "/v1"

PATH_HEALTH: Final = "/v1/health"
PATH_OBJECTS: Final = "/v1/objects"
PATH_OBJECT: Final = "/v1/objects/{object_id}"
PATH_SLICE: Final = "/v1/objects/{object_id}/slice"
PATH_SHARE: Final = "/v1/objects/{object_id}/share"

HEADER_PROPOSAL: Final = "Evault-Proposal"
HEADER_SHA256: Final = "Evault-Sha256"
#: ``0``: store the document but leave the signature share out of the answer (the gateway asks
#: k nodes for shares and the others only if needed, ``GET .../share``); absent or ``1``: sign.
HEADER_SIGN: Final = "Evault-Sign"
HEADER_SLICE_INDEX: Final = "Evault-Slice-Index"
HEADER_LEAVES_BYTES: Final = "Evault-Leaves-Bytes"
HEADER_FV_HASH: Final = "Evault-Fv-Hash"
HEADER_SEGMENT_COUNT: Final = "Evault-Segment-Count"

MAX_PROPOSAL_BYTES: Final = 8 * 1024
MAX_JSON_BODY_BYTES: Final = 64 * 1024
DEFAULT_MAX_OBJECT_BYTES: Final = 64 * 1024**3
BODY_IDLE_TIMEOUT_S: Final = 60.0
CLOCK_SKEW_S: Final = 300
MAX_LIST_LIMIT: Final = 1000

GATEWAY_CERT_CN: Final = "evault-gateway"
OBJECT_ID_TAG: Final = "evault/object-id/v1"

#: (status, code) pairs of the spec's error table.
ERRORS: Final[dict[str, int]] = {
    "bad_request": 400,
    "unauthenticated": 401,
    "not_found": 404,
    "unknown_path": 404,
    "unwrap_refused": 403,
    "bad_proposal": 409,
    "exists": 409,
    "key_conflict": 409,
    "digest_mismatch": 409,
    "too_large": 413,
    "bad_range": 416,
    "bad_request_length": 422,
    "internal": 500,
    "insufficient_storage": 507,
}

_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")


def node_name(index: int) -> str:
    """The DNS name a node's certificate carries (``node-<i>``)."""
    if not isinstance(index, int) or index < 1:
        raise ValueError("index: must be an integer >= 1")
    return f"node-{index}"


def object_id(vault: str, owner: str, name: str, version: int) -> str:
    """Deterministic id of one document version on the nodes (see the spec's glossary)."""
    return tagged_hash(OBJECT_ID_TAG, canonical_json([vault, owner, name, version])).hex()


def is_object_id(text: str) -> bool:
    return isinstance(text, str) and bool(_HEX64.match(text))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, max_bytes: int) -> bytes:
    if len(text) > (max_bytes * 4) // 3 + 4:
        raise FormatError(f"header value over the limit of {max_bytes} bytes")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"not base64url: {exc}") from exc


def b64_encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64_decode(text: Any, *, what: str) -> bytes:
    if not isinstance(text, str):
        raise FormatError(f"{what}: expected a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{what}: not base64: {exc}") from exc


@dataclass(frozen=True)
class Proposal:
    """The statement fields a gateway proposes; the node adds size, sha256 and fv_hash."""

    vault: str
    owner: str
    name: str
    version: int
    n: int
    m: int
    codec: str
    segment_bytes: int
    fingerprint_scheme: str
    encrypted: bool
    deposited_at: str

    def object_id(self) -> str:
        return object_id(self.vault, self.owner, self.name, self.version)

    def to_header(self) -> str:
        return b64url_encode(canonical_json(self.__dict__))

    @classmethod
    def from_header(cls, value: str) -> Proposal:
        raw = b64url_decode(value, max_bytes=MAX_PROPOSAL_BYTES)
        obj = parse_canonical_json(raw, max_bytes=MAX_PROPOSAL_BYTES)
        if not isinstance(obj, dict) or set(obj) != set(cls.__dataclass_fields__):
            raise FormatError(
                "proposal must have exactly the fields "
                + ", ".join(sorted(cls.__dataclass_fields__))
            )
        proposal = cls(**obj)
        # Reuse the statement's field rules with placeholder digests, so both stay in step.
        proposal.complete(size=0, sha256="0" * 64, fv_hash="0" * 64)
        return proposal

    def complete(self, *, size: int, sha256: str, fv_hash: str) -> Statement:
        """The statement this proposal becomes once the node measured the document."""
        return Statement(size=size, sha256=sha256, fv_hash=fv_hash, **self.__dict__)


@dataclass(frozen=True)
class WireShare:
    """A threshold-RSA signature share as carried in JSON (integers as lowercase hex).

    A deposit answer carries the share's value alone (proofs on demand: the gateway asks
    ``GET /v1/objects/{id}/share`` for a share with its proof only when the optimistic
    combination fails); that endpoint's answer carries ``proof_c`` and ``proof_z`` too.
    """

    index: int
    value: int
    proof_c: int | None = None
    proof_z: int | None = None

    def __post_init__(self) -> None:
        if (self.proof_c is None) != (self.proof_z is None):
            raise ValueError("proof_c and proof_z: give both or neither")

    @property
    def proven(self) -> bool:
        return self.proof_c is not None

    def to_json_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"index": self.index, "value": format(self.value, "x")}
        if self.proof_c is not None and self.proof_z is not None:
            obj["proof_c"] = format(self.proof_c, "x")
            obj["proof_z"] = format(self.proof_z, "x")
        return obj

    @classmethod
    def from_json_obj(cls, obj: Any, *, max_hex_digits: int = 2048) -> WireShare:
        if not isinstance(obj, dict) or set(obj) not in (
            {"index", "value"},
            {"index", "value", "proof_c", "proof_z"},
        ):
            raise FormatError(
                "share must be an object with index and value, and optionally proof_c and proof_z"
            )
        index = obj["index"]
        if not isinstance(index, int) or isinstance(index, bool) or not 1 <= index <= 255:
            raise FormatError("share index must be an integer in 1..255")
        values: list[int | None] = []
        for key in ("value", "proof_c", "proof_z"):
            if key not in obj:
                values.append(None)
                continue
            text = obj[key]
            if not isinstance(text, str) or not 1 <= len(text) <= max_hex_digits:
                raise FormatError(f"share {key} must be a hex string")
            try:
                values.append(int(text, 16))
            except ValueError as exc:
                raise FormatError(f"share {key} is not hex") from exc
        value = values[0]
        if value is None:  # pragma: no cover - "value" is always among the keys
            raise FormatError("share value is missing")
        return cls(index, value, values[1], values[2])


@dataclass(frozen=True)
class ShareAnswer:
    """A node's answer to ``GET /v1/objects/{id}/share``: its share, with proof, of the
    object's stored statement."""

    node: int
    share: WireShare

    def to_json_obj(self) -> dict[str, Any]:
        return {"node": self.node, "share": self.share.to_json_obj()}

    @classmethod
    def from_json_obj(cls, obj: Any) -> ShareAnswer:
        if not isinstance(obj, dict) or set(obj) != {"node", "share"}:
            raise ProtocolError("share answer must be an object with node and share")
        node = obj["node"]
        if not isinstance(node, int) or isinstance(node, bool):
            raise ProtocolError("share answer: node must be an integer")
        try:
            share = WireShare.from_json_obj(obj["share"])
        except FormatError as exc:
            raise ProtocolError(f"malformed share answer: {exc}") from exc
        if not share.proven:
            raise ProtocolError("share answer: the share carries no proof")
        return cls(node=node, share=share)


def _hex_list(obj: Any, *, what: str, length: int | None = None) -> list[bytes]:
    if not isinstance(obj, list) or (length is not None and len(obj) != length):
        raise FormatError(f"{what}: expected a list of {length or 'some'} hex digests")
    out = []
    for item in obj:
        if not isinstance(item, str) or not _HEX64.match(item):
            raise FormatError(f"{what}: each entry must be 64 lowercase hex digits")
        out.append(bytes.fromhex(item))
    return out


@dataclass(frozen=True)
class DepositResult:
    """A node's answer to ``PUT /v1/objects/{id}``; ``share`` is None when the gateway asked
    the node not to sign (``Evault-Sign: 0``)."""

    node: int
    statement: bytes
    share: WireShare | None
    fv: tuple[bytes, ...]

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "statement": b64_encode(self.statement),
            "share": None if self.share is None else self.share.to_json_obj(),
            "fv": [root.hex() for root in self.fv],
        }

    @classmethod
    def from_json_obj(cls, obj: Any, *, n: int) -> DepositResult:
        if not isinstance(obj, dict):
            raise ProtocolError("deposit answer is not a JSON object")
        try:
            node = obj["node"]
            if not isinstance(node, int) or isinstance(node, bool):
                raise FormatError("node must be an integer")
            return cls(
                node=node,
                statement=b64_decode(obj["statement"], what="statement"),
                share=None if obj["share"] is None else WireShare.from_json_obj(obj["share"]),
                fv=tuple(_hex_list(obj["fv"], what="fv", length=n)),
            )
        except (KeyError, FormatError) as exc:
            raise ProtocolError(f"malformed deposit answer: {exc}") from exc


@dataclass(frozen=True)
class ObjectMeta:
    """A node's answer to ``GET /v1/objects/{id}``."""

    node: int
    statement: bytes
    fv: tuple[bytes, ...]
    slice_index: int
    slice_bytes: int
    segment_count: int

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "statement": b64_encode(self.statement),
            "fv": [root.hex() for root in self.fv],
            "slice_index": self.slice_index,
            "slice_bytes": self.slice_bytes,
            "segment_count": self.segment_count,
        }

    @classmethod
    def from_json_obj(cls, obj: Any) -> ObjectMeta:
        if not isinstance(obj, dict):
            raise ProtocolError("object metadata is not a JSON object")
        try:
            ints = {}
            for key in ("node", "slice_index", "slice_bytes", "segment_count"):
                value = obj[key]
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise FormatError(f"{key} must be a non-negative integer")
                ints[key] = value
            return cls(
                statement=b64_decode(obj["statement"], what="statement"),
                fv=tuple(_hex_list(obj["fv"], what="fv")),
                **ints,
            )
        except (KeyError, FormatError) as exc:
            raise ProtocolError(f"malformed object metadata: {exc}") from exc


def error_body(code: str, message: str) -> dict[str, Any]:
    if code not in ERRORS:
        raise ValueError(f"code: unknown error code {code!r}")
    return {"error": {"code": code, "message": message}}


# --- confidentiality: unwrap keys and partial unwraps (issue 6; DESIGN §7; spec section
# "Unwrap keys and partial unwraps") ------------------------------------------------------------

PATH_UNWRAP_KEYS: Final = "/v1/unwrap-keys/{owner_id}"
PATH_UNWRAP: Final = "/v1/unwrap"
OWNER_ID_TAG: Final = TAGS["owner-id"]
KEY_CERTIFICATE_TYPE: Final = TAGS["key-certificate"]
#: Unwrap keys one owner may register at one node (each `evault keys init` adds one).
MAX_UNWRAP_KEYS_PER_OWNER: Final = 32
#: A sealed share is a signed record of at most 32 KiB plus the sealed box's 48 bytes.
MAX_SEALED_SHARE_BYTES: Final = 32 * 1024 + 48
MAX_KEY_CERTIFICATE_BYTES: Final = 32 * 1024
#: An unwrap request is ``signature (64) ‖ body`` with the body at most 4 KiB.
MAX_UNWRAP_REQUEST_BYTES: Final = 64 + 4096
#: Freshness window a node applies to signed unwrap requests (and keeps request ids for).
UNWRAP_MAX_AGE_S: Final = 300
UNWRAP_MAX_SKEW_S: Final = 60

_SIGNATURE_BYTES: Final = 64
_CERT_KEYS: Final = frozenset(
    {"type", "vault", "owner", "nodes", "threshold", "commitments", "identity", "issued_at"}
)
_LOWER_HEX = re.compile(r"\A[0-9a-f]*\Z")


def owner_id(vault: str, owner: str) -> str:
    """Path name of an owner's unwrap keys: hex tagged hash of ``[vault, owner]``."""
    if not isinstance(vault, str) or not vault or not isinstance(owner, str) or not owner:
        raise ValueError("vault, owner: expected non-empty strings")
    return tagged_hash(OWNER_ID_TAG, canonical_json([vault, owner])).hex()


def _cert_message(body: bytes) -> bytes:
    return KEY_CERTIFICATE_TYPE.encode("ascii") + b"\x00" + body


@dataclass(frozen=True)
class KeyCertificate:
    """The public half of a dealt unwrap key, signed by the owner's identity key.

    Byte layout: ``signature (64) ‖ body``, body = canonical JSON of ``{"type":
    "evault/unwrap-key-certificate/v1", "vault", "owner", "nodes": n, "threshold": k,
    "commitments": [hex C_0, …, hex C_{k-1}], "identity": hex Ed25519 public key,
    "issued_at": unix seconds}``, signature = Ed25519 over ``type ‖ 0x00 ‖ body``.

    Nodes store it next to the sealed share it describes and hand it out; a client that
    lost its local copy gets it back through the (untrusted) gateway and trusts it only
    after checking the signature against the identity key it derives itself.
    """

    vault: str
    owner: str
    nodes: int
    threshold: int
    commitments: FeldmanCommitments
    identity: bytes
    issued_at: int
    signature: bytes

    @property
    def key_id(self) -> Element:
        """Y = C_0, the public unwrap key (and the name of the key in unwrap requests)."""
        return self.commitments.public_key

    def body(self) -> bytes:
        return canonical_json(
            {
                "type": KEY_CERTIFICATE_TYPE,
                "vault": self.vault,
                "owner": self.owner,
                "nodes": self.nodes,
                "threshold": self.threshold,
                "commitments": self.commitments.to_hex(),
                "identity": self.identity.hex(),
                "issued_at": self.issued_at,
            }
        )

    def to_bytes(self) -> bytes:
        return self.signature + self.body()

    @classmethod
    def sign(
        cls,
        *,
        vault: str,
        owner: str,
        nodes: int,
        commitments: FeldmanCommitments,
        issued_at: int,
        identity: nacl.signing.SigningKey,
    ) -> KeyCertificate:
        if not isinstance(identity, nacl.signing.SigningKey):
            raise TypeError("identity: expected nacl.signing.SigningKey")
        unsigned = cls(
            vault,
            owner,
            nodes,
            commitments.threshold,
            commitments,
            bytes(identity.verify_key),
            issued_at,
            bytes(_SIGNATURE_BYTES),
        )
        unsigned._check()
        signature = identity.sign(_cert_message(unsigned.body())).signature
        return cls(
            vault,
            owner,
            nodes,
            commitments.threshold,
            commitments,
            unsigned.identity,
            issued_at,
            bytes(signature),
        )

    def _check(self) -> None:
        if not isinstance(self.vault, str) or not self.vault:
            raise FormatError("key certificate: vault must be a non-empty string")
        if not isinstance(self.owner, str) or not self.owner:
            raise FormatError("key certificate: owner must be a non-empty string")
        if not 1 <= self.threshold <= self.nodes <= 255:
            raise FormatError("key certificate: impossible threshold / node count")
        if self.commitments.threshold != self.threshold:
            raise FormatError("key certificate: expected one commitment per threshold unit")
        if len(self.identity) != 32 or len(self.signature) != _SIGNATURE_BYTES:
            raise FormatError("key certificate: identity and signature have the wrong sizes")
        if self.issued_at < 0:
            raise FormatError("key certificate: issued_at must be >= 0")

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyCertificate:
        """Parse and validate the fields (every commitment a valid element); the signature
        is *not* checked here: call :meth:`verify`."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("data: expected bytes")
        raw = bytes(data)
        if not _SIGNATURE_BYTES < len(raw) <= MAX_KEY_CERTIFICATE_BYTES:
            raise FormatError("key certificate: impossible length")
        signature, body_bytes = raw[:_SIGNATURE_BYTES], raw[_SIGNATURE_BYTES:]
        body = parse_canonical_json(body_bytes, max_bytes=MAX_KEY_CERTIFICATE_BYTES)
        if not isinstance(body, dict) or set(body) != _CERT_KEYS:
            raise FormatError("key certificate: the body does not have the v1 fields")
        if body["type"] != KEY_CERTIFICATE_TYPE:
            raise FormatError(f"key certificate: unknown type {body['type']!r}")
        for name in ("nodes", "threshold", "issued_at"):
            if isinstance(body[name], bool) or not isinstance(body[name], int):
                raise FormatError(f"key certificate: {name} must be an integer")
        hex_list = body["commitments"]
        if not isinstance(hex_list, list) or not all(
            isinstance(h, str) and len(h) == 64 and _LOWER_HEX.match(h) for h in hex_list
        ):
            raise FormatError("key certificate: commitments must be 64-digit lowercase hex")
        identity = body["identity"]
        if not isinstance(identity, str) or len(identity) != 64 or not _LOWER_HEX.match(identity):
            raise FormatError("key certificate: identity must be 64-digit lowercase hex")
        try:
            commitments = FeldmanCommitments.from_bytes(
                b"".join(bytes.fromhex(h) for h in hex_list)
            )
        except InvalidElement as exc:
            raise FormatError(f"key certificate: {exc}") from exc
        cert = cls(
            body["vault"],
            body["owner"],
            body["nodes"],
            body["threshold"],
            commitments,
            bytes.fromhex(identity),
            body["issued_at"],
            signature,
        )
        cert._check()
        if cert.body() != body_bytes:  # pragma: no cover - parse_canonical_json guarantees it
            raise FormatError("key certificate: body is not canonical")
        return cert

    def verify(self, identity_public_key: bytes | None = None) -> None:
        """Check the signature (against ``identity_public_key`` if given, else against the
        key the certificate names); raises ``InvalidSignature``."""
        key = self.identity if identity_public_key is None else identity_public_key
        if key != self.identity:
            raise InvalidSignature(
                "the unwrap-key certificate names another identity key than the expected one"
            )
        try:
            nacl.signing.VerifyKey(key).verify(_cert_message(self.body()), self.signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
            raise InvalidSignature(
                "the unwrap-key certificate is not signed by the identity key it names"
            ) from exc

    def check_describes(self, share: NodeKeyShare) -> None:
        """Raise ``FormatError`` unless this certificate is about exactly ``share``'s key."""
        if (
            self.vault != share.vault
            or self.owner != share.owner
            or self.nodes != share.nodes
            or self.commitments != share.commitments
            or self.identity != share.identity_public_key
        ):
            raise FormatError("the key certificate does not describe the sealed share")


def _json_dict(obj: Any, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or set(obj) != keys:
        raise FormatError(f"{what} must be an object with exactly {', '.join(sorted(keys))}")
    return obj


def _b64_limited(text: Any, *, what: str, max_bytes: int) -> bytes:
    if isinstance(text, str) and len(text) > (max_bytes * 4) // 3 + 4:
        raise FormatError(f"{what}: over the limit of {max_bytes} bytes")
    raw = b64_decode(text, what=what)
    if len(raw) > max_bytes:
        raise FormatError(f"{what}: over the limit of {max_bytes} bytes")
    return raw


@dataclass(frozen=True)
class KeyDeposit:
    """Body of ``PUT /v1/unwrap-keys/{owner_id}``: one node's sealed share and the
    certificate of the key."""

    owner: str
    sealed: bytes
    certificate: bytes

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "sealed": b64_encode(self.sealed),
            "certificate": b64_encode(self.certificate),
        }

    @classmethod
    def from_json_obj(cls, obj: Any) -> KeyDeposit:
        body = _json_dict(obj, {"owner", "sealed", "certificate"}, "key deposit")
        owner = body["owner"]
        if not isinstance(owner, str) or not owner:
            raise FormatError("key deposit: owner must be a non-empty string")
        return cls(
            owner,
            _b64_limited(body["sealed"], what="sealed", max_bytes=MAX_SEALED_SHARE_BYTES),
            _b64_limited(
                body["certificate"], what="certificate", max_bytes=MAX_KEY_CERTIFICATE_BYTES
            ),
        )


@dataclass(frozen=True)
class KeyDepositResult:
    """A node's answer to a key deposit: the key id it stored, and whether it was new."""

    node: int
    key: str
    created: bool

    def to_json_obj(self) -> dict[str, Any]:
        return {"node": self.node, "key": self.key, "created": self.created}

    @classmethod
    def from_json_obj(cls, obj: Any) -> KeyDepositResult:
        try:
            body = _json_dict(obj, {"node", "key", "created"}, "key deposit answer")
            node, key, created = body["node"], body["key"], body["created"]
            if isinstance(node, bool) or not isinstance(node, int):
                raise FormatError("node must be an integer")
            if not isinstance(key, str) or not _HEX64.match(key):
                raise FormatError("key must be 64 lowercase hex digits")
            if not isinstance(created, bool):
                raise FormatError("created must be a boolean")
        except FormatError as exc:
            raise ProtocolError(f"malformed key deposit answer: {exc}") from exc
        return cls(node, key, created)


@dataclass(frozen=True)
class KeyListing:
    """A node's answer to ``GET /v1/unwrap-keys/{owner_id}``: the certificates it holds,
    oldest first (public data)."""

    node: int
    certificates: tuple[bytes, ...]

    def to_json_obj(self) -> dict[str, Any]:
        return {"node": self.node, "certificates": [b64_encode(c) for c in self.certificates]}

    @classmethod
    def from_json_obj(cls, obj: Any) -> KeyListing:
        try:
            body = _json_dict(obj, {"node", "certificates"}, "key listing")
            node, certs = body["node"], body["certificates"]
            if isinstance(node, bool) or not isinstance(node, int):
                raise FormatError("node must be an integer")
            if not isinstance(certs, list) or len(certs) > MAX_UNWRAP_KEYS_PER_OWNER:
                raise FormatError(
                    f"certificates must be a list of at most {MAX_UNWRAP_KEYS_PER_OWNER}"
                )
            decoded = tuple(
                _b64_limited(c, what="certificate", max_bytes=MAX_KEY_CERTIFICATE_BYTES)
                for c in certs
            )
        except FormatError as exc:
            raise ProtocolError(f"malformed key listing: {exc}") from exc
        return cls(node, decoded)


@dataclass(frozen=True)
class ObjectListing:
    """A node's answer to ``GET /v1/objects?after=&limit=``: the objects it holds after
    ``after``, by object id, each with the statement it stored, and where the next page
    starts (None after the last)."""

    objects: tuple[tuple[str, bytes], ...]
    next_after: str | None

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "objects": [
                {"object_id": oid, "statement": b64_encode(st)} for oid, st in self.objects
            ],
            "next": self.next_after,
        }

    @classmethod
    def from_json_obj(cls, obj: Any, *, after: str | None, limit: int) -> ObjectListing:
        """Parse an answer to a request for at most ``limit`` objects after ``after``: ids
        in increasing order past ``after``, and a ``next`` past them, so paging always ends."""
        try:
            body = _json_dict(obj, {"objects", "next"}, "object listing")
            items, next_after = body["objects"], body["next"]
            if not isinstance(items, list) or len(items) > limit:
                raise FormatError(f"objects must be a list of at most {limit}")
            objects = []
            last = after
            for item in items:
                entry = _json_dict(item, {"object_id", "statement"}, "listed object")
                oid = entry["object_id"]
                if not is_object_id(oid):
                    raise FormatError("object_id must be 64 lowercase hex digits")
                if last is not None and oid <= last:
                    raise FormatError("object ids must increase past the page's start")
                statement = _b64_limited(
                    entry["statement"], what="statement", max_bytes=MAX_STATEMENT_BYTES
                )
                objects.append((oid, statement))
                last = oid
            if next_after is not None and (
                not is_object_id(next_after) or (last is not None and next_after < last)
            ):
                raise FormatError("next must be null or an object id past the page's last")
            if next_after is not None and not objects:
                raise FormatError("an empty page must be the last (next null)")
        except FormatError as exc:
            raise ProtocolError(f"malformed object listing: {exc}") from exc
        return cls(tuple(objects), next_after)


@dataclass(frozen=True)
class UnwrapCall:
    """Body of ``POST /v1/unwrap``: the client's signed unwrap request, relayed unchanged."""

    request: bytes

    def to_json_obj(self) -> dict[str, Any]:
        return {"request": b64_encode(self.request)}

    @classmethod
    def from_json_obj(cls, obj: Any) -> UnwrapCall:
        body = _json_dict(obj, {"request"}, "unwrap call")
        return cls(
            _b64_limited(body["request"], what="request", max_bytes=MAX_UNWRAP_REQUEST_BYTES)
        )


@dataclass(frozen=True)
class UnwrapAnswer:
    """A node's answer to ``POST /v1/unwrap``: its partial unwrap with proof (99 bytes)."""

    node: int
    partial: bytes

    def to_json_obj(self) -> dict[str, Any]:
        return {"node": self.node, "partial": b64_encode(self.partial)}

    @classmethod
    def from_json_obj(cls, obj: Any) -> UnwrapAnswer:
        try:
            body = _json_dict(obj, {"node", "partial"}, "unwrap answer")
            node = body["node"]
            if isinstance(node, bool) or not isinstance(node, int):
                raise FormatError("node must be an integer")
            partial = _b64_limited(body["partial"], what="partial", max_bytes=1024)
        except FormatError as exc:
            raise ProtocolError(f"malformed unwrap answer: {exc}") from exc
        return cls(node, partial)
