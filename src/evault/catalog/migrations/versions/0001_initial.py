"""Initial catalog: users, tokens, documents, versions, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Written by hand and frozen: it must create exactly what ``evault.catalog.schema`` described
at this revision (a test compares them), and must never change once released.  Later changes
are new revisions.  Constraint names are spelled out in full and wrapped in ``op.f`` ("final"),
so Alembic does not apply the naming convention to them a second time.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _id_type() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _instant() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("contact", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("identity_public_key", sa.LargeBinary(), nullable=True),
        sa.Column("unwrap_public_key", sa.LargeBinary(), nullable=True),
        sa.Column("unwrap_commitments", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_users")),
        sa.CheckConstraint("user_id = lower(user_id)", name=op.f("ck_users_user_id_lower")),
        sa.CheckConstraint(
            "identity_public_key IS NULL OR length(identity_public_key) = 32",
            name=op.f("ck_users_identity_key_length"),
        ),
    )
    op.create_table(
        "tokens",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("issued_at", _instant(), nullable=False),
        sa.Column("expires_at", _instant(), nullable=False),
        sa.Column("revoked_at", _instant(), nullable=True),
        sa.Column("last_used_at", _instant(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_tokens")),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.user_id"],
            name=op.f("fk_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("length(token_hash) = 32", name=op.f("ck_tokens_token_hash_length")),
        sa.CheckConstraint("kind IN ('api', 'session')", name=op.f("ck_tokens_kind")),
        sa.CheckConstraint("expires_at > issued_at", name=op.f("ck_tokens_expires_after_issue")),
    )
    op.create_index(op.f("ix_tokens_user_id"), "tokens", ["user_id"])
    op.create_table(
        "documents",
        sa.Column("document_id", _id_type(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("next_version", sa.Integer(), nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.PrimaryKeyConstraint("document_id", name=op.f("pk_documents")),
        sa.ForeignKeyConstraint(
            ["owner"], ["users.user_id"], name=op.f("fk_documents_owner_users")
        ),
        sa.UniqueConstraint("owner", "name", name=op.f("uq_documents_owner_name")),
        sa.CheckConstraint("next_version >= 1", name=op.f("ck_documents_next_version_positive")),
    )
    op.create_table(
        "versions",
        sa.Column("document_id", _id_type(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("began_at", _instant(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.LargeBinary(), nullable=True),
        sa.Column("fv_hash", sa.LargeBinary(), nullable=True),
        sa.Column("codec_id", sa.String(64), nullable=True),
        sa.Column("m", sa.Integer(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=True),
        sa.Column("segment_bytes", sa.Integer(), nullable=True),
        sa.Column("statement", sa.LargeBinary(), nullable=True),
        sa.Column("signature", sa.LargeBinary(), nullable=True),
        sa.Column("deposited_at", _instant(), nullable=True),
        sa.Column("completed_at", _instant(), nullable=True),
        sa.Column("failed_at", _instant(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("deleted_at", _instant(), nullable=True),
        sa.Column("encrypted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("key_wrap", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("document_id", "version", name=op.f("pk_versions")),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.document_id"],
            name=op.f("fk_versions_document_id_documents"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_versions_version_positive")),
        sa.CheckConstraint(
            "state IN ('pending', 'stored', 'failed', 'deleted')", name=op.f("ck_versions_state")
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'failed') OR ("
            "size IS NOT NULL AND sha256 IS NOT NULL AND fv_hash IS NOT NULL"
            " AND codec_id IS NOT NULL AND m IS NOT NULL AND n IS NOT NULL"
            " AND segment_bytes IS NOT NULL AND statement IS NOT NULL AND signature IS NOT NULL"
            " AND deposited_at IS NOT NULL AND completed_at IS NOT NULL)",
            name=op.f("ck_versions_stored_has_receipt"),
        ),
        sa.CheckConstraint(
            "state <> 'failed' OR failure_reason IS NOT NULL",
            name=op.f("ck_versions_failed_has_reason"),
        ),
        sa.CheckConstraint(
            "state <> 'deleted' OR deleted_at IS NOT NULL",
            name=op.f("ck_versions_deleted_has_time"),
        ),
        sa.CheckConstraint("size IS NULL OR size >= 0", name=op.f("ck_versions_size_nonnegative")),
        sa.CheckConstraint(
            "sha256 IS NULL OR length(sha256) = 32", name=op.f("ck_versions_sha256_length")
        ),
        sa.CheckConstraint(
            "fv_hash IS NULL OR length(fv_hash) = 32", name=op.f("ck_versions_fv_hash_length")
        ),
        sa.CheckConstraint(
            "m IS NULL OR (1 <= m AND m <= n AND n <= 255)", name=op.f("ck_versions_m_n_range")
        ),
        sa.CheckConstraint(
            "segment_bytes IS NULL OR segment_bytes > 0", name=op.f("ck_versions_segment_positive")
        ),
        sa.CheckConstraint(
            "key_wrap IS NULL OR encrypted", name=op.f("ck_versions_key_wrap_needs_encrypted")
        ),
    )
    op.create_index(
        op.f("ix_versions_pending_began_at"),
        "versions",
        ["began_at"],
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "audit_log",
        sa.Column("audit_id", _id_type(), autoincrement=True, nullable=False),
        sa.Column("at", _instant(), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("document_name", sa.String(255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("audit_id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_user_id_audit_id"), "audit_log", ["user_id", "audit_id"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_index(op.f("ix_versions_pending_began_at"), table_name="versions")
    op.drop_table("versions")
    op.drop_table("documents")
    op.drop_index(op.f("ix_tokens_user_id"), table_name="tokens")
    op.drop_table("tokens")
    op.drop_table("users")
