"""The catalog's tables, as SQLAlchemy Core metadata (the *current* schema).

The database itself is created and changed only by the Alembic migrations in
``evault/catalog/migrations/versions``; this module describes the result so that queries can be
written against it.  A test compares the two (``alembic.autogenerate.compare_metadata``) on
SQLite and on PostgreSQL, so they cannot drift apart.  ``docs/spec/catalog.md`` explains every
table and the migration policy.

Invariants that the database enforces itself (CHECK constraints), so that no code path — and no
operator with ``psql`` — can store, say, a version marked ``stored`` without its receipt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

#: Constraint names are fixed by convention so that later migrations can name what they alter
#: (SQLite's batch mode rebuilds tables and needs every constraint named).
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VERSION_STATES: Final = ("pending", "stored", "failed", "deleted")
TOKEN_KINDS: Final = ("api", "session")


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """An instant in time: timezone-aware UTC ``datetime`` in Python, always.

    PostgreSQL stores ``timestamptz``.  SQLite has no time type; SQLAlchemy stores an ISO
    string there, so we store UTC without an offset, which also keeps string comparison equal
    to time order.  Naive datetimes are refused: they are a programming mistake.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise ValueError(f"expected a timezone-aware datetime, got {value!r}")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"database returned {value!r} for a timestamp column")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _id_type() -> sa.types.TypeEngine[int]:
    # BIGINT on PostgreSQL; on SQLite only "INTEGER PRIMARY KEY" is the auto-numbered rowid.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


metadata: Final = sa.MetaData(naming_convention=NAMING_CONVENTION)

users: Final = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("contact", sa.String(320), nullable=False),
    sa.Column("password_hash", sa.Text(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    # Later issues (client identity and threshold unwrap keys, DESIGN §7); nullable until then.
    sa.Column("identity_public_key", sa.LargeBinary(), nullable=True),
    sa.Column("unwrap_public_key", sa.LargeBinary(), nullable=True),
    sa.Column("unwrap_commitments", sa.Text(), nullable=True),
    sa.CheckConstraint("user_id = lower(user_id)", name="user_id_lower"),
    sa.CheckConstraint(
        "identity_public_key IS NULL OR length(identity_public_key) = 32",
        name="identity_key_length",
    ),
)

tokens: Final = sa.Table(
    "tokens",
    metadata,
    sa.Column("token_hash", sa.LargeBinary(), primary_key=True),
    sa.Column(
        "user_id",
        sa.String(64),
        sa.ForeignKey("users.user_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("issued_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Column("last_used_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint("length(token_hash) = 32", name="token_hash_length"),
    sa.CheckConstraint("kind IN ('api', 'session')", name="kind"),
    sa.CheckConstraint("expires_at > issued_at", name="expires_after_issue"),
)

documents: Final = sa.Table(
    "documents",
    metadata,
    sa.Column("document_id", _id_type(), primary_key=True, autoincrement=True),
    sa.Column("owner", sa.String(64), sa.ForeignKey("users.user_id"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    # The next version number to hand out; bumped under a row lock by begin_deposit.
    sa.Column("next_version", sa.Integer(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("owner", "name"),
    sa.CheckConstraint("next_version >= 1", name="next_version_positive"),
)

versions: Final = sa.Table(
    "versions",
    metadata,
    sa.Column("document_id", _id_type(), sa.ForeignKey("documents.document_id"), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("began_at", UtcDateTime(), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=True),
    sa.Column("sha256", sa.LargeBinary(), nullable=True),
    sa.Column("fv_hash", sa.LargeBinary(), nullable=True),
    sa.Column("codec_id", sa.String(64), nullable=True),
    sa.Column("m", sa.Integer(), nullable=True),
    sa.Column("n", sa.Integer(), nullable=True),
    sa.Column("segment_bytes", sa.Integer(), nullable=True),
    sa.Column("statement", sa.LargeBinary(), nullable=True),
    sa.Column("signature", sa.LargeBinary(), nullable=True),
    sa.Column("deposited_at", UtcDateTime(), nullable=True),
    sa.Column("completed_at", UtcDateTime(), nullable=True),
    sa.Column("failed_at", UtcDateTime(), nullable=True),
    sa.Column("failure_reason", sa.Text(), nullable=True),
    sa.Column("deleted_at", UtcDateTime(), nullable=True),
    sa.Column("encrypted", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("key_wrap", sa.LargeBinary(), nullable=True),
    sa.CheckConstraint("version >= 1", name="version_positive"),
    sa.CheckConstraint(
        "state IN ('pending', 'stored', 'failed', 'deleted')",
        name="state",
    ),
    # A version that is (or was) stored has its whole receipt: never half a record.
    sa.CheckConstraint(
        "state IN ('pending', 'failed') OR ("
        "size IS NOT NULL AND sha256 IS NOT NULL AND fv_hash IS NOT NULL"
        " AND codec_id IS NOT NULL AND m IS NOT NULL AND n IS NOT NULL"
        " AND segment_bytes IS NOT NULL AND statement IS NOT NULL AND signature IS NOT NULL"
        " AND deposited_at IS NOT NULL AND completed_at IS NOT NULL)",
        name="stored_has_receipt",
    ),
    sa.CheckConstraint("state <> 'failed' OR failure_reason IS NOT NULL", name="failed_has_reason"),
    sa.CheckConstraint("state <> 'deleted' OR deleted_at IS NOT NULL", name="deleted_has_time"),
    sa.CheckConstraint("size IS NULL OR size >= 0", name="size_nonnegative"),
    sa.CheckConstraint("sha256 IS NULL OR length(sha256) = 32", name="sha256_length"),
    sa.CheckConstraint("fv_hash IS NULL OR length(fv_hash) = 32", name="fv_hash_length"),
    sa.CheckConstraint("m IS NULL OR (1 <= m AND m <= n AND n <= 255)", name="m_n_range"),
    sa.CheckConstraint("segment_bytes IS NULL OR segment_bytes > 0", name="segment_positive"),
    sa.CheckConstraint("key_wrap IS NULL OR encrypted", name="key_wrap_needs_encrypted"),
)

#: Clean-up after a crash scans pending versions by age; a partial index keeps that cheap and
#: tiny (only in-flight deposits are in it).
sa.Index(
    "ix_versions_pending_began_at",
    versions.c.began_at,
    sqlite_where=versions.c.state == "pending",
    postgresql_where=versions.c.state == "pending",
)

audit_log: Final = sa.Table(
    "audit_log",
    metadata,
    sa.Column("audit_id", _id_type(), primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    # Not a foreign key: the log also records attempts by ids that do not exist.
    sa.Column("user_id", sa.String(64), nullable=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("document_name", sa.String(255), nullable=True),
    sa.Column("version", sa.Integer(), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("details", sa.Text(), nullable=False),
    sa.Index("ix_audit_log_user_id_audit_id", "user_id", "audit_id"),
)
