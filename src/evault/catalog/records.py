"""Values the catalog hands out: frozen snapshots of rows, detached from the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

VersionState = Literal["pending", "stored", "failed", "deleted"]
TokenKind = Literal["api", "session"]


@dataclass(frozen=True)
class UserRecord:
    """A registered user, without the password hash (which never leaves the catalog)."""

    user_id: str
    name: str
    contact: str
    created_at: datetime
    identity_public_key: bytes | None = None


@dataclass(frozen=True)
class ReceiptRecord:
    """A version's receipt as the catalog records it (``Catalog.complete_deposit`` and
    ``restore_version``): the exact signed ``statement`` and its ``signature``, the facts
    repeated from the statement so that queries need not parse it, and the key wrap of an
    encrypted version (not in the statement).  The catalog checks every field when it writes
    one."""

    size: int
    sha256: bytes
    fv_hash: bytes
    codec_id: str
    m: int
    n: int
    segment_bytes: int
    statement: bytes
    signature: bytes
    deposited_at: datetime
    encrypted: bool = False
    key_wrap: bytes | None = None


@dataclass(frozen=True, kw_only=True)
class VersionRecord(ReceiptRecord):
    """One stored (or deleted) version of a document: its receipt (the fields of
    :class:`ReceiptRecord`), whose version it is, and its state.

    ``statement`` is the exact byte string the threshold signature ``signature`` covers;
    the other receipt fields repeat facts from it so that queries need not parse it.
    ``deposited_at`` is the time in the statement; ``completed_at`` is when the catalog
    recorded the receipt.  Built by keyword only.
    """

    owner: str
    name: str
    version: int
    state: VersionState
    completed_at: datetime
    deleted_at: datetime | None = None


@dataclass(frozen=True)
class PendingVersion:
    """A deposit that started and has not finished: candidates for clean-up after a crash."""

    owner: str
    name: str
    version: int
    began_at: datetime


@dataclass(frozen=True)
class RestoreResult:
    """What ``Catalog.restore_version`` did: put the version back (False: the catalog already
    had it), and created its owner's account, locked."""

    restored: bool
    account_created: bool


@dataclass(frozen=True)
class TokenLookup:
    """A live token's owner; ``stale``: its last use was recorded too long ago (refresh it)."""

    user_id: str
    stale: bool


@dataclass(frozen=True)
class DocumentSummary:
    """A document as a listing shows it: its latest stored version and how many are stored."""

    name: str
    latest_version: int
    size: int
    sha256: bytes
    deposited_at: datetime
    version_count: int


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit log.  ``details`` is the JSON object stored with it."""

    audit_id: int
    at: datetime
    user_id: str | None
    action: str
    name: str | None
    version: int | None
    outcome: str
    details: dict[str, Any] = field(default_factory=dict, hash=False)
