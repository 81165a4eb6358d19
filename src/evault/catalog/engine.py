"""One SQLAlchemy engine per catalog: URL handling, the connection pool, per-dialect set-up.

The paper's gateway opened a new DB2 connection for every request and measured that as its
bottleneck for small documents (§3).  The catalog therefore keeps a fixed pool of open
connections for the life of the process; ``pool_size=0`` turns the pool off (a new connection
per call) and exists only so that the benchmark can show the difference.

SQLite
    A file path or ``sqlite:///path``.  Every connection gets WAL journalling (readers never
    wait for the writer), ``foreign_keys=ON`` (off by default in SQLite), a busy time-out,
    and ``synchronous=FULL`` (a commit survives power loss, not just a crash: the catalog
    holds receipts).  The driver's own transaction handling is switched off and we issue
    ``BEGIN`` ourselves: ``BEGIN IMMEDIATE`` for transactions that write, so two writers queue
    on the busy time-out up front instead of failing half-way with "database is locked"; a
    plain (deferred) ``BEGIN`` for reads, which in WAL mode run beside the writer.
    In-memory databases are refused: each pooled connection would see a different one.

PostgreSQL
    ``postgresql://`` or ``postgresql+psycopg://`` (psycopg 3).  ``schema`` puts the catalog
    in its own schema through the connection's ``search_path``, so several catalogs (or test
    runs) can share one database.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool, QueuePool

#: Execution option read by the ``begin`` hook: the SQLite ``BEGIN`` flavour to use.
SQLITE_BEGIN_OPTION: Final = "evault_sqlite_begin"

DEFAULT_BUSY_TIMEOUT_MS: Final = 10_000
DEFAULT_POOL_TIMEOUT_S: Final = 30.0
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def catalog_url(url: str) -> URL:
    """Parse ``url``: a SQLAlchemy URL, or a plain file path meaning a SQLite database."""
    if not isinstance(url, str):
        raise TypeError(f"url: expected str, got {type(url).__name__}")
    if not url:
        raise ValueError("url: must not be empty")
    if "://" not in url:
        return URL.create("sqlite", database=url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"url: not a database URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        # psycopg 3 is the driver we ship; SQLAlchemy's default for postgresql:// is psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"url: only sqlite and postgresql are supported, not {backend!r}")
    if backend == "sqlite" and (
        parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"
    ):
        raise ValueError("url: an in-memory SQLite database cannot be shared by a pool; use a file")
    return parsed


def create_catalog_engine(
    url: str,
    *,
    pool_size: int,
    schema: str | None = None,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    pool_timeout_s: float = DEFAULT_POOL_TIMEOUT_S,
) -> Engine:
    """Build the engine for ``url`` with the pool and per-connection settings described above."""
    if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 0:
        raise ValueError(f"pool_size: expected an int >= 0, got {pool_size!r}")
    if not isinstance(busy_timeout_ms, int) or busy_timeout_ms < 0:
        raise ValueError(f"busy_timeout_ms: expected an int >= 0, got {busy_timeout_ms!r}")
    parsed = catalog_url(url)
    pool_args: dict[str, Any]
    if pool_size == 0:
        pool_args = {"poolclass": NullPool}
    else:
        # max_overflow=0: the pool is a hard bound on connections; extra callers wait their
        # turn (pool_timeout_s) instead of opening connections the pool would then discard.
        pool_args = {
            "poolclass": QueuePool,
            "pool_size": pool_size,
            "max_overflow": 0,
            "pool_timeout": pool_timeout_s,
        }
    if parsed.get_backend_name() == "sqlite":
        if schema is not None:
            raise ValueError("schema: only PostgreSQL catalogs have schemas")
        engine = sa.create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
            **pool_args,
        )
        _install_sqlite_hooks(engine, busy_timeout_ms)
        return engine
    connect_args: dict[str, Any] = {"connect_timeout": 10}
    if "application_name" not in parsed.query:
        # Lets an operator tell the catalog's connections apart in pg_stat_activity.
        connect_args["application_name"] = "evault-catalog"
    if schema is not None:
        if not isinstance(schema, str) or _SCHEMA.fullmatch(schema) is None:
            raise ValueError(f"schema: expected a lower-case SQL identifier, got {schema!r}")
        connect_args["options"] = f"-c search_path={schema}"
    return sa.create_engine(parsed, connect_args=connect_args, **pool_args)


def _install_sqlite_hooks(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Autocommit at the driver level; the "begin" hook below opens transactions itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"{SQLITE_BEGIN_OPTION}: unknown mode {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")
