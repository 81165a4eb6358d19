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

from evault.encoding import canonical_json, parse_canonical_json, tagged_hash
from evault.errors import FormatError, ProtocolError
from evault.protocol.statement import Statement

PROTOCOL_VERSION: Final = 1
PREFIX: Final = "/v1"

PATH_HEALTH: Final = "/v1/health"
PATH_OBJECTS: Final = "/v1/objects"
PATH_OBJECT: Final = "/v1/objects/{object_id}"
PATH_SLICE: Final = "/v1/objects/{object_id}/slice"

HEADER_PROPOSAL: Final = "Evault-Proposal"
HEADER_SHA256: Final = "Evault-Sha256"
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
    "bad_proposal": 409,
    "exists": 409,
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
    """A threshold-RSA signature share as carried in JSON (integers as lowercase hex)."""

    index: int
    value: int
    proof_c: int
    proof_z: int

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "value": format(self.value, "x"),
            "proof_c": format(self.proof_c, "x"),
            "proof_z": format(self.proof_z, "x"),
        }

    @classmethod
    def from_json_obj(cls, obj: Any, *, max_hex_digits: int = 2048) -> WireShare:
        if not isinstance(obj, dict) or set(obj) != {"index", "value", "proof_c", "proof_z"}:
            raise FormatError("share must be an object with index, value, proof_c, proof_z")
        index = obj["index"]
        if not isinstance(index, int) or isinstance(index, bool) or not 1 <= index <= 255:
            raise FormatError("share index must be an integer in 1..255")
        values = []
        for key in ("value", "proof_c", "proof_z"):
            text = obj[key]
            if not isinstance(text, str) or not 1 <= len(text) <= max_hex_digits:
                raise FormatError(f"share {key} must be a hex string")
            try:
                values.append(int(text, 16))
            except ValueError as exc:
                raise FormatError(f"share {key} is not hex") from exc
        return cls(index, values[0], values[1], values[2])


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
    """A node's answer to ``PUT /v1/objects/{id}``."""

    node: int
    statement: bytes
    share: WireShare
    fv: tuple[bytes, ...]

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "statement": b64_encode(self.statement),
            "share": self.share.to_json_obj(),
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
                share=WireShare.from_json_obj(obj["share"]),
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
