"""Point reads on a SQLite catalog without SQLAlchemy's per-call machinery.

Every retrieval looks up its bearer token and its version: two one-row reads by key.  Through
SQLAlchemy (pool check-out, a transaction, parameter and result processing in Python) each
costs ~0.2 ms of CPU on this project's 2-core machine; the same SQL through ``sqlite3`` costs
~0.01 ms.  On small retrievals that difference was a tenth of the gateway's CPU.

:class:`SqlitePointReads` runs SQLAlchemy statements that were compiled once, for the engine's
own dialect, on one plain ``sqlite3`` connection per thread (opened lazily, ``query_only``,
the catalog's busy time-out), and converts each column with the result processor SQLAlchemy
itself would use for its type (``UtcDateTime``, booleans, ...): the rows are the rows the
engine would return.  Each ``SELECT`` runs in autocommit mode, so it sees every transaction
committed before it (WAL: readers never wait for the writer).  Writes never come here.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import namedtuple
from collections.abc import Callable, Mapping
from typing import Any, Final

import sqlalchemy as sa

#: Names of the per-thread connection attribute.
_ATTRIBUTE: Final = "connection"


class PreparedRead:
    """One SELECT compiled for SQLite: its SQL, the order of its parameters, its defaults,
    and one result processor per column."""

    def __init__(self, statement: sa.Select[Any], dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if compiled.positiontup is None:
            raise ValueError("expected a dialect with positional parameters (SQLite's qmark)")
        self.sql: str = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup)
        self.defaults: dict[str, Any] = dict(compiled.params)
        columns = list(statement.selected_columns)
        self.processors: tuple[Callable[[Any], Any] | None, ...] = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )
        self.row_type: Any = namedtuple("Row", [column.key for column in columns])  # type: ignore[misc]

    def arguments(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(params[name] if name in params else self.defaults[name] for name in self.names)

    def row(self, raw: tuple[Any, ...]) -> Any:
        return self.row_type(
            *(
                value if p is None else p(value)
                for p, value in zip(self.processors, raw, strict=True)
            )
        )


class SqlitePointReads:
    """Runs :class:`PreparedRead` statements on a per-thread ``sqlite3`` connection."""

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, _ATTRIBUTE, None)
        if conn is not None:
            return conn
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError("the catalog is closed")
            # check_same_thread=False only so that close() may close it from another thread;
            # it is used by its own thread alone.
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            self._connections.append(conn)
        conn.execute("PRAGMA query_only=ON")
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        setattr(self._local, _ATTRIBUTE, conn)
        return conn

    def first(self, read: PreparedRead, params: Mapping[str, Any]) -> Any | None:
        """The first row of ``read`` with ``params`` (processed like SQLAlchemy's), or None."""
        raw = self._connection().execute(read.sql, read.arguments(params)).fetchone()
        return None if raw is None else read.row(raw)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
