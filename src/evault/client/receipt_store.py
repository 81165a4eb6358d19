"""The local receipt store: every receipt this client has verified, kept for later checks.

Paper §2.3: the client "stores a hash of the deposited document for verification purposes at
retrieval".  evault keeps the whole receipt (statement bytes and signature), so the hash it
trusts later is one the vault signed, and an exported receipt can be checked by anyone.

Only receipts that passed :func:`evault.client.receipts.verify_receipt` are put here; the store
does not verify again.  One SQLite file (WAL, ``synchronous=FULL``: a receipt is durable when
``put`` returns), schema version 1::

    receipts(vault, owner, name, version,             -- primary key
             size, sha256, deposited_at,              -- copies of the statement, for queries
             statement BLOB, signature BLOB,          -- the receipt itself
             source TEXT,                             -- deposit | vault | page
             stored_at TEXT)                          -- RFC 3339 UTC, when this client kept it

The store is safe to share between the threads of one process (one connection behind a lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from evault.client._sqlite import SqliteStore, in_chunks
from evault.client.receipts import Receipt

SCHEMA_VERSION: Final = 1
Source = Literal["deposit", "vault", "page"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS receipts (
    vault        TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    size         INTEGER NOT NULL,
    sha256       TEXT    NOT NULL,
    deposited_at TEXT    NOT NULL,
    statement    BLOB    NOT NULL,
    signature    BLOB    NOT NULL,
    source       TEXT    NOT NULL,
    stored_at    TEXT    NOT NULL,
    PRIMARY KEY (vault, owner, name, version)
);
CREATE INDEX IF NOT EXISTS receipts_by_name ON receipts (name, version);
"""


@dataclass(frozen=True)
class StoredReceipt:
    receipt: Receipt
    source: str
    stored_at: str

    @property
    def name(self) -> str:
        return self.receipt.statement.name

    @property
    def version(self) -> int:
        return self.receipt.statement.version


class ReceiptStore(SqliteStore):
    """Receipts by (vault, owner, name, version); see the module docstring."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, what="receipt store", schema=_SCHEMA, schema_version=SCHEMA_VERSION)

    def put(self, receipt: Receipt, source: Source, *, now: datetime | None = None) -> bool:
        """Keep a verified receipt; False if the very same receipt was already there.

        A different signed statement for the same (vault, owner, name, version) replaces the
        old one: both are signed by the vault, and the newer is the one that describes what the
        vault holds now (a version number can be given again after its version was deleted).
        """
        s = receipt.statement
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._cursor() as db:
            row = db.execute(
                "SELECT statement, signature FROM receipts "
                "WHERE vault=? AND owner=? AND name=? AND version=?",
                (s.vault, s.owner, s.name, s.version),
            ).fetchone()
            if row is not None and bytes(row[0]) == receipt.statement_bytes:
                return False
            db.execute(
                "INSERT OR REPLACE INTO receipts (vault, owner, name, version, size, sha256, "
                "deposited_at, statement, signature, source, stored_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    s.vault,
                    s.owner,
                    s.name,
                    s.version,
                    s.size,
                    s.sha256,
                    s.deposited_at,
                    receipt.statement_bytes,
                    receipt.signature,
                    source,
                    stamp,
                ),
            )
            return True

    def _rows(self, where: str, args: tuple[object, ...]) -> list[StoredReceipt]:
        with self._cursor() as db:
            rows = db.execute(
                "SELECT statement, signature, source, stored_at FROM receipts "
                f"WHERE {where} ORDER BY name, version, stored_at",
                args,
            ).fetchall()
        return [
            StoredReceipt(Receipt.from_parts(bytes(st), bytes(sig)), src, at)
            for st, sig, src, at in rows
        ]

    def get(self, owner: str | None, name: str, version: int) -> StoredReceipt | None:
        """The receipt of one version (the most recently kept if several vaults have one)."""
        if owner is None:
            found = self._rows("name=? AND version=?", (name, version))
        else:
            found = self._rows("owner=? AND name=? AND version=?", (owner, name, version))
        return max(found, key=lambda r: r.stored_at) if found else None

    def versions(self, owner: str | None, name: str) -> list[StoredReceipt]:
        """Every kept receipt of a document, oldest version first."""
        if owner is None:
            return self._rows("name=?", (name,))
        return self._rows("owner=? AND name=?", (owner, name))

    def latest(self, owner: str | None, name: str) -> StoredReceipt | None:
        found = self.versions(owner, name)
        return max(found, key=lambda r: (r.version, r.stored_at)) if found else None

    def all(self, owner: str | None = None) -> list[StoredReceipt]:
        if owner is None:
            return self._rows("1=1", ())
        return self._rows("owner=?", (owner,))

    def known_versions(self, owner: str, names: list[str]) -> set[tuple[str, int]]:
        """Which (name, version) pairs of ``names`` have a kept receipt (one query)."""
        if not names:
            return set()
        out: set[tuple[str, int]] = set()
        with self._cursor() as db:
            for chunk, marks in in_chunks(names):
                rows = db.execute(
                    f"SELECT name, version FROM receipts WHERE owner=? AND name IN ({marks})",
                    (owner, *chunk),
                ).fetchall()
                out.update((str(n), int(v)) for n, v in rows)
        return out
