"""The SQLite point reads (evault.catalog.fastread) return exactly what the engine returns."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BinaryExpression

from evault.catalog import Catalog, ReceiptRecord, schema
from evault.catalog.catalog import _LATEST_VERSION, _ONE_VERSION, _TOKEN_LOOKUP, _fetch_version
from evault.catalog.schema import versions
from evault.errors import AuthFailed, CatalogError, NotFound
from tests.unit.test_catalog import (
    CHEAP_HASHER,
    T0,
    FakeClock,
    make_user,
    receipt_fields,
    receipt_of,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def catalog(tmp_path: Path, clock: FakeClock) -> Catalog:
    cat = Catalog(str(tmp_path / "catalog.db"), password_hasher=CHEAP_HASHER, clock=clock)
    cat.migrate()
    return cat


def _engine_version(catalog: Catalog, owner: str, name: str, version: int | None) -> object:
    with catalog.engine.connect() as conn:
        return _fetch_version(conn, owner, name, version, state="stored")


def test_the_fast_path_is_the_one_used_on_a_sqlite_file(catalog: Catalog) -> None:
    assert catalog._fast is not None and catalog.point_reads_inline
    # PostgreSQL reads go through the engine (nothing connects until the first call), and
    # the gateway keeps them off its event loop.
    remote = Catalog("postgresql://postgres@127.0.0.1:5432/test")
    assert remote._fast is None and not remote.point_reads_inline


def test_versions_read_fast_equal_the_engine_rows(catalog: Catalog, clock: FakeClock) -> None:
    make_user(catalog)
    first = catalog.begin_deposit("alice", "a/b.txt")
    catalog.complete_deposit("alice", "a/b.txt", first, receipt_of(b"one"))
    clock.advance(90)
    second = catalog.begin_deposit("alice", "a/b.txt")
    fields = receipt_fields(b"two", when=T0 + timedelta(seconds=90))
    receipt = ReceiptRecord(**fields, encrypted=True, key_wrap=b"\x00wrap\xff")
    catalog.complete_deposit("alice", "a/b.txt", second, receipt)
    for version in (None, 1, 2):
        fast = catalog.get_version("alice", "a/b.txt", version)
        assert fast == _engine_version(catalog, "alice", "a/b.txt", version)
        assert fast.deposited_at.tzinfo is not None
    latest = catalog.get_version("alice", "a/b.txt")
    assert (latest.version, latest.encrypted, latest.key_wrap) == (2, True, b"\x00wrap\xff")
    assert catalog.get_version("alice", "a/b.txt", 1).encrypted is False
    with pytest.raises(NotFound):
        catalog.get_version("alice", "a/b.txt", 3)
    with pytest.raises(NotFound):
        catalog.get_version("bob", "a/b.txt")


def test_a_pending_version_is_not_read_and_a_committed_one_is_seen_at_once(
    catalog: Catalog,
) -> None:
    make_user(catalog)
    version = catalog.begin_deposit("alice", "doc")
    with pytest.raises(NotFound):
        catalog.get_version("alice", "doc")
    catalog.complete_deposit("alice", "doc", version, receipt_of(b"x"))
    assert catalog.get_version("alice", "doc").version == version


def test_token_rows_read_fast_equal_the_engine_rows(catalog: Catalog, clock: FakeClock) -> None:
    make_user(catalog)
    token = catalog.issue_token("alice", ttl_s=60)
    catalog.touch_token(token)
    from evault.catalog.catalog import _token_hash

    params = {"token_hash": _token_hash(token)}
    with catalog.engine.connect() as conn:
        engine_row = conn.execute(_TOKEN_LOOKUP, params).first()
    assert catalog._fast is not None
    fast_row = catalog._fast.first(catalog._fast_reads["token"], params)
    assert engine_row is not None and tuple(fast_row) == tuple(engine_row)
    assert fast_row.expires_at == T0 + timedelta(seconds=60)
    clock.advance(60)
    with pytest.raises(AuthFailed):
        catalog.lookup_token(token)  # expired


def test_each_thread_reads_on_its_own_connection(catalog: Catalog) -> None:
    make_user(catalog)
    token = catalog.issue_token("alice", ttl_s=60)
    seen: list[str] = []

    def read() -> None:
        seen.append(catalog.lookup_token(token).user_id)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == ["alice"] * 4
    assert catalog._fast is not None and len(catalog._fast._connections) == 4


def test_a_missing_schema_is_a_catalog_error_and_close_ends_the_fast_path(
    tmp_path: Path,
) -> None:
    bare = Catalog(str(tmp_path / "never-migrated.db"), password_hasher=CHEAP_HASHER)
    with pytest.raises(CatalogError, match="run the migrations"):
        bare.lookup_token("some-token")
    bare.close()
    with pytest.raises(CatalogError, match="closed"):
        bare.lookup_token("some-token")


def _partial_index_columns() -> set[sa.Column[Any]]:
    """Columns named in the condition of a partial index of the catalog's schema."""
    columns: set[sa.Column[Any]] = set()
    for table in schema.metadata.tables.values():
        for index in table.indexes:
            for dialect in ("sqlite", "postgresql"):
                condition = index.dialect_options[dialect].get("where")
                if condition is not None:
                    columns.update(
                        c for c in visitors.iterate(condition) if isinstance(c, sa.Column)
                    )
    return columns


def test_no_point_read_binds_a_value_against_a_partial_index_condition(
    catalog: Catalog,
) -> None:
    # SQLite re-prepares a statement before every run when a bound value is compared with a
    # column a partial index's condition names: that made each version look-up ~10x dearer.
    conditioned = _partial_index_columns()
    assert versions.c.state in conditioned  # the pending-deposits index; the check has teeth
    assert catalog._fast is not None
    statements = [_TOKEN_LOOKUP, *_LATEST_VERSION.values(), *_ONE_VERSION.values()]
    for statement in statements:
        for element in visitors.iterate(statement):
            if isinstance(element, BinaryExpression):
                sides = (element.left, element.right)
                bound = any(isinstance(side, sa.BindParameter) for side in sides)
                assert not (bound and any(side in conditioned for side in sides)), str(element)
    # And the compiled SQL the fast path runs says the state outright.
    for key in ("latest", "one"):
        assert "versions.state = 'stored'" in catalog._fast_reads[key].sql


def test_deleted_versions_are_looked_up_with_their_own_statement(
    catalog: Catalog, clock: FakeClock
) -> None:
    make_user(catalog)
    version = catalog.begin_deposit("alice", "gone.txt")
    catalog.complete_deposit("alice", "gone.txt", version, receipt_of(b"x"))
    with catalog.engine.connect() as conn:
        assert _fetch_version(conn, "alice", "gone.txt", None, state="stored").version == version
        with pytest.raises(NotFound):
            _fetch_version(conn, "alice", "gone.txt", None, state="deleted")
