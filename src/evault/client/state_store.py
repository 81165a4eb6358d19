"""The backup state database: the "archive bit" of every file a backup deposited.

Implements :class:`evault.client.changes.ChangeStateStore` on SQLite (WAL, ``synchronous=FULL``,
so ``put`` is durable when it returns).  Keys are document names, scoped by the vault user, so
that two users backing up with one configuration never clear each other's bits.  Schema v1::

    file_state(owner, key,                 -- primary key; key is the document name
               size, mtime_ns, sha256 BLOB, recorded_ns)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from evault.client._sqlite import SqliteStore, in_chunks
from evault.client.changes import FileState

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS file_state (
    owner       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    sha256      BLOB    NOT NULL,
    recorded_ns INTEGER,
    PRIMARY KEY (owner, key)
);
"""


class SqliteChangeState(SqliteStore):
    """One user's archive bits (a :class:`~evault.client.changes.ChangeStateStore`)."""

    def __init__(self, path: Path, owner: str) -> None:
        super().__init__(path, what="backup state", schema=_SCHEMA, schema_version=SCHEMA_VERSION)
        self.owner = owner

    @staticmethod
    def _state(row: tuple[int, int, bytes, int | None]) -> FileState:
        size, mtime_ns, sha256, recorded_ns = row
        return FileState(int(size), int(mtime_ns), bytes(sha256), recorded_ns)

    def get(self, key: str) -> FileState | None:
        with self._cursor() as db:
            row = db.execute(
                "SELECT size, mtime_ns, sha256, recorded_ns FROM file_state "
                "WHERE owner=? AND key=?",
                (self.owner, key),
            ).fetchone()
        return None if row is None else self._state(row)

    def get_many(self, keys: Iterable[str]) -> Mapping[str, FileState]:
        wanted = list(dict.fromkeys(keys))
        out: dict[str, FileState] = {}
        with self._cursor() as db:
            for chunk, marks in in_chunks(wanted):
                rows = db.execute(
                    "SELECT key, size, mtime_ns, sha256, recorded_ns FROM file_state "
                    f"WHERE owner=? AND key IN ({marks})",
                    (self.owner, *chunk),
                ).fetchall()
                for key, *rest in rows:
                    out[str(key)] = self._state((rest[0], rest[1], rest[2], rest[3]))
        return out

    def keys_under(self, prefix: str) -> Iterable[str]:
        # substr() instead of LIKE: a document name may hold '%' or '_'.
        with self._cursor() as db:
            rows = db.execute(
                "SELECT key FROM file_state WHERE owner=? AND substr(key, 1, ?)=? ORDER BY key",
                (self.owner, len(prefix), prefix),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def put(self, key: str, state: FileState) -> None:
        with self._cursor() as db:
            db.execute(
                "INSERT OR REPLACE INTO file_state (owner, key, size, mtime_ns, sha256, "
                "recorded_ns) VALUES (?, ?, ?, ?, ?, ?)",
                (self.owner, key, state.size, state.mtime_ns, state.sha256, state.recorded_ns),
            )

    def forget(self, key: str) -> None:
        with self._cursor() as db:
            db.execute("DELETE FROM file_state WHERE owner=? AND key=?", (self.owner, key))
