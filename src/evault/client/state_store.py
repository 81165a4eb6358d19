"""The backup state database: the "archive bit" of every file a backup deposited.

Implements :class:`evault.client.changes.ChangeStateStore` on SQLite (WAL, ``synchronous=FULL``,
so ``put`` is durable when it returns).  Keys are document names, scoped by the vault user, so
that two users backing up with one configuration never clear each other's bits.  Schema v1::

    file_state(owner, key,                 -- primary key; key is the document name
               size, mtime_ns, sha256 BLOB, recorded_ns)
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from evault.client.changes import FileState
from evault.errors import ConfigError

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


class SqliteChangeState:
    """One user's archive bits (a :class:`~evault.client.changes.ChangeStateStore`)."""

    def __init__(self, path: Path, owner: str) -> None:
        self.path = path
        self.owner = owner
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ConfigError(
                    f"backup state {path} has schema version {version}; this evault reads "
                    f"version {SCHEMA_VERSION}"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the backup state {path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteChangeState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise ConfigError(f"backup state {self.path}: {exc}") from None

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
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
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
