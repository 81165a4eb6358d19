"""evault.catalog: the gateway-side database (DESIGN §8, §9).

Users and their Argon2id password hashes, bearer tokens (API and browser sessions), documents,
their versions with receipts, and an audit log; SQLAlchemy Core on SQLite (default) or
PostgreSQL, with Alembic migrations shipped in the package.  ``docs/spec/catalog.md`` is the
schema and the migration policy.

    >>> catalog = Catalog("catalog.db")          # doctest: +SKIP
    >>> catalog.migrate()                        # doctest: +SKIP
"""

from evault.catalog.catalog import Catalog
from evault.catalog.names import canonical_user_id, validate_document_name
from evault.catalog.records import (
    AuditRecord,
    DocumentSummary,
    PendingVersion,
    ReceiptRecord,
    RestoreResult,
    TokenKind,
    UserRecord,
    VersionRecord,
    VersionState,
)

__all__ = [
    "AuditRecord",
    "Catalog",
    "DocumentSummary",
    "PendingVersion",
    "ReceiptRecord",
    "RestoreResult",
    "TokenKind",
    "UserRecord",
    "VersionRecord",
    "VersionState",
    "canonical_user_id",
    "validate_document_name",
]
