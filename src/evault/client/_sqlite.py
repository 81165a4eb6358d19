"""The SQLite file behind each of the client's local stores (receipts, backup state).

Both stores want the same things of it, so they are written once here: WAL with
``synchronous=FULL`` (a write is durable when it returns), a schema version in
``user_version`` that refuses files of another version, one connection shared by the threads
of one process behind a lock, and every ``sqlite3.Error`` turned into a ConfigError that names
the store (``what``) and its file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from evault.errors import ConfigError


class SqliteStore:
    """Base of a store kept in one SQLite file, opened and its schema created on construction
    (module docstring); subclasses add the queries, each inside ``with self._cursor()``."""

    def __init__(self, path: Path, *, what: str, schema: str, schema_version: int) -> None:
        self.path = path
        self._what = what
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, schema_version):
                raise ConfigError(
                    f"{what} {path} has schema version {version}; this evault reads "
                    f"version {schema_version}"
                )
            self._db.executescript(schema)
            self._db.execute(f"PRAGMA user_version={schema_version}")
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the {what} {path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Connection]:
        """The connection, held alone for the ``with`` block."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise ConfigError(f"{self._what} {self.path}: {exc}") from None


def in_chunks(values: list[str], size: int = 500) -> Iterator[tuple[list[str], str]]:
    """``values`` in slices of at most ``size``, each with its ``?,?,...`` placeholders: an
    ``IN (...)`` query per slice stays under SQLite's limit on bound parameters."""
    for i in range(0, len(values), size):
        chunk = values[i : i + size]
        yield chunk, ",".join("?" * len(chunk))
