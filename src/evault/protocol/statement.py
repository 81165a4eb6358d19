"""The receipt statement: exactly what a receipt's threshold signature vouches for.

Byte layout
-----------
The statement is a JSON object encoded in RFC 8785 canonical form (``evault.encoding``), so
every party rebuilds the same bytes from the same facts.  The signed bytes ARE the canonical
JSON; there is no envelope.  Fields (all required, no others allowed)::

    type                "evault.receipt-statement"
    v                   1                       format version of this statement
    vault               str  32 lowercase hex   the vault id (16 random bytes at `evault init`)
    owner               str                     the depositing user's id
    name                str                     document name (validated by the catalog rules)
    version             int  >= 1               version number of the document
    size                int  >= 0               document length in bytes
    sha256              str  64 lowercase hex   SHA-256 of the document bytes (as `sha256sum`)
    fv_hash             str  64 lowercase hex   tagged hash of the fingerprint vector (§3)
    fingerprint_scheme  str                     e.g. "sha256-merkle/v1"
    n                   int                     slices written (storage nodes)
    m                   int                     slices needed to rebuild
    codec               str                     codec id, e.g. "rs-isal-cauchy/v1"
    segment_bytes       int                     segment size used to cut the document
    encrypted           bool                    the document is a client-side ciphertext
    deposited_at        str  RFC 3339 UTC       "YYYY-MM-DDTHH:MM:SSZ", proposed by the gateway

A node signs a statement only after it rebuilt ``size``, ``sha256`` and ``fv_hash`` itself from
the bytes it received and stored (DESIGN §4–§5), and checked the proposed fields
(``vault``, ``n``, ``m``, ``codec``, ``segment_bytes`` against its configuration, and
``deposited_at`` against its clock within a skew).

Version history
---------------
v1 (2026-11): first version.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final

from evault.encoding import canonical_json, parse_canonical_json
from evault.errors import FormatError

STATEMENT_TYPE: Final = "evault.receipt-statement"
STATEMENT_VERSION: Final = 1
MAX_STATEMENT_BYTES: Final = 8 * 1024
MAX_NAME_CHARS: Final = 1024
MAX_OWNER_CHARS: Final = 64

_HEX32 = re.compile(r"\A[0-9a-f]{32}\Z")
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
_TIME = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z")
_ID = re.compile(r"\A[!-~]{1,64}\Z")  # printable ASCII without space, for codec / scheme ids

_FIELDS: Final = (
    "type",
    "v",
    "vault",
    "owner",
    "name",
    "version",
    "size",
    "sha256",
    "fv_hash",
    "fingerprint_scheme",
    "n",
    "m",
    "codec",
    "segment_bytes",
    "encrypted",
    "deposited_at",
)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with whole seconds, the only time form a statement carries."""
    if moment.tzinfo is None:
        raise ValueError("moment: must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    if not isinstance(text, str) or not _TIME.match(text):
        raise FormatError(f"deposited_at {text!r} is not of the form YYYY-MM-DDTHH:MM:SSZ")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise FormatError(f"deposited_at {text!r} is not a valid time: {exc}") from exc


@dataclass(frozen=True)
class Statement:
    """A receipt statement (v1).  Build with keyword arguments, then ``to_bytes()``."""

    vault: str
    owner: str
    name: str
    version: int
    size: int
    sha256: str
    fv_hash: str
    fingerprint_scheme: str
    n: int
    m: int
    codec: str
    segment_bytes: int
    encrypted: bool
    deposited_at: str

    def __post_init__(self) -> None:
        problems = _check_fields(asdict(self))
        if problems:
            raise FormatError("invalid receipt statement: " + "; ".join(problems))

    def to_json_obj(self) -> dict[str, Any]:
        obj = asdict(self)
        obj["type"] = STATEMENT_TYPE
        obj["v"] = STATEMENT_VERSION
        return obj

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json_obj())

    @classmethod
    def from_bytes(cls, data: bytes) -> Statement:
        """Parse and validate signed statement bytes; raise ``FormatError`` on any deviation."""
        obj = parse_canonical_json(data, max_bytes=MAX_STATEMENT_BYTES)
        return cls.from_json_obj(obj)

    @classmethod
    def from_json_obj(cls, obj: Any) -> Statement:
        if not isinstance(obj, dict):
            raise FormatError("receipt statement must be a JSON object")
        if obj.get("type") != STATEMENT_TYPE:
            raise FormatError(f"not a receipt statement (type {obj.get('type')!r})")
        if obj.get("v") != STATEMENT_VERSION:
            raise FormatError(f"unsupported receipt statement version {obj.get('v')!r}")
        missing = [f for f in _FIELDS if f not in obj]
        extra = sorted(set(obj) - set(_FIELDS))
        if missing or extra:
            raise FormatError(
                f"receipt statement fields wrong: missing {missing}, unexpected {extra}"
            )
        fields = {k: v for k, v in obj.items() if k not in ("type", "v")}
        return cls(**fields)

    @property
    def deposited_at_datetime(self) -> datetime:
        return parse_time(self.deposited_at)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fields(f: dict[str, Any]) -> list[str]:
    """Every problem with the field values (empty list when valid)."""
    p: list[str] = []
    if not isinstance(f["vault"], str) or not _HEX32.match(f["vault"]):
        p.append("vault must be 32 lowercase hex digits")
    if not isinstance(f["owner"], str) or not 1 <= len(f["owner"]) <= MAX_OWNER_CHARS:
        p.append(f"owner must be a string of 1..{MAX_OWNER_CHARS} characters")
    if not isinstance(f["name"], str) or not 1 <= len(f["name"]) <= MAX_NAME_CHARS:
        p.append(f"name must be a string of 1..{MAX_NAME_CHARS} characters")
    for key in ("sha256", "fv_hash"):
        if not isinstance(f[key], str) or not _HEX64.match(f[key]):
            p.append(f"{key} must be 64 lowercase hex digits")
    for key in ("fingerprint_scheme", "codec"):
        if not isinstance(f[key], str) or not _ID.match(f[key]):
            p.append(f"{key} must be a printable identifier of 1..64 characters")
    if not _is_int(f["version"]) or f["version"] < 1:
        p.append("version must be an integer >= 1")
    if not _is_int(f["size"]) or not 0 <= f["size"] < 2**53:
        p.append("size must be an integer in [0, 2^53)")
    if not _is_int(f["n"]) or not _is_int(f["m"]) or not 1 <= f["m"] <= f["n"] <= 255:
        p.append("n and m must be integers with 1 <= m <= n <= 255")
    if not _is_int(f["segment_bytes"]) or not 1 <= f["segment_bytes"] <= 2**30:
        p.append("segment_bytes must be an integer in [1, 2^30]")
    if not isinstance(f["encrypted"], bool):
        p.append("encrypted must be a boolean")
    try:
        parse_time(f["deposited_at"])
    except FormatError as exc:
        p.append(str(exc))
    return p
