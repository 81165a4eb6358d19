"""The gateway's catalog: users, tokens, documents, versions and the audit log.

One :class:`Catalog` per gateway process holds one SQLAlchemy engine and its pool of open
connections (the paper's gateway opened a DB connection per request and measured that as its
bottleneck, §3).  The API is synchronous and thread-safe: every method borrows a pooled
connection for one short transaction and gives it back; slow work (Argon2) runs before or
after, never while a connection is held.

Deposit life cycle (DESIGN §5: a half-stored document is never listed as stored)::

    begin_deposit ──> pending ──complete_deposit──> stored ──mark_deleted──> deleted
                         │
                         └──fail_deposit (error, or clean-up after a crash)──> failed

Only ``stored`` versions are visible to owners (get, list).  A version number is allocated
at ``begin_deposit`` under a row lock on the document and is never reused, whatever becomes of
that version.  Every state change writes its audit row in the same transaction.

Time comes from the injectable ``clock`` (timezone-aware); randomness (token values) from
:mod:`secrets`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, TypeVar, cast

import sqlalchemy as sa
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from evault.catalog import migrate as _migrate
from evault.catalog.engine import (
    DEFAULT_BUSY_TIMEOUT_MS,
    DEFAULT_POOL_TIMEOUT_S,
    SQLITE_BEGIN_OPTION,
    create_catalog_engine,
)
from evault.catalog.fastread import PreparedRead, SqlitePointReads
from evault.catalog.names import (
    MAX_CONTACT_CHARS,
    MAX_PROFILE_NAME_CHARS,
    canonical_user_id,
    validate_document_name,
    validate_profile_text,
)
from evault.catalog.records import (
    AuditRecord,
    DocumentSummary,
    PendingVersion,
    ReceiptRecord,
    RestoreResult,
    TokenKind,
    TokenLookup,
    UserRecord,
    VersionRecord,
    VersionState,
)
from evault.catalog.schema import TOKEN_KINDS, audit_log, documents, tokens, users, versions
from evault.encoding import canonical_json
from evault.errors import (
    AuthFailed,
    BadName,
    BadPassword,
    CatalogError,
    NotFound,
    UserExists,
    WrongState,
)

T = TypeVar("T")

MIN_PASSWORD_CHARS: Final = 8  # NIST SP 800-63B §5.1.1.2
MAX_PASSWORD_CHARS: Final = 1024
MAX_TOKEN_CHARS: Final = 256
MAX_TOKEN_TTL_S: Final = 10 * 366 * 24 * 3600
#: ``last_used_at`` is refreshed at most this often, so that resolving a token stays a read.
TOKEN_LAST_USED_GRANULARITY: Final = timedelta(seconds=60)
MAX_STATEMENT_BYTES: Final = 64 * 1024
MAX_SIGNATURE_BYTES: Final = 4096
MAX_KEY_WRAP_BYTES: Final = 64 * 1024
MAX_FAILURE_REASON_CHARS: Final = 2000
MAX_AUDIT_DETAILS_BYTES: Final = 64 * 1024
MAX_AUDIT_LIMIT: Final = 10_000
AUDIT_OUTCOMES: Final = ("ok", "denied", "failed")
TOKEN_AUTH_MESSAGE: Final = "token is invalid, expired or revoked"
#: The password hash of a *locked* account (one restored from the nodes): no Argon2 PHC string
#: starts with "!", so it never verifies; ``set_password`` unlocks the account.
LOCKED_PREFIX: Final = "!"
LOCKED_PASSWORD_HASH: Final = "!locked: restored from the nodes; evault admin set-password"
RESTORED_ACCOUNT_NAME: Final = "restored account"

_ACTION = re.compile(r"[a-z][a-z0-9_.]{0,63}")
_CODEC_ID = re.compile(r"[!-~]{1,64}")  # printable ASCII without space, as in statements


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Catalog:
    """The catalog database of one gateway process.  See the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 8,
        clock: Callable[[], datetime] | None = None,
        password_hasher: PasswordHasher | None = None,
        schema: str | None = None,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        pool_timeout_s: float = DEFAULT_POOL_TIMEOUT_S,
    ) -> None:
        """Open (lazily: nothing connects until the first call) the catalog at ``url``.

        ``url``: a file path (SQLite) or a SQLAlchemy URL (``sqlite:///...``,
        ``postgresql+psycopg://...``).  ``pool_size``: open connections kept for the process;
        0 means a new connection per call (only for measurements).  ``password_hasher``:
        Argon2id parameters (default: argon2-cffi's RFC 9106 low-memory profile; tests pass
        cheaper ones).  ``schema``: PostgreSQL schema to live in (created by ``migrate``).
        """
        if clock is not None and not callable(clock):
            raise TypeError("clock: expected a callable returning a datetime")
        if password_hasher is not None and not isinstance(password_hasher, PasswordHasher):
            raise TypeError("password_hasher: expected an argon2.PasswordHasher")
        self._engine = create_catalog_engine(
            url,
            pool_size=pool_size,
            schema=schema,
            busy_timeout_ms=busy_timeout_ms,
            pool_timeout_s=pool_timeout_s,
        )
        self._schema = schema
        self._clock = clock if clock is not None else _utc_now
        self._hasher = password_hasher if password_hasher is not None else PasswordHasher()
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()
        dialect = self._engine.dialect
        insert_module: Any = sqlite if dialect.name == "sqlite" else postgresql
        self._insert: Callable[[sa.Table], Any] = insert_module.insert
        # The point reads of every request skip SQLAlchemy's machinery on SQLite (always a
        # file: see create_catalog_engine), see evault.catalog.fastread; PostgreSQL reads go
        # through the engine.
        self._fast: SqlitePointReads | None = None
        if dialect.name == "sqlite":
            self._fast = SqlitePointReads(str(self._engine.url.database), busy_timeout_ms)
            self._fast_reads = {
                key: PreparedRead(statement, dialect)
                for key, statement in (
                    ("token", _TOKEN_LOOKUP),
                    ("latest", _LATEST_VERSION["stored"]),
                    ("one", _ONE_VERSION["stored"]),
                )
            }

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return str(self._engine.dialect.name)

    @property
    def point_reads_inline(self) -> bool:
        """True if :meth:`get_version` and :meth:`lookup_token` may run on an event loop: on
        SQLite they are local reads of ~0.1 ms that never wait for a writer (WAL, and
        :mod:`evault.catalog.fastread`), cheaper than a hand-off to a thread; a networked
        database's reads belong in threads."""
        return self._fast is not None

    @property
    def engine(self) -> sa.Engine:
        """The pooled engine (for operations tooling and tests; not for queries of your own)."""
        return self._engine

    def migrate(self) -> str:
        """Bring the schema to the newest revision (idempotent); return that revision."""
        try:
            _migrate.upgrade(self._engine, schema=self._schema)
        except SQLAlchemyError as exc:
            raise self._database_error(exc) from exc
        except (CommandError, RevisionError) as exc:
            # Alembic's way of saying "the database is at a revision I do not know".
            raise CatalogError(
                f"cannot migrate the catalog: {exc} (was it created by a newer evault?)",
                known=sorted(_migrate.known_revisions()),
            ) from exc
        return _migrate.head_revision()

    def schema_revision(self) -> str | None:
        """The revision the database is at (None if it was never migrated)."""
        return self._run(_migrate.current_revision, write=False)

    def close(self) -> None:
        """Close every pooled connection.  The catalog must not be used afterwards."""
        if self._fast is not None:
            self._fast.close()
        self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if not isinstance(now, datetime) or now.utcoffset() is None:
            raise ValueError(f"clock: must return timezone-aware datetimes, returned {now!r}")
        return now.astimezone(UTC)

    def _run(self, work: Callable[[sa.Connection], T], *, write: bool) -> T:
        """Run ``work`` in one transaction on a pooled connection; map database failures.

        A read is retried once if its connection turned out to be dead (server restarted):
        the pool then drops all its old connections.  A write is not retried, because the
        failure may have come after the commit reached the server.
        """
        attempts = 1 if write else 2
        for attempt in range(1, attempts + 1):
            try:
                with self._engine.connect() as conn:
                    if write and self._engine.dialect.name == "sqlite":
                        conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
                    with conn.begin():
                        return work(conn)
            except DBAPIError as exc:
                if exc.connection_invalidated and attempt < attempts:
                    continue
                raise self._database_error(exc) from exc
            except SQLAlchemyError as exc:
                raise self._database_error(exc) from exc
        raise RuntimeError("unreachable: the loop returns or raises")

    def _point_read(self, key: str, statement: sa.Select[Any], params: dict[str, Any]) -> Any:
        """The first row of a point read (None if there is none), the fast way on SQLite."""
        if self._fast is None:
            return self._run(lambda conn: conn.execute(statement, params).first(), write=False)
        try:
            return self._fast.first(self._fast_reads[key], params)
        except sqlite3.Error as exc:
            raise self._database_error(exc) from exc

    def _database_error(self, exc: SQLAlchemyError | sqlite3.Error) -> CatalogError:
        if isinstance(exc, PoolTimeout):
            return CatalogError(
                "the catalog is overloaded: no database connection became free in time",
                dialect=self.dialect,
            )
        cause = getattr(exc, "orig", None) or exc
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)
        message = f"catalog database error ({self.dialect}): {first_line}"
        lowered = first_line.lower()
        if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
            message += " (the catalog schema is missing: run the migrations)"
        return CatalogError(message, dialect=self.dialect, error=type(cause).__name__)

    def _write_audit(
        self,
        conn: sa.Connection,
        at: datetime,
        action: str,
        *,
        user_id: str | None,
        name: str | None = None,
        version: int | None = None,
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        conn.execute(
            sa.insert(audit_log).values(
                at=at,
                user_id=user_id,
                action=action,
                document_name=name,
                version=version,
                outcome=outcome,
                details=_details_json(details),
            )
        )

    # -- users --------------------------------------------------------------------------------

    def create_user(
        self,
        user_id: str,
        password: str,
        name: str,
        contact: str,
        *,
        identity_public_key: bytes | None = None,
    ) -> None:
        """Register a user.  Raises ``BadName``, ``BadPassword`` or ``UserExists``."""
        uid = canonical_user_id(user_id)
        validate_profile_text("name", name, max_chars=MAX_PROFILE_NAME_CHARS, required=True)
        validate_profile_text("contact", contact, max_chars=MAX_CONTACT_CHARS, required=False)
        _check_new_password(password)
        key = _optional_bytes("identity_public_key", identity_public_key, exact=32)
        password_hash = self._hasher.hash(password)  # slow: before taking a connection
        now = self._now()

        def work(conn: sa.Connection) -> None:
            inserted = conn.execute(
                self._insert(users)
                .values(
                    user_id=uid,
                    name=name,
                    contact=contact,
                    password_hash=password_hash,
                    created_at=now,
                    identity_public_key=key,
                )
                .on_conflict_do_nothing()
                .returning(users.c.user_id)
            ).first()
            # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT inserts.
            if inserted is None:
                raise UserExists(uid)
            self._write_audit(conn, now, "user_create", user_id=uid)

        self._run(work, write=True)

    def get_user(self, user_id: str) -> UserRecord:
        """The user's profile (never the password hash).  Raises ``NotFound``."""
        uid = canonical_user_id(user_id)

        def work(conn: sa.Connection) -> Any:
            query = sa.select(
                users.c.user_id,
                users.c.name,
                users.c.contact,
                users.c.created_at,
                users.c.identity_public_key,
            ).where(users.c.user_id == uid)
            return conn.execute(query).first()

        row = self._run(work, write=False)
        if row is None:
            raise NotFound("user", f"no user {uid!r}", user_id=uid)
        return UserRecord(
            user_id=row.user_id,
            name=row.name,
            contact=row.contact,
            created_at=row.created_at,
            identity_public_key=row.identity_public_key,
        )

    def authenticate(self, user_id: str, password: str) -> str:
        """Check a password; return the canonical user id or raise ``AuthFailed``.

        Unknown users cost one Argon2 verification too (against a dummy hash), so the answer
        and its timing do not tell whether a user id exists.  A hash made with older
        parameters is replaced after a successful log-in.  Every attempt is audited.
        """
        if not isinstance(password, str):
            raise TypeError(f"password: expected str, got {type(password).__name__}")
        try:
            uid: str | None = canonical_user_id(user_id)
        except BadName:
            uid = None
        stored: str | None = None
        if uid is not None:
            query = sa.select(users.c.password_hash).where(users.c.user_id == uid)
            stored = self._run(lambda conn: conn.execute(query).scalar_one_or_none(), write=False)
        ok = False
        new_hash: str | None = None
        if len(password) <= MAX_PASSWORD_CHARS:
            if stored is None or stored.startswith(LOCKED_PREFIX):
                self._verify_dummy(password)  # the same work as for a real account
            else:
                try:
                    ok = self._hasher.verify(stored, password)
                except (VerificationError, InvalidHashError):
                    ok = False
                if ok and self._hasher.check_needs_rehash(stored):
                    new_hash = self._hasher.hash(password)
        now = self._now()

        def record(conn: sa.Connection) -> None:
            details: dict[str, Any] = {}
            if new_hash is not None:
                replaced = conn.execute(
                    sa.update(users)
                    .where(users.c.user_id == uid, users.c.password_hash == stored)
                    .values(password_hash=new_hash)
                )
                details["rehashed"] = replaced.rowcount == 1
            if stored is None:
                details["reason"] = "unknown user id"
                if uid is not None:
                    details["attempted_user_id"] = uid
            elif stored.startswith(LOCKED_PREFIX):
                details["reason"] = "account locked"
            elif not ok:
                details["reason"] = "wrong password"
            self._write_audit(
                conn,
                now,
                "login",
                user_id=uid if stored is not None else None,
                outcome="ok" if ok else "denied",
                details=details,
            )

        self._run(record, write=True)
        if not ok or uid is None:
            raise AuthFailed()
        return uid

    def _verify_dummy(self, password: str) -> None:
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
            dummy = self._dummy_hash
        with contextlib.suppress(VerificationError):
            self._hasher.verify(dummy, password)

    def set_password(self, user_id: str, password: str) -> int:
        """Give ``user_id`` a new password (an operator's act: a locked account restored from
        the nodes gets its first one) and revoke every live token of the user; returns how
        many were revoked.  ``NotFound`` if there is no such user, ``BadPassword``."""
        uid = canonical_user_id(user_id)
        _check_new_password(password)
        password_hash = self._hasher.hash(password)  # slow: before taking a connection
        now = self._now()

        def work(conn: sa.Connection) -> int:
            updated = conn.execute(
                sa.update(users)
                .where(users.c.user_id == uid)
                .values(password_hash=password_hash)
                .returning(users.c.user_id)
            ).first()
            if updated is None:
                raise NotFound("user", f"no user {uid!r}", user_id=uid)
            revoked = conn.execute(
                sa.update(tokens)
                .where(tokens.c.user_id == uid, tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
                .returning(tokens.c.token_hash)
            ).all()
            self._write_audit(
                conn, now, "password_set", user_id=uid, details={"tokens_revoked": len(revoked)}
            )
            return len(revoked)

        return self._run(work, write=True)

    # -- tokens -------------------------------------------------------------------------------

    def issue_token(self, user_id: str, ttl_s: float, kind: TokenKind = "api") -> str:
        """A new bearer token for ``user_id``, valid for ``ttl_s`` seconds.

        Only its SHA-256 is stored: the returned string is the one and only copy.  ``kind``
        is ``"api"`` (CLI and API clients) or ``"session"`` (browser log-in cookie).
        """
        uid = canonical_user_id(user_id)
        if kind not in TOKEN_KINDS:
            raise ValueError(f"kind: expected one of {TOKEN_KINDS}, got {kind!r}")
        if (
            not isinstance(ttl_s, int | float)
            or isinstance(ttl_s, bool)
            or not math.isfinite(ttl_s)
            or not 0 < ttl_s <= MAX_TOKEN_TTL_S
        ):
            raise ValueError(f"ttl_s: expected a number of seconds in (0, {MAX_TOKEN_TTL_S}]")
        token = secrets.token_urlsafe(32)
        digest = _token_hash(token)
        now = self._now()
        expires_at = now + timedelta(seconds=ttl_s)

        def work(conn: sa.Connection) -> None:
            _require_user(conn, uid)
            conn.execute(
                sa.insert(tokens).values(
                    token_hash=digest,
                    user_id=uid,
                    kind=kind,
                    issued_at=now,
                    expires_at=expires_at,
                )
            )
            self._write_audit(
                conn,
                now,
                "token_issue",
                user_id=uid,
                details={
                    "kind": kind,
                    "token_id": digest.hex()[:16],
                    "expires_at": expires_at.isoformat(),
                },
            )

        self._run(work, write=True)
        return token

    def resolve_token(self, token: str, *, kind: TokenKind | None = None) -> str:
        """The user id a live token belongs to; ``AuthFailed`` if it is unknown, expired,
        revoked, or (when ``kind`` is given) of another kind.  Records the use (see
        :meth:`lookup_token`)."""
        found = self.lookup_token(token, kind=kind)
        if found.stale:
            self.touch_token(token)
        return found.user_id

    def lookup_token(self, token: str, *, kind: TokenKind | None = None) -> TokenLookup:
        """:meth:`resolve_token` without its write: one point read.  ``stale`` says that the
        token's ``last_used_at`` is older than ``TOKEN_LAST_USED_GRANULARITY`` and should be
        refreshed with :meth:`touch_token` (the gateway does the read on its event loop and
        the rare write in a worker thread)."""
        if not isinstance(token, str):
            raise TypeError(f"token: expected str, got {type(token).__name__}")
        if kind is not None and kind not in TOKEN_KINDS:
            raise ValueError(f"kind: expected one of {TOKEN_KINDS} or None, got {kind!r}")
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthFailed(TOKEN_AUTH_MESSAGE)
        row = self._point_read("token", _TOKEN_LOOKUP, {"token_hash": _token_hash(token)})
        now = self._now()
        if (
            row is None
            or row.revoked_at is not None
            or now >= row.expires_at
            or (kind is not None and row.kind != kind)
        ):
            raise AuthFailed(TOKEN_AUTH_MESSAGE)
        stale = row.last_used_at is None or now - row.last_used_at >= TOKEN_LAST_USED_GRANULARITY
        return TokenLookup(user_id=cast(str, row.user_id), stale=stale)

    def touch_token(self, token: str) -> None:
        """Set the token's ``last_used_at`` to now, unless it was set within
        ``TOKEN_LAST_USED_GRANULARITY`` (bookkeeping, not a state change: no audit row)."""
        if not isinstance(token, str):
            raise TypeError(f"token: expected str, got {type(token).__name__}")
        digest = _token_hash(token)
        now = self._now()
        touch = (
            sa.update(tokens)
            .where(tokens.c.token_hash == digest)
            .where(
                sa.or_(
                    tokens.c.last_used_at.is_(None),
                    tokens.c.last_used_at <= now - TOKEN_LAST_USED_GRANULARITY,
                )
            )
            .values(last_used_at=now)
        )
        self._run(lambda conn: conn.execute(touch), write=True)

    def revoke_token(self, token: str) -> bool:
        """Revoke a token (log-out).  Idempotent: True if a live token was revoked now."""
        if not isinstance(token, str):
            raise TypeError(f"token: expected str, got {type(token).__name__}")
        if not token or len(token) > MAX_TOKEN_CHARS:
            return False
        digest = _token_hash(token)
        now = self._now()

        def work(conn: sa.Connection) -> bool:
            user_id = conn.execute(
                sa.update(tokens)
                .where(tokens.c.token_hash == digest, tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
                .returning(tokens.c.user_id)
            ).scalar_one_or_none()
            if user_id is None:
                return False
            self._write_audit(
                conn, now, "token_revoke", user_id=user_id, details={"token_id": digest.hex()[:16]}
            )
            return True

        return self._run(work, write=True)

    def purge_tokens(self, older_than: datetime | timedelta) -> int:
        """Delete tokens that expired or were revoked before ``older_than`` (an instant, or an
        age relative to now); return how many.  Housekeeping for session tokens."""
        now = self._now()
        cutoff = _cutoff("older_than", older_than, now)

        def work(conn: sa.Connection) -> int:
            deleted = conn.execute(
                sa.delete(tokens).where(
                    sa.or_(tokens.c.expires_at < cutoff, tokens.c.revoked_at < cutoff)
                )
            ).rowcount
            if deleted:
                self._write_audit(
                    conn,
                    now,
                    "token_purge",
                    user_id=None,
                    details={"count": deleted, "before": cutoff.isoformat()},
                )
            return int(deleted)

        return self._run(work, write=True)

    # -- deposits -----------------------------------------------------------------------------

    def begin_deposit(self, owner: str, name: str) -> int:
        """Allocate the next version number of ``(owner, name)`` and record it as pending.

        Concurrent deposits to one name get distinct numbers: the counter row is updated under
        its row lock (PostgreSQL) or the database write lock (SQLite).  ``NotFound`` if the
        owner does not exist.
        """
        uid = canonical_user_id(owner)
        validate_document_name(name)
        now = self._now()

        def work(conn: sa.Connection) -> int:
            _require_user(conn, uid)
            conn.execute(
                self._insert(documents)
                .values(owner=uid, name=name, next_version=1, created_at=now)
                .on_conflict_do_nothing()
            )
            document_id, next_version = conn.execute(
                sa.update(documents)
                .where(documents.c.owner == uid, documents.c.name == name)
                .values(next_version=documents.c.next_version + 1)
                .returning(documents.c.document_id, documents.c.next_version)
            ).one()
            version = int(next_version) - 1
            conn.execute(
                sa.insert(versions).values(
                    document_id=document_id, version=version, state="pending", began_at=now
                )
            )
            self._write_audit(conn, now, "deposit_begin", user_id=uid, name=name, version=version)
            return version

        return self._run(work, write=True)

    def complete_deposit(
        self, owner: str, name: str, version: int, receipt: ReceiptRecord
    ) -> VersionRecord:
        """Record the receipt of a pending version and mark it stored.

        ``NotFound`` if the version does not exist for this owner; ``WrongState`` if it is
        not pending any more (for instance failed by the clean-up while the deposit was slow:
        the caller must then not hand out its receipt).
        """
        uid = canonical_user_id(owner)
        validate_document_name(name)
        _check_int("version", version, low=1)
        columns = _receipt_columns(receipt)
        now = self._now()

        def work(conn: sa.Connection) -> VersionRecord:
            document_id, state = _locate_version(conn, uid, name, version)
            if state != "pending":
                raise WrongState(uid, name, version, state, "pending")
            conn.execute(
                sa.update(versions)
                .where(versions.c.document_id == document_id, versions.c.version == version)
                .values(state="stored", completed_at=now, **columns)
            )
            self._write_audit(
                conn,
                now,
                "deposit_complete",
                user_id=uid,
                name=name,
                version=version,
                details={"size": receipt.size, "sha256": columns["sha256"].hex()},
            )
            return _fetch_version(conn, uid, name, version, state="stored")

        return self._run(work, write=True)

    def fail_deposit(self, owner: str, name: str, version: int, reason: str) -> None:
        """Mark a pending version failed (its number stays used).  Failing a version that is
        already failed does nothing; ``WrongState`` if it is stored or deleted."""
        uid = canonical_user_id(owner)
        validate_document_name(name)
        _check_int("version", version, low=1)
        if not isinstance(reason, str):
            raise TypeError(f"reason: expected str, got {type(reason).__name__}")
        if len(reason) > MAX_FAILURE_REASON_CHARS:
            reason = reason[: MAX_FAILURE_REASON_CHARS - 1] + "…"
        now = self._now()

        def work(conn: sa.Connection) -> None:
            document_id, state = _locate_version(conn, uid, name, version)
            if state == "failed":
                return
            if state != "pending":
                raise WrongState(uid, name, version, state, "pending")
            conn.execute(
                sa.update(versions)
                .where(versions.c.document_id == document_id, versions.c.version == version)
                .values(state="failed", failed_at=now, failure_reason=reason)
            )
            self._write_audit(
                conn,
                now,
                "deposit_fail",
                user_id=uid,
                name=name,
                version=version,
                outcome="failed",
                details={"reason": reason},
            )

        self._run(work, write=True)

    def restore_version(
        self, owner: str, name: str, version: int, receipt: ReceiptRecord
    ) -> RestoreResult:
        """Put back a stored version the nodes hold and the catalog lacks (docs/spec/catalog.md,
        "Restoring the catalog from the nodes"); the caller has checked its receipt.

        One transaction: the owner's account if missing, created *locked* (no password until
        :meth:`set_password`); the document row if missing; ``next_version`` raised above
        ``version``; the version as stored.  A version the catalog has in any state is left
        as it is (``restored`` False): a restore never changes what the catalog knows.
        """
        uid = canonical_user_id(owner)
        validate_document_name(name)
        _check_int("version", version, low=1)
        columns = _receipt_columns(receipt)
        now = self._now()

        def work(conn: sa.Connection) -> RestoreResult:
            account = conn.execute(
                self._insert(users)
                .values(
                    user_id=uid,
                    name=RESTORED_ACCOUNT_NAME,
                    contact="",
                    password_hash=LOCKED_PASSWORD_HASH,
                    created_at=now,
                )
                .on_conflict_do_nothing()
                .returning(users.c.user_id)
            ).first()
            if account is not None:
                self._write_audit(conn, now, "user_restore", user_id=uid)
            conn.execute(
                self._insert(documents)
                .values(owner=uid, name=name, next_version=version + 1, created_at=now)
                .on_conflict_do_nothing()
            )
            # Locks the document row (as begin_deposit does) before looking at its versions.
            document_id = conn.execute(
                sa.update(documents)
                .where(documents.c.owner == uid, documents.c.name == name)
                .values(
                    next_version=sa.case(
                        (documents.c.next_version > version, documents.c.next_version),
                        else_=version + 1,
                    )
                )
                .returning(documents.c.document_id)
            ).scalar_one()
            inserted = conn.execute(
                self._insert(versions)
                .values(
                    document_id=document_id,
                    version=version,
                    state="stored",
                    began_at=now,
                    completed_at=now,
                    **columns,
                )
                .on_conflict_do_nothing()
                .returning(versions.c.version)
            ).first()
            if inserted is not None:
                self._write_audit(
                    conn,
                    now,
                    "version_restore",
                    user_id=uid,
                    name=name,
                    version=version,
                    details={"size": receipt.size, "sha256": columns["sha256"].hex()},
                )
            return RestoreResult(restored=inserted is not None, account_created=account is not None)

        return self._run(work, write=True)

    def pending_versions(self, older_than: datetime | timedelta) -> list[PendingVersion]:
        """Deposits begun before ``older_than`` (an instant, or an age relative to now) that
        never finished, oldest first: after a gateway crash, their slices are cleaned up on the
        nodes and the versions failed with ``fail_deposit``."""
        cutoff = _cutoff("older_than", older_than, self._now())
        query = (
            sa.select(documents.c.owner, documents.c.name, versions.c.version, versions.c.began_at)
            .select_from(versions.join(documents))
            .where(versions.c.state == "pending", versions.c.began_at < cutoff)
            .order_by(versions.c.began_at, versions.c.document_id, versions.c.version)
        )
        rows = self._run(lambda conn: conn.execute(query).all(), write=False)
        return [
            PendingVersion(owner=r.owner, name=r.name, version=r.version, began_at=r.began_at)
            for r in rows
        ]

    # -- reading and deleting -----------------------------------------------------------------

    def get_version(self, owner: str, name: str, version: int | None = None) -> VersionRecord:
        """A stored version (the latest if ``version`` is None).  ``NotFound`` if there is none
        for this owner: other users' documents, pending, failed and deleted versions alike."""
        uid = canonical_user_id(owner)
        validate_document_name(name)
        if version is not None:
            _check_int("version", version, low=1)
        params: dict[str, Any] = {"owner": uid, "name": name}
        if version is None:
            row = self._point_read("latest", _LATEST_VERSION["stored"], params)
        else:
            row = self._point_read("one", _ONE_VERSION["stored"], params | {"version": version})
        if row is None:
            raise _version_not_found(name, version)
        return _version_record(row)

    def version_state(self, owner: str, name: str, version: int) -> str | None:
        """The state of one version ("pending", "stored", "failed" or "deleted"), or None when
        the catalog has no such version.  The sweep of orphan slices asks it: a node may drop
        an object only if the catalog says its version was deleted or failed."""
        uid = canonical_user_id(owner)
        validate_document_name(name)
        _check_int("version", version, low=1)
        query = (
            sa.select(versions.c.state)
            .select_from(versions.join(documents))
            .where(
                documents.c.owner == uid,
                documents.c.name == name,
                versions.c.version == version,
            )
        )
        state = self._run(lambda conn: conn.execute(query).scalar(), write=False)
        return None if state is None else str(state)

    def list_versions(self, owner: str, name: str) -> list[VersionRecord]:
        """The stored versions of a document, oldest first.  ``NotFound`` if there are none."""
        uid = canonical_user_id(owner)
        validate_document_name(name)
        query = (
            _version_select()
            .where(
                documents.c.owner == uid,
                documents.c.name == name,
                versions.c.state == "stored",
            )
            .order_by(versions.c.version)
        )
        rows = self._run(lambda conn: conn.execute(query).all(), write=False)
        if not rows:
            raise NotFound("document", f"no document {name!r}", name=name)
        return [_version_record(row) for row in rows]

    def list_documents(self, owner: str) -> list[DocumentSummary]:
        """The owner's documents that have at least one stored version, sorted by name."""
        uid = canonical_user_id(owner)
        stored = (
            sa.select(
                versions.c.document_id,
                sa.func.max(versions.c.version).label("latest"),
                sa.func.count().label("version_count"),
            )
            .select_from(versions.join(documents))
            .where(documents.c.owner == uid, versions.c.state == "stored")
            .group_by(versions.c.document_id)
            .subquery()
        )
        query = sa.select(
            documents.c.name,
            versions.c.version,
            versions.c.size,
            versions.c.sha256,
            versions.c.deposited_at,
            stored.c.version_count,
        ).select_from(
            stored.join(documents, documents.c.document_id == stored.c.document_id).join(
                versions,
                sa.and_(
                    versions.c.document_id == stored.c.document_id,
                    versions.c.version == stored.c.latest,
                ),
            )
        )
        rows = self._run(lambda conn: conn.execute(query).all(), write=False)
        summaries = [
            DocumentSummary(
                name=r.name,
                latest_version=r.version,
                size=r.size,
                sha256=bytes(r.sha256),
                deposited_at=r.deposited_at,
                version_count=int(r.version_count),
            )
            for r in rows
        ]
        # Sorted here, not in SQL: PostgreSQL's collation would order differently from SQLite.
        return sorted(summaries, key=lambda s: s.name)

    def mark_deleted(self, owner: str, name: str, version: int) -> VersionRecord:
        """Mark a stored version deleted; it disappears from gets and listings.  The row and
        its receipt stay (the version number is never reused).  ``NotFound`` unless stored."""
        uid = canonical_user_id(owner)
        validate_document_name(name)
        _check_int("version", version, low=1)
        now = self._now()

        def work(conn: sa.Connection) -> VersionRecord:
            document_id, state = _locate_version(conn, uid, name, version)
            if state != "stored":
                raise _version_not_found(name, version)
            conn.execute(
                sa.update(versions)
                .where(versions.c.document_id == document_id, versions.c.version == version)
                .values(state="deleted", deleted_at=now)
            )
            self._write_audit(conn, now, "version_delete", user_id=uid, name=name, version=version)
            return _fetch_version(conn, uid, name, version, state="deleted")

        return self._run(work, write=True)

    # -- audit log ----------------------------------------------------------------------------

    def audit(
        self,
        action: str,
        *,
        user_id: str | None = None,
        name: str | None = None,
        version: int | None = None,
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Record an event that is not a catalog state change (a retrieval, a liar detected).

        ``action``: a lower-case identifier such as ``"retrieve"``; ``outcome``: one of
        ``"ok"``, ``"denied"``, ``"failed"``; ``details``: a JSON object (stored canonical).
        """
        if not isinstance(action, str) or _ACTION.fullmatch(action) is None:
            raise ValueError(f"action: expected a lower-case identifier, got {action!r}")
        if outcome not in AUDIT_OUTCOMES:
            raise ValueError(f"outcome: expected one of {AUDIT_OUTCOMES}, got {outcome!r}")
        uid = canonical_user_id(user_id) if user_id is not None else None
        if name is not None:
            validate_document_name(name)
        if version is not None:
            _check_int("version", version, low=1)
        details_json = _details_json(details)  # validate before taking a connection
        now = self._now()

        def work(conn: sa.Connection) -> None:
            conn.execute(
                sa.insert(audit_log).values(
                    at=now,
                    user_id=uid,
                    action=action,
                    document_name=name,
                    version=version,
                    outcome=outcome,
                    details=details_json,
                )
            )

        self._run(work, write=True)

    def recent_audit(self, limit: int = 100, *, user_id: str | None = None) -> list[AuditRecord]:
        """The newest ``limit`` audit rows, newest first (only ``user_id``'s if given)."""
        _check_int("limit", limit, low=1, high=MAX_AUDIT_LIMIT)
        query = sa.select(audit_log).order_by(audit_log.c.audit_id.desc()).limit(limit)
        if user_id is not None:
            query = query.where(audit_log.c.user_id == canonical_user_id(user_id))
        rows = self._run(lambda conn: conn.execute(query).all(), write=False)
        return [
            AuditRecord(
                audit_id=int(r.audit_id),
                at=r.at,
                user_id=r.user_id,
                action=r.action,
                name=r.document_name,
                version=r.version,
                outcome=r.outcome,
                details=_parse_details(r.details),
            )
            for r in rows
        ]


# -- helpers (module level: no state) -----------------------------------------------------------


def _require_user(conn: sa.Connection, uid: str) -> None:
    if conn.execute(sa.select(users.c.user_id).where(users.c.user_id == uid)).first() is None:
        raise NotFound("user", f"no user {uid!r}", user_id=uid)


def _version_not_found(name: str, version: int | None) -> NotFound:
    if version is None:
        return NotFound("document", f"no document {name!r}", name=name)
    return NotFound("version", f"no version {version} of {name!r}", name=name, version=version)


def _locate_version(conn: sa.Connection, uid: str, name: str, version: int) -> tuple[int, str]:
    """(document_id, state) of one version of the owner's document, locked for update."""
    row = conn.execute(
        sa.select(versions.c.document_id, versions.c.state)
        .select_from(versions.join(documents))
        .where(documents.c.owner == uid, documents.c.name == name, versions.c.version == version)
        .with_for_update(of=versions)
    ).first()
    if row is None:
        raise _version_not_found(name, version)
    return int(row.document_id), str(row.state)


def _version_select() -> sa.Select[Any]:
    return sa.select(
        documents.c.owner,
        documents.c.name,
        versions.c.version,
        versions.c.state,
        versions.c.size,
        versions.c.sha256,
        versions.c.fv_hash,
        versions.c.codec_id,
        versions.c.m,
        versions.c.n,
        versions.c.segment_bytes,
        versions.c.statement,
        versions.c.signature,
        versions.c.deposited_at,
        versions.c.completed_at,
        versions.c.encrypted,
        versions.c.key_wrap,
        versions.c.deleted_at,
    ).select_from(versions.join(documents))


# The point look-ups on every request are built once with bound parameters: building a
# statement costs more than SQLite takes to run it (measured with evault.catalog.bench).
#
# The state is written into the SQL, never bound: SQLite re-prepares a statement before every
# run when a bound value is compared with a column that a partial index's condition names
# (ix_versions_pending_began_at, state = 'pending'), and that re-prepare cost ten times the
# read itself (tests/unit/test_catalog_fastread.py checks that none does).
def _version_of_document(state: VersionState) -> sa.Select[Any]:
    return _version_select().where(
        documents.c.owner == sa.bindparam("owner"),
        documents.c.name == sa.bindparam("name"),
        versions.c.state == sa.literal_column(f"'{state}'"),
    )


_LOOKED_UP_STATES: Final[tuple[VersionState, ...]] = ("stored", "deleted")
_LATEST_VERSION: Final = {
    state: _version_of_document(state).order_by(versions.c.version.desc()).limit(1)
    for state in _LOOKED_UP_STATES
}
_ONE_VERSION: Final = {
    state: _version_of_document(state).where(versions.c.version == sa.bindparam("version"))
    for state in _LOOKED_UP_STATES
}
_TOKEN_LOOKUP: Final = sa.select(
    tokens.c.user_id,
    tokens.c.kind,
    tokens.c.expires_at,
    tokens.c.revoked_at,
    tokens.c.last_used_at,
).where(tokens.c.token_hash == sa.bindparam("token_hash"))


def _version_record(row: sa.Row[Any]) -> VersionRecord:
    return VersionRecord(
        owner=row.owner,
        name=row.name,
        version=int(row.version),
        state=cast(VersionState, row.state),
        size=int(row.size),
        sha256=bytes(row.sha256),
        fv_hash=bytes(row.fv_hash),
        codec_id=row.codec_id,
        m=int(row.m),
        n=int(row.n),
        segment_bytes=int(row.segment_bytes),
        statement=bytes(row.statement),
        signature=bytes(row.signature),
        deposited_at=row.deposited_at,
        completed_at=row.completed_at,
        encrypted=bool(row.encrypted),
        key_wrap=None if row.key_wrap is None else bytes(row.key_wrap),
        deleted_at=row.deleted_at,
    )


def _fetch_version(
    conn: sa.Connection,
    uid: str,
    name: str,
    version: int | None,
    *,
    state: VersionState,
) -> VersionRecord:
    params: dict[str, Any] = {"owner": uid, "name": name}
    if version is None:
        row = conn.execute(_LATEST_VERSION[state], params).first()
    else:
        row = conn.execute(_ONE_VERSION[state], params | {"version": version}).first()
    if row is None:
        raise _version_not_found(name, version)
    return _version_record(row)


def _details_json(details: Mapping[str, Any] | None) -> str:
    if details is None:
        return "{}"
    if not isinstance(details, Mapping):
        raise TypeError(f"details: expected a mapping, got {type(details).__name__}")
    encoded = canonical_json(dict(details))
    if len(encoded) > MAX_AUDIT_DETAILS_BYTES:
        raise ValueError(f"details: {len(encoded)} bytes, the limit is {MAX_AUDIT_DETAILS_BYTES}")
    return encoded.decode("utf-8")


def _parse_details(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def _receipt_columns(receipt: ReceiptRecord) -> dict[str, Any]:
    """The ``versions`` columns of a stored version's receipt, each checked."""
    if not isinstance(receipt, ReceiptRecord):
        raise TypeError(f"receipt: expected a ReceiptRecord, got {type(receipt).__name__}")
    r = receipt
    _check_int("size", r.size, low=0)
    _check_int("n", r.n, low=1, high=255)
    _check_int("m", r.m, low=1, high=r.n)
    _check_int("segment_bytes", r.segment_bytes, low=1, high=2**31 - 1)
    if not isinstance(r.codec_id, str) or _CODEC_ID.fullmatch(r.codec_id) is None:
        raise ValueError(f"codec_id: expected 1-64 printable ASCII characters, got {r.codec_id!r}")
    _check_instant("deposited_at", r.deposited_at)
    if not isinstance(r.encrypted, bool):
        raise TypeError(f"encrypted: expected bool, got {type(r.encrypted).__name__}")
    wrap = _optional_bytes("key_wrap", r.key_wrap, limit=MAX_KEY_WRAP_BYTES)
    if wrap is not None and not r.encrypted:
        raise ValueError("key_wrap: only an encrypted version has a key wrap")
    return {
        "size": r.size,
        "sha256": _exact_bytes("sha256", r.sha256, 32),
        "fv_hash": _exact_bytes("fv_hash", r.fv_hash, 32),
        "codec_id": r.codec_id,
        "m": r.m,
        "n": r.n,
        "segment_bytes": r.segment_bytes,
        "statement": _bounded_bytes("statement", r.statement, MAX_STATEMENT_BYTES),
        "signature": _bounded_bytes("signature", r.signature, MAX_SIGNATURE_BYTES),
        "deposited_at": r.deposited_at,
        "encrypted": r.encrypted,
        "key_wrap": wrap,
    }


def _check_new_password(password: str) -> None:
    if not isinstance(password, str):
        raise TypeError(f"password: expected str, got {type(password).__name__}")
    if len(password) < MIN_PASSWORD_CHARS:
        raise BadPassword(f"it must be at least {MIN_PASSWORD_CHARS} characters long")
    if len(password) > MAX_PASSWORD_CHARS:
        raise BadPassword(f"it must be at most {MAX_PASSWORD_CHARS} characters long")


def _check_int(param: str, value: int, *, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{param}: expected int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{param}: expected an int {bounds}, got {value}")


def _as_bytes(param: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{param}: expected bytes, got {type(value).__name__}")
    return bytes(value)


def _exact_bytes(param: str, value: object, length: int) -> bytes:
    raw = _as_bytes(param, value)
    if len(raw) != length:
        raise ValueError(f"{param}: expected {length} bytes, got {len(raw)}")
    return raw


def _bounded_bytes(param: str, value: object, limit: int) -> bytes:
    raw = _as_bytes(param, value)
    if not 1 <= len(raw) <= limit:
        raise ValueError(f"{param}: expected 1 to {limit} bytes, got {len(raw)}")
    return raw


def _optional_bytes(
    param: str, value: object, *, exact: int | None = None, limit: int | None = None
) -> bytes | None:
    if value is None:
        return None
    if exact is not None:
        return _exact_bytes(param, value, exact)
    return _bounded_bytes(param, value, limit if limit is not None else MAX_KEY_WRAP_BYTES)


def _check_instant(param: str, value: object) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{param}: expected a timezone-aware datetime, got {value!r}")


def _cutoff(param: str, value: datetime | timedelta, now: datetime) -> datetime:
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError(f"{param}: a negative age makes no sense, got {value}")
        return now - value
    _check_instant(param, value)
    return value.astimezone(UTC)
