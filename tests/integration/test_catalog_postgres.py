"""The catalog against the real PostgreSQL at 127.0.0.1:5432: what only a server can show.

Several gateways migrating one database at once, the pool surviving a server that drops its
connections, and schemas keeping catalogs apart.  (The whole catalog API also runs on
PostgreSQL in tests/unit/test_catalog.py.)  Skipped, with the reason, if no server answers.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from evault.catalog import Catalog
from evault.catalog import migrate as catalog_migrate
from evault.errors import CatalogError, NotFound
from tests.unit.test_catalog import (
    CHEAP_HASHER,
    PASSWORD,
    POSTGRES_URL,
    postgres_reachable,
    postgres_schema,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def server_url() -> str:
    reason = postgres_reachable()
    if reason is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 not reachable: {reason}")
    return POSTGRES_URL


@pytest.fixture
def schema(server_url: str) -> Iterator[str]:
    with postgres_schema(server_url) as name:
        yield name


def _admin() -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(POSTGRES_URL.replace("+psycopg", ""), autocommit=True)


def test_gateways_starting_together_migrate_once(server_url: str, schema: str) -> None:
    catalogs = [Catalog(server_url, schema=schema, password_hasher=CHEAP_HASHER) for _ in range(4)]
    barrier = threading.Barrier(len(catalogs))
    results: list[str | BaseException] = []

    def start(catalog: Catalog) -> None:
        barrier.wait()
        try:
            results.append(catalog.migrate())
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=start, args=(c,)) for c in catalogs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert results == [catalog_migrate.head_revision()] * len(catalogs)
        with catalogs[0].engine.connect() as conn:
            rows = conn.execute(
                sa.text(f"SELECT version_num FROM {catalog_migrate.VERSION_TABLE}")
            ).all()
        assert [r[0] for r in rows] == [catalog_migrate.head_revision()]
    finally:
        for c in catalogs:
            c.close()


def _drop_connections(application_name: str) -> int:
    with _admin() as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    return int(killed[0]) if killed else 0


def test_pool_recovers_when_the_server_drops_its_connections(server_url: str, schema: str) -> None:
    app = f"evault_test_{secrets.token_hex(4)}"
    catalog = Catalog(
        f"{server_url}?application_name={app}",
        schema=schema,
        pool_size=1,
        password_hasher=CHEAP_HASHER,
    )
    try:
        catalog.migrate()
        catalog.create_user("alice", PASSWORD, "Alice", "")
        assert catalog.get_user("alice").user_id == "alice"  # the pooled connection is warm
        assert _drop_connections(app) == 1
        # A read on the dead connection is retried once on a fresh one: the caller sees nothing.
        assert catalog.get_user("alice").user_id == "alice"
        assert _drop_connections(app) == 1
        # A write is not retried (it may have committed); it fails cleanly, and the next works.
        with pytest.raises(CatalogError, match="catalog database error"):
            catalog.issue_token("alice", ttl_s=60)
        token = catalog.issue_token("alice", ttl_s=60)
        assert catalog.resolve_token(token) == "alice"
    finally:
        catalog.close()


def test_schemas_keep_catalogs_apart(server_url: str, schema: str) -> None:
    with postgres_schema(server_url) as other_schema:
        first = Catalog(server_url, schema=schema, password_hasher=CHEAP_HASHER)
        second = Catalog(server_url, schema=other_schema, password_hasher=CHEAP_HASHER)
        try:
            first.migrate()
            second.migrate()
            first.create_user("alice", PASSWORD, "Alice", "")
            with pytest.raises(NotFound):
                second.get_user("alice")
            with _admin() as admin:
                tables = admin.execute(
                    "SELECT table_schema FROM information_schema.tables WHERE table_name = 'users'"
                    " AND table_schema IN (%s, %s, 'public')",
                    (schema, other_schema),
                ).fetchall()
            assert sorted(t[0] for t in tables) == sorted([schema, other_schema])
        finally:
            first.close()
            second.close()


def test_version_allocation_waits_for_the_row_lock(server_url: str, schema: str) -> None:
    # Hold the document's counter row locked from outside; begin_deposit must wait for it
    # (not read a stale counter), and get the number after the one the holder took.
    app = f"evault_test_{secrets.token_hex(4)}"
    catalog = Catalog(
        f"{server_url}?application_name={app}", schema=schema, password_hasher=CHEAP_HASHER
    )
    try:
        catalog.migrate()
        catalog.create_user("alice", PASSWORD, "Alice", "")
        assert catalog.begin_deposit("alice", "doc") == 1
        result: list[int] = []
        worker = threading.Thread(
            target=lambda: result.append(catalog.begin_deposit("alice", "doc"))
        )
        with _admin() as admin, _admin() as observer, admin.transaction():
            admin.execute(f'SET LOCAL search_path TO "{schema}"')
            admin.execute("UPDATE documents SET next_version = next_version + 1 WHERE name = 'doc'")
            worker.start()
            # Wait until the server itself reports the catalog's backend blocked on a lock.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                row = observer.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = %s AND wait_event_type = 'Lock'",
                    (app,),
                ).fetchone()
                if row and row[0] == 1:
                    break
            else:
                pytest.fail("begin_deposit never waited for the document's row lock")
            assert result == []
        worker.join(timeout=30)
        assert result == [3]
    finally:
        catalog.close()
