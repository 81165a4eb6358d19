"""Catalog tests, run on SQLite and on the real PostgreSQL at 127.0.0.1:5432.

Every test taking the ``backend`` or ``catalog`` fixture runs twice: on a SQLite file in
``tmp_path`` and (marked ``postgres``) in a throwaway PostgreSQL schema ``evault_test_<random>``
that is dropped afterwards.  Without a reachable server the PostgreSQL half is skipped with the
reason shown by ``pytest -ra``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from argon2 import PasswordHasher

from evault.catalog import Catalog, ReceiptRecord, VersionRecord, validate_document_name
from evault.catalog import migrate as catalog_migrate
from evault.catalog.schema import metadata, tokens, users
from evault.errors import (
    AuthFailed,
    BadName,
    BadPassword,
    CatalogError,
    EvaultError,
    NotFound,
    UserExists,
    WrongState,
)

POSTGRES_URL = os.environ.get(
    "EVAULT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
#: Argon2id with the smallest parameters argon2-cffi accepts: tests stay fast, the code path
#: (hash, verify, needs-rehash) is the production one.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery staple"
T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand (thread-safe enough: reads of one attribute)."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def postgres_reachable(url: str = POSTGRES_URL) -> str | None:
    """None if the server answers, else the reason it does not."""
    try:
        psycopg.connect(url.replace("+psycopg", ""), connect_timeout=3).close()
    except Exception as exc:  # any failure means: skip, and say why
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return None


@contextmanager
def postgres_schema(url: str = POSTGRES_URL) -> Iterator[str]:
    """A fresh schema name; the schema (created by ``Catalog.migrate``) is dropped at exit."""
    schema = f"evault_test_{secrets.token_hex(6)}"
    try:
        yield schema
    finally:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@dataclass
class Backend:
    """Where a test's catalog lives; ``open`` makes more catalogs on the same database (as
    several gateway processes would)."""

    name: str
    url: str
    schema: str | None
    clock: FakeClock = field(default_factory=FakeClock)
    opened: list[Catalog] = field(default_factory=list)

    def open(self, **kwargs: Any) -> Catalog:
        kwargs.setdefault("password_hasher", CHEAP_HASHER)
        kwargs.setdefault("clock", self.clock)
        catalog = Catalog(self.url, schema=self.schema, **kwargs)
        self.opened.append(catalog)
        return catalog

    def close_all(self) -> None:
        for catalog in self.opened:
            catalog.close()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    reason = postgres_reachable()
    if reason is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 not reachable: {reason}")
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        b = Backend("sqlite", str(tmp_path / "catalog.db"), None)
        yield b
        b.close_all()
        return
    url = request.getfixturevalue("postgres_url")
    with postgres_schema(url) as schema:
        b = Backend("postgresql", url, schema)
        try:
            yield b
        finally:
            b.close_all()


@pytest.fixture
def catalog(backend: Backend) -> Catalog:
    cat = backend.open()
    cat.migrate()
    return cat


def make_user(catalog: Catalog, user_id: str = "alice") -> str:
    catalog.create_user(user_id, PASSWORD, f"{user_id.title()} Example", f"{user_id}@example.org")
    return user_id.lower()


def receipt_fields(content: bytes, when: datetime = T0) -> dict[str, Any]:
    """Plausible receipt facts for ``content`` (the catalog stores them, it does not check)."""
    return {
        "size": len(content),
        "sha256": hashlib.sha256(content).digest(),
        "fv_hash": hashlib.sha256(b"fv" + content).digest(),
        "codec_id": "rs-isal-cauchy/v1",
        "m": 3,
        "n": 5,
        "segment_bytes": 1 << 20,
        "statement": b'{"type":"evault.receipt-statement","v":1}' + content[:8],
        "signature": secrets.token_bytes(384),
        "deposited_at": when,
    }


def receipt_of(content: bytes, when: datetime = T0, **override: Any) -> ReceiptRecord:
    """``receipt_fields`` as the record the catalog takes, with ``override`` applied."""
    return ReceiptRecord(**(receipt_fields(content, when) | override))


def deposit(catalog: Catalog, owner: str, name: str, content: bytes = b"hello") -> VersionRecord:
    version = catalog.begin_deposit(owner, name)
    return catalog.complete_deposit(owner, name, version, receipt_of(content))


def all_rows(catalog: Catalog) -> list[tuple[Any, ...]]:
    with catalog.engine.connect() as conn:
        return [
            tuple(row) for table in metadata.sorted_tables for row in conn.execute(table.select())
        ]


# -- migrations -------------------------------------------------------------------------------


def test_migrate_is_idempotent_and_matches_schema_module(backend: Backend) -> None:
    catalog = backend.open()
    assert catalog.schema_revision() is None
    head = catalog_migrate.head_revision()
    assert catalog.migrate() == head
    assert catalog.migrate() == head  # second run: nothing to do, no error
    assert backend.open().migrate() == head  # and from another process-like catalog
    assert catalog.schema_revision() == head
    with catalog.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "version_table": catalog_migrate.VERSION_TABLE,
            },
        )
        assert compare_metadata(context, metadata) == []
        # Alembic does not compare CHECK constraints; names are enough to catch a missing one.
        inspector = sa.inspect(conn)
        for table in metadata.sorted_tables:
            declared = {str(c.name) for c in table.constraints if isinstance(c, sa.CheckConstraint)}
            present = {c["name"] for c in inspector.get_check_constraints(table.name)}
            assert declared == present, table.name


def test_downgrade_to_base_then_upgrade_again(backend: Backend) -> None:
    catalog = backend.open()
    catalog.migrate()
    make_user(catalog)
    catalog_migrate.downgrade(catalog.engine, revision="base", schema=backend.schema)
    assert catalog.schema_revision() is None
    with catalog.engine.connect() as conn:
        assert not sa.inspect(conn).has_table("users")
    catalog.migrate()
    make_user(catalog)  # the table is back, and empty


def test_unmigrated_catalog_says_to_run_migrations(backend: Backend) -> None:
    catalog = backend.open()
    with pytest.raises(CatalogError, match="run the migrations"):
        catalog.get_user("alice")


def test_database_revision_unknown_to_this_code_is_a_clear_error(backend: Backend) -> None:
    catalog = backend.open()
    catalog.migrate()
    with catalog.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {catalog_migrate.VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(CatalogError, match="newer evault"):
        catalog.migrate()


def test_one_pool_of_persistent_connections(backend: Backend) -> None:
    # The paper's bottleneck (§3): a new DB connection per request.  50 calls from one thread
    # must reuse one pooled connection, and 4 threads at most pool_size of them.
    catalog = backend.open(pool_size=3)
    connects = 0

    @sa.event.listens_for(catalog.engine, "connect")
    def _count(*_args: Any) -> None:
        nonlocal connects
        connects += 1

    catalog.migrate()
    make_user(catalog)
    for _ in range(50):
        catalog.get_user("alice")
    assert connects == 1

    def hammer() -> None:
        for _ in range(25):
            catalog.get_user("alice")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= connects <= 3


def test_pool_size_zero_opens_a_connection_per_call(backend: Backend) -> None:
    catalog = backend.open(pool_size=0)
    catalog.migrate()
    connects = 0

    @sa.event.listens_for(catalog.engine, "connect")
    def _count(*_args: Any) -> None:
        nonlocal connects
        connects += 1

    make_user(catalog)
    for _ in range(5):
        catalog.get_user("alice")
    assert connects == 6


# -- users and passwords ----------------------------------------------------------------------


def test_create_user_folds_case_and_refuses_duplicates(catalog: Catalog) -> None:
    catalog.create_user("Alice.B-1", PASSWORD, "Alice B", "alice@example.org")
    user = catalog.get_user("ALICE.b-1")
    assert (user.user_id, user.name, user.contact) == ("alice.b-1", "Alice B", "alice@example.org")
    assert user.created_at == T0
    assert user.identity_public_key is None
    with pytest.raises(UserExists) as info:
        catalog.create_user("alice.B-1", "another password", "Other", "")
    assert info.value.code == "user_exists"
    assert catalog.recent_audit(1)[0].action == "user_create"


def test_identity_public_key_is_stored(catalog: Catalog) -> None:
    key = bytes(range(32))
    catalog.create_user("carol", PASSWORD, "Carol", "", identity_public_key=key)
    assert catalog.get_user("carol").identity_public_key == key
    with pytest.raises(ValueError, match="identity_public_key"):
        catalog.create_user("dave", PASSWORD, "Dave", "", identity_public_key=b"short")


@pytest.mark.parametrize(
    ("user_id", "name", "contact"),
    [
        ("al", "Al", ""),  # too short
        ("a" * 65, "A", ""),  # too long
        ("-alice", "Alice", ""),  # must start with a letter or digit
        ("ali ce", "Alice", ""),
        ("\u212aim", "Kim", ""),  # Kelvin sign: would fold to "kim"
        ("alice", "", ""),  # empty full name
        ("alice", "Alice\nRoot", ""),  # control character
        ("alice", "Alice", " a@example.org"),  # leading space
        ("alice", "A" * 201, ""),
    ],
)
def test_create_user_rejects_bad_fields(
    catalog: Catalog, user_id: str, name: str, contact: str
) -> None:
    with pytest.raises(BadName) as info:
        catalog.create_user(user_id, PASSWORD, name, contact)
    assert info.value.code == "bad_name"


@pytest.mark.parametrize("password", ["short", "x" * 1025])
def test_create_user_rejects_bad_passwords(catalog: Catalog, password: str) -> None:
    with pytest.raises(BadPassword) as info:
        catalog.create_user("alice", password, "Alice", "")
    assert info.value.code == "bad_password"
    assert password not in str(info.value)
    with pytest.raises(NotFound):
        catalog.get_user("alice")


def test_password_is_stored_only_as_an_argon2id_hash(backend: Backend, catalog: Catalog) -> None:
    make_user(catalog)
    catalog.authenticate("alice", PASSWORD)
    with catalog.engine.connect() as conn:
        stored = conn.execute(sa.select(users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$v=19$")
    rows = repr(all_rows(catalog))
    assert PASSWORD not in rows
    assert PASSWORD.encode().hex() not in rows
    if backend.name == "sqlite":
        catalog.close()
        for path in Path(backend.url).parent.glob("catalog.db*"):
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_authenticate(catalog: Catalog) -> None:
    make_user(catalog)
    assert catalog.authenticate("ALICE", PASSWORD) == "alice"
    with pytest.raises(AuthFailed) as wrong:
        catalog.authenticate("alice", PASSWORD + "!")
    with pytest.raises(AuthFailed) as unknown:
        catalog.authenticate("mallory", PASSWORD)
    with pytest.raises(AuthFailed) as malformed:
        catalog.authenticate("x", PASSWORD)
    with pytest.raises(AuthFailed):
        catalog.authenticate("alice", "y" * 5000)
    # One message, one code: the answer does not tell which part was wrong.
    assert str(wrong.value) == str(unknown.value) == str(malformed.value)
    assert wrong.value.code == unknown.value.code == "auth_failed"
    audit = catalog.recent_audit(10)
    logins = [(a.user_id, a.outcome, a.details.get("reason")) for a in audit if a.action == "login"]
    assert logins[-1] == ("alice", "ok", None)
    assert ("alice", "denied", "wrong password") in logins
    assert (None, "denied", "unknown user id") in logins


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verifications += 1
        return super().verify(hash, password)


def test_unknown_user_costs_a_verification_like_a_known_one(backend: Backend) -> None:
    hasher = CountingHasher()
    catalog = backend.open(password_hasher=hasher)
    catalog.migrate()
    make_user(catalog)
    for user_id in ("alice", "mallory", "no"):
        before = hasher.verifications
        with pytest.raises(AuthFailed):
            catalog.authenticate(user_id, "not the password")
        assert hasher.verifications == before + 1, user_id


def test_login_rehashes_when_parameters_changed(backend: Backend, catalog: Catalog) -> None:
    make_user(catalog)
    stronger = backend.open(
        password_hasher=PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    )
    assert stronger.authenticate("alice", PASSWORD) == "alice"
    with catalog.engine.connect() as conn:
        stored = conn.execute(sa.select(users.c.password_hash)).scalar_one()
    assert "$m=16,t=2,p=1$" in stored
    assert catalog.recent_audit(1)[0].details == {"rehashed": True}
    assert stronger.authenticate("alice", PASSWORD) == "alice"
    assert stronger.recent_audit(1)[0].details == {}  # no second rehash


# -- tokens -----------------------------------------------------------------------------------


def test_token_round_trip_and_only_its_hash_is_stored(catalog: Catalog) -> None:
    make_user(catalog)
    token = catalog.issue_token("Alice", ttl_s=3600)
    assert len(token) >= 43
    assert catalog.resolve_token(token) == "alice"
    with catalog.engine.connect() as conn:
        (stored,) = conn.execute(sa.select(tokens.c.token_hash)).scalars().all()
    assert stored == hashlib.sha256(token.encode()).digest()
    assert token not in repr(all_rows(catalog))
    issued = catalog.recent_audit(1)[0]
    assert (issued.action, issued.details["token_id"]) == ("token_issue", stored.hex()[:16])


def test_token_expiry_follows_the_injected_clock(backend: Backend, catalog: Catalog) -> None:
    make_user(catalog)
    token = catalog.issue_token("alice", ttl_s=600)
    backend.clock.advance(599)
    assert catalog.resolve_token(token) == "alice"
    backend.clock.advance(1)
    with pytest.raises(AuthFailed, match="expired"):
        catalog.resolve_token(token)


def test_revoked_and_unknown_tokens_fail(catalog: Catalog) -> None:
    make_user(catalog)
    token = catalog.issue_token("alice", ttl_s=600)
    other = catalog.issue_token("alice", ttl_s=600)
    assert catalog.revoke_token(token) is True
    assert catalog.revoke_token(token) is False  # idempotent
    assert catalog.revoke_token("never issued") is False
    for bad in (token, "never issued", "", "x" * 10_000):
        with pytest.raises(AuthFailed):
            catalog.resolve_token(bad)
    assert catalog.resolve_token(other) == "alice"
    assert catalog.recent_audit(1)[0].action == "token_revoke"


def test_token_kinds(catalog: Catalog) -> None:
    make_user(catalog)
    session = catalog.issue_token("alice", ttl_s=600, kind="session")
    api = catalog.issue_token("alice", ttl_s=600)
    assert catalog.resolve_token(session, kind="session") == "alice"
    assert catalog.resolve_token(session) == "alice"
    with pytest.raises(AuthFailed):
        catalog.resolve_token(session, kind="api")
    with pytest.raises(AuthFailed):
        catalog.resolve_token(api, kind="session")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"ttl_s": 0}, ValueError),
        ({"ttl_s": -5}, ValueError),
        ({"ttl_s": float("inf")}, ValueError),
        ({"ttl_s": 11 * 366 * 86400}, ValueError),
        ({"ttl_s": True}, ValueError),
        ({"ttl_s": 60, "kind": "cookie"}, ValueError),
    ],
)
def test_issue_token_rejects_bad_arguments(
    catalog: Catalog, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    make_user(catalog)
    with pytest.raises(error):
        catalog.issue_token("alice", **kwargs)


def test_issue_token_for_unknown_user(catalog: Catalog) -> None:
    with pytest.raises(NotFound) as info:
        catalog.issue_token("nobody", ttl_s=60)
    assert info.value.what == "user"


def test_last_used_is_refreshed_at_most_once_a_minute(backend: Backend, catalog: Catalog) -> None:
    make_user(catalog)
    token = catalog.issue_token("alice", ttl_s=3600)

    def last_used() -> datetime | None:
        with catalog.engine.connect() as conn:
            value: datetime | None = conn.execute(sa.select(tokens.c.last_used_at)).scalar_one()
            return value

    assert last_used() is None
    catalog.resolve_token(token)
    assert last_used() == T0
    backend.clock.advance(30)
    catalog.resolve_token(token)
    assert last_used() == T0
    backend.clock.advance(31)
    catalog.resolve_token(token)
    assert last_used() == T0 + timedelta(seconds=61)


def test_lookup_token_reads_only_and_says_when_to_touch(backend: Backend, catalog: Catalog) -> None:
    """The gateway's split of resolve_token: the read on its event loop, the rare write apart."""
    make_user(catalog)
    token = catalog.issue_token("alice", ttl_s=3600)

    def last_used() -> datetime | None:
        with catalog.engine.connect() as conn:
            value: datetime | None = conn.execute(sa.select(tokens.c.last_used_at)).scalar_one()
            return value

    assert catalog.lookup_token(token).stale is True
    assert catalog.lookup_token(token).user_id == "alice"
    assert last_used() is None  # a lookup never writes
    catalog.touch_token(token)
    assert last_used() == T0
    assert catalog.lookup_token(token).stale is False
    backend.clock.advance(59)
    catalog.touch_token(token)  # within the granularity: no write
    assert last_used() == T0
    backend.clock.advance(1)
    assert catalog.lookup_token(token).stale is True
    catalog.revoke_token(token)
    with pytest.raises(AuthFailed):
        catalog.lookup_token(token)


def test_purge_tokens(backend: Backend, catalog: Catalog) -> None:
    make_user(catalog)
    short = catalog.issue_token("alice", ttl_s=60)
    long = catalog.issue_token("alice", ttl_s=86400)
    backend.clock.advance(3600)
    assert catalog.purge_tokens(timedelta(minutes=30)) == 1
    assert catalog.purge_tokens(timedelta(minutes=30)) == 0
    assert catalog.resolve_token(long) == "alice"
    with pytest.raises(AuthFailed):
        catalog.resolve_token(short)
    assert catalog.recent_audit(1)[0].details["count"] == 1


# -- deposits ---------------------------------------------------------------------------------


def test_deposit_round_trip_and_versions_count_up(backend: Backend, catalog: Catalog) -> None:
    make_user(catalog)
    fields = receipt_fields(b"first", when=T0 - timedelta(seconds=1))
    v1 = catalog.begin_deposit("alice", "backups/home/a.txt")
    assert v1 == 1
    backend.clock.advance(2)
    record = catalog.complete_deposit("alice", "backups/home/a.txt", v1, ReceiptRecord(**fields))
    assert record == VersionRecord(
        owner="alice",
        name="backups/home/a.txt",
        version=1,
        state="stored",
        completed_at=T0 + timedelta(seconds=2),
        encrypted=False,
        key_wrap=None,
        deleted_at=None,
        **fields,
    )
    assert catalog.get_version("alice", "backups/home/a.txt", 1) == record
    second = deposit(catalog, "alice", "backups/home/a.txt", b"second, longer")
    assert second.version == 2
    assert catalog.get_version("alice", "backups/home/a.txt") == second
    assert [v.version for v in catalog.list_versions("alice", "backups/home/a.txt")] == [1, 2]
    actions = [a.action for a in catalog.recent_audit(5)]
    assert actions[:4] == ["deposit_complete", "deposit_begin", "deposit_complete", "deposit_begin"]


def test_empty_document_and_encrypted_version(catalog: Catalog) -> None:
    make_user(catalog)
    empty = deposit(catalog, "alice", "empty", b"")
    assert (empty.size, empty.sha256) == (0, hashlib.sha256(b"").digest())
    version = catalog.begin_deposit("alice", "secret")
    record = catalog.complete_deposit(
        "alice",
        "secret",
        version,
        receipt_of(b"ciphertext", encrypted=True, key_wrap=b"\x00opaque wrap\xff"),
    )
    assert record.encrypted is True
    assert record.key_wrap == b"\x00opaque wrap\xff"
    assert catalog.get_version("alice", "secret").key_wrap == b"\x00opaque wrap\xff"


def test_list_documents(catalog: Catalog) -> None:
    make_user(catalog)
    deposit(catalog, "alice", "b/doc", b"b1")
    deposit(catalog, "alice", "a", b"a1")
    latest_b = deposit(catalog, "alice", "b/doc", b"b2 longer")
    deposit(catalog, "alice", "c", b"c1")
    catalog.mark_deleted("alice", "c", 1)
    catalog.begin_deposit("alice", "d-pending")
    failed = catalog.begin_deposit("alice", "e-failed")
    catalog.fail_deposit("alice", "e-failed", failed, "node 3 timed out")
    summaries = catalog.list_documents("alice")
    assert [s.name for s in summaries] == ["a", "b/doc"]
    b = summaries[1]
    assert (b.latest_version, b.size, b.sha256, b.version_count) == (
        2,
        len(b"b2 longer"),
        latest_b.sha256,
        2,
    )
    assert b.deposited_at == latest_b.deposited_at
    assert catalog.list_documents("Alice") == summaries


def test_pending_version_is_never_listed_as_stored(backend: Backend, catalog: Catalog) -> None:
    make_user(catalog)
    version = catalog.begin_deposit("alice", "doc")
    assert catalog.list_documents("alice") == []
    with pytest.raises(NotFound):
        catalog.get_version("alice", "doc")
    with pytest.raises(NotFound):
        catalog.get_version("alice", "doc", version)
    with pytest.raises(NotFound):
        catalog.list_versions("alice", "doc")
    with pytest.raises(NotFound):
        catalog.mark_deleted("alice", "doc", version)
    # With a stored version 1, a pending version 2 does not become "latest".
    catalog.complete_deposit("alice", "doc", version, receipt_of(b"v1"))
    assert catalog.begin_deposit("alice", "doc") == 2
    assert catalog.get_version("alice", "doc").version == 1
    assert [s.latest_version for s in catalog.list_documents("alice")] == [1]


def test_pending_versions_for_crash_cleanup(backend: Backend, catalog: Catalog) -> None:
    make_user(catalog)
    old = catalog.begin_deposit("alice", "old")
    backend.clock.advance(600)
    catalog.begin_deposit("alice", "new")
    done = catalog.begin_deposit("alice", "done")
    catalog.complete_deposit("alice", "done", done, receipt_of(b"x"))
    backend.clock.advance(60)
    stale = catalog.pending_versions(timedelta(minutes=5))
    assert [(p.owner, p.name, p.version, p.began_at) for p in stale] == [("alice", "old", old, T0)]
    every = catalog.pending_versions(backend.clock.now)
    assert [p.name for p in every] == ["old", "new"]
    catalog.fail_deposit("alice", "old", old, "gateway restarted during the deposit")
    assert [p.name for p in catalog.pending_versions(backend.clock.now)] == ["new"]
    with pytest.raises(ValueError):
        catalog.pending_versions(timedelta(seconds=-1))


def test_failed_version_keeps_its_number(catalog: Catalog) -> None:
    make_user(catalog)
    v1 = catalog.begin_deposit("alice", "doc")
    catalog.fail_deposit("alice", "doc", v1, "only 3 of 4 signature shares")
    catalog.fail_deposit("alice", "doc", v1, "again")  # idempotent
    assert catalog.begin_deposit("alice", "doc") == v1 + 1
    failures = [a for a in catalog.recent_audit(10) if a.action == "deposit_fail"]
    assert [(a.outcome, a.details) for a in failures] == [
        ("failed", {"reason": "only 3 of 4 signature shares"})
    ]
    with pytest.raises(WrongState) as info:
        catalog.complete_deposit("alice", "doc", v1, receipt_of(b"late"))
    assert (info.value.code, info.value.state, info.value.expected) == (
        "wrong_state",
        "failed",
        "pending",
    )


def test_failure_reason_is_capped(catalog: Catalog) -> None:
    make_user(catalog)
    version = catalog.begin_deposit("alice", "doc")
    catalog.fail_deposit("alice", "doc", version, "x" * 10_000)
    (event,) = [a for a in catalog.recent_audit(5) if a.action == "deposit_fail"]
    assert len(event.details["reason"]) == 2000


def test_stored_version_cannot_be_completed_or_failed_again(catalog: Catalog) -> None:
    make_user(catalog)
    record = deposit(catalog, "alice", "doc")
    audit_rows = len(catalog.recent_audit(100))
    with pytest.raises(WrongState):
        catalog.complete_deposit("alice", "doc", record.version, receipt_of(b"other"))
    with pytest.raises(WrongState):
        catalog.fail_deposit("alice", "doc", record.version, "too late")
    # A refused change leaves no trace: the audit row is in the same (rolled back) transaction.
    assert len(catalog.recent_audit(100)) == audit_rows
    assert catalog.get_version("alice", "doc") == record


def test_mark_deleted(backend: Backend, catalog: Catalog) -> None:
    make_user(catalog)
    v1 = deposit(catalog, "alice", "doc", b"one")
    deposit(catalog, "alice", "doc", b"two")
    backend.clock.advance(10)
    deleted = catalog.mark_deleted("alice", "doc", 2)
    assert (deleted.state, deleted.deleted_at, deleted.version) == (
        "deleted",
        T0 + timedelta(seconds=10),
        2,
    )
    assert catalog.get_version("alice", "doc") == v1
    with pytest.raises(NotFound):
        catalog.get_version("alice", "doc", 2)
    with pytest.raises(NotFound):
        catalog.mark_deleted("alice", "doc", 2)
    with pytest.raises(NotFound):
        catalog.mark_deleted("alice", "doc", 99)
    assert catalog.begin_deposit("alice", "doc") == 3  # never reused
    catalog.mark_deleted("alice", "doc", 1)
    assert catalog.list_documents("alice") == []
    with pytest.raises(NotFound):
        catalog.list_versions("alice", "doc")
    assert catalog.recent_audit(1)[0].action == "version_delete"


def test_version_state_covers_every_state(catalog: Catalog) -> None:
    make_user(catalog)
    make_user(catalog, "bob")
    deposit(catalog, "alice", "doc")
    deposit(catalog, "alice", "doc")
    failed = catalog.begin_deposit("alice", "doc")
    catalog.fail_deposit("alice", "doc", failed, "node 3 timed out")
    pending = catalog.begin_deposit("alice", "doc")
    catalog.mark_deleted("alice", "doc", 2)
    assert [catalog.version_state("alice", "doc", v) for v in (1, 2, failed, pending, 99)] == [
        "stored",
        "deleted",
        "failed",
        "pending",
        None,
    ]
    assert catalog.version_state("bob", "doc", 1) is None  # another owner's name space
    assert catalog.version_state("alice", "other", 1) is None
    with pytest.raises(ValueError):
        catalog.version_state("alice", "doc", 0)


def test_owner_isolation(catalog: Catalog) -> None:
    make_user(catalog, "alice")
    make_user(catalog, "bob")
    deposit(catalog, "alice", "shared/name")
    pending = catalog.begin_deposit("alice", "shared/name")
    fields = receipt_fields(b"bob's attempt")
    for attempt in (
        lambda: catalog.get_version("bob", "shared/name"),
        lambda: catalog.get_version("bob", "shared/name", 1),
        lambda: catalog.list_versions("bob", "shared/name"),
        lambda: catalog.mark_deleted("bob", "shared/name", 1),
        lambda: catalog.complete_deposit("bob", "shared/name", pending, ReceiptRecord(**fields)),
        lambda: catalog.fail_deposit("bob", "shared/name", pending, "sabotage"),
    ):
        with pytest.raises(NotFound):
            attempt()
    assert catalog.list_documents("bob") == []
    # Bob's document of the same name is his own, with its own version counter.
    assert deposit(catalog, "bob", "shared/name").version == 1
    assert catalog.get_version("alice", "shared/name").version == 1
    assert pending == 2


def test_begin_deposit_checks_owner_and_name(catalog: Catalog) -> None:
    with pytest.raises(NotFound) as info:
        catalog.begin_deposit("nobody", "doc")
    assert info.value.what == "user"
    make_user(catalog)
    for name in ("", "/abs", "a/../b", "a//b", "nul\x00", " padded", "x" * 256):
        with pytest.raises(BadName):
            catalog.begin_deposit("alice", name)
    assert catalog.pending_versions(T0 + timedelta(days=1)) == []


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"size": -1}, ValueError),
        ({"size": 1.5}, TypeError),
        ({"sha256": b"\x00" * 31}, ValueError),
        ({"sha256": "00" * 32}, TypeError),
        ({"fv_hash": b"\x00" * 33}, ValueError),
        ({"codec_id": ""}, ValueError),
        ({"codec_id": "has space"}, ValueError),
        ({"m": 0}, ValueError),
        ({"m": 6}, ValueError),  # m > n
        ({"n": 256, "m": 3}, ValueError),
        ({"segment_bytes": 0}, ValueError),
        ({"statement": b""}, ValueError),
        ({"statement": b"x" * (64 * 1024 + 1)}, ValueError),
        ({"signature": b""}, ValueError),
        ({"deposited_at": datetime(2026, 1, 1)}, ValueError),  # naive
        ({"encrypted": 1}, TypeError),
        ({"key_wrap": b"wrap"}, ValueError),  # a key wrap without encryption
    ],
)
def test_complete_deposit_rejects_bad_receipt_fields(
    catalog: Catalog, override: dict[str, Any], error: type[Exception]
) -> None:
    make_user(catalog)
    version = catalog.begin_deposit("alice", "doc")
    fields = receipt_fields(b"content") | override
    with pytest.raises(error):
        catalog.complete_deposit("alice", "doc", version, ReceiptRecord(**fields))
    assert [p.version for p in catalog.pending_versions(T0 + timedelta(days=1))] == [version]


def test_a_receipt_must_be_a_receipt_record(catalog: Catalog) -> None:
    """The old keyword form, or a plain mapping, is refused by name before anything is written."""
    make_user(catalog)
    version = catalog.begin_deposit("alice", "doc")
    before = all_rows(catalog)
    fields = receipt_fields(b"content")
    with pytest.raises(TypeError, match="ReceiptRecord"):
        catalog.complete_deposit("alice", "doc", version, fields)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ReceiptRecord"):
        catalog.restore_version("alice", "other", 1, fields)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        catalog.complete_deposit("alice", "doc", version, **fields)  # type: ignore[call-arg]
    assert all_rows(catalog) == before
    # A stored version's own record is a receipt record: it restores as it was.
    record = catalog.complete_deposit("alice", "doc", version, ReceiptRecord(**fields))
    assert catalog.restore_version("alice", "copy", 1, record).restored
    copy = catalog.get_version("alice", "copy", 1)
    assert (copy.statement, copy.signature, copy.sha256) == (
        record.statement,
        record.signature,
        record.sha256,
    )


def test_concurrent_deposits_get_distinct_versions(backend: Backend, catalog: Catalog) -> None:
    # Two catalogs (as two gateway processes) and 8 threads racing on one new name.
    make_user(catalog)
    second = backend.open()
    threads_n, per_thread = 8, 5
    barrier = threading.Barrier(threads_n)
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        cat = catalog if index % 2 else second
        try:
            barrier.wait()
            for _ in range(per_thread):
                version = cat.begin_deposit("alice", "hot/name")
                if version % 3 == 0:
                    cat.fail_deposit("alice", "hot/name", version, "test")
                else:
                    cat.complete_deposit("alice", "hot/name", version, receipt_of(b"x"))
                with lock:
                    results.append(version)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = threads_n * per_thread
    assert sorted(results) == list(range(1, total + 1))
    stored = [v.version for v in catalog.list_versions("alice", "hot/name")]
    assert stored == [v for v in range(1, total + 1) if v % 3 != 0]
    begins = [a for a in catalog.recent_audit(1000) if a.action == "deposit_begin"]
    assert len(begins) == total


# -- audit log --------------------------------------------------------------------------------


def test_audit_events_and_recent_audit(backend: Backend, catalog: Catalog) -> None:
    make_user(catalog, "alice")
    make_user(catalog, "bob")
    backend.clock.advance(5)
    catalog.audit(
        "retrieve",
        user_id="Alice",
        name="doc",
        version=3,
        outcome="failed",
        details={"liars": [2], "reason": "slice 2 corrupt", "é": True},
    )
    catalog.audit("retrieve", user_id="bob")
    newest = catalog.recent_audit(2)
    assert [a.user_id for a in newest] == ["bob", "alice"]
    event = newest[1]
    assert (event.action, event.name, event.version, event.outcome, event.at) == (
        "retrieve",
        "doc",
        3,
        "failed",
        T0 + timedelta(seconds=5),
    )
    assert event.details == {"liars": [2], "reason": "slice 2 corrupt", "é": True}
    assert newest[0].details == {}
    alice_only = catalog.recent_audit(100, user_id="alice")
    assert {a.user_id for a in alice_only} == {"alice"}
    assert [a.action for a in alice_only] == ["retrieve", "user_create"]
    ids = [a.audit_id for a in catalog.recent_audit(100)]
    assert ids == sorted(ids, reverse=True)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"action": "Retrieve"}, ValueError),
        ({"action": ""}, ValueError),
        ({"action": "x", "outcome": "maybe"}, ValueError),
        ({"action": "x", "details": {"f": float("nan")}}, ValueError),
        ({"action": "x", "details": ["not", "a", "mapping"]}, TypeError),
        ({"action": "x", "details": {"big": "x" * 70_000}}, ValueError),
        ({"action": "x", "name": "a/../b"}, BadName),
        ({"action": "x", "version": 0}, ValueError),
    ],
)
def test_audit_rejects_bad_arguments(
    catalog: Catalog, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    kwargs = dict(kwargs)  # the parameter dict is shared by both backends
    action = kwargs.pop("action")
    with pytest.raises(error):
        catalog.audit(action, **kwargs)
    assert catalog.recent_audit(10) == []


def test_recent_audit_limit(catalog: Catalog) -> None:
    for i in range(5):
        catalog.audit("event", details={"i": i})
    assert [a.details["i"] for a in catalog.recent_audit(3)] == [4, 3, 2]
    with pytest.raises(ValueError):
        catalog.recent_audit(0)


# -- construction and configuration (SQLite only: no server needed) ----------------------------


def test_plain_path_means_sqlite_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    with Catalog(str(tmp_path / "c.db"), password_hasher=CHEAP_HASHER, busy_timeout_ms=1234) as cat:
        assert cat.dialect == "sqlite"
        cat.migrate()
        with cat.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_sqlite_url_form(tmp_path: Path) -> None:
    with Catalog(f"sqlite:///{tmp_path / 'c.db'}", password_hasher=CHEAP_HASHER) as cat:
        assert cat.migrate() == catalog_migrate.head_revision()


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("sqlite://", {}),
        ("sqlite:///:memory:", {}),
        ("", {}),
        ("mysql://root@localhost/db", {}),
        ("not a url://x", {}),
        ("c.db", {"schema": "evault"}),
        ("c.db", {"pool_size": -1}),
        ("postgresql://postgres@127.0.0.1/test", {"schema": "Bad-Name"}),
    ],
)
def test_bad_configuration_is_a_value_error(url: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Catalog(url, **kwargs)


def test_unreachable_database_is_a_catalog_error() -> None:
    catalog = Catalog("postgresql://postgres@127.0.0.1:1/test")
    try:
        with pytest.raises(CatalogError) as info:
            catalog.migrate()
        assert info.value.code == "catalog_error"
        assert isinstance(info.value, EvaultError)
    finally:
        catalog.close()


def test_postgresql_url_defaults_to_psycopg3() -> None:
    catalog = Catalog("postgresql://postgres@127.0.0.1:1/test")
    try:
        assert catalog.dialect == "postgresql"
        assert catalog.engine.url.get_driver_name() == "psycopg"
    finally:
        catalog.close()


def test_clock_must_be_timezone_aware(tmp_path: Path) -> None:
    with Catalog(
        str(tmp_path / "c.db"), password_hasher=CHEAP_HASHER, clock=lambda: datetime(2026, 1, 1)
    ) as cat:
        cat.migrate()
        with pytest.raises(ValueError, match="clock"):
            cat.create_user("alice", PASSWORD, "Alice", "")


def test_validate_document_name_is_exported_for_the_api() -> None:
    assert validate_document_name("home/me/notes.txt") == "home/me/notes.txt"
    with pytest.raises(BadName) as info:
        validate_document_name("home/../etc/passwd")
    assert info.value.code == "bad_name"


# -- restoring from the nodes (docs/spec/catalog.md, "Restoring the catalog from the nodes") --


def test_restore_into_an_empty_catalog_creates_a_locked_account(
    backend: Backend, catalog: Catalog
) -> None:
    fields = receipt_fields(b"kept by the nodes")
    result = catalog.restore_version("Alice", "wills/2026.pdf", 3, ReceiptRecord(**fields))
    assert (result.restored, result.account_created) == (True, True)
    record = catalog.get_version("alice", "wills/2026.pdf")
    assert record == VersionRecord(
        owner="alice",
        name="wills/2026.pdf",
        version=3,
        state="stored",
        completed_at=T0,
        encrypted=False,
        key_wrap=None,
        deleted_at=None,
        **fields,
    )
    assert catalog.get_user("alice").name == "restored account"
    # Nobody logs in to it, not even with an empty guess, and nobody can register its id.
    for guess in (PASSWORD, "", "!locked"):
        with pytest.raises(AuthFailed):
            catalog.authenticate("alice", guess)
    with pytest.raises(UserExists):
        catalog.create_user("alice", PASSWORD, "Mallory", "")
    login = catalog.recent_audit(1)[0]
    assert (login.action, login.outcome, login.details["reason"]) == (
        "login",
        "denied",
        "account locked",
    )
    # New deposits take numbers after the restored one (the nodes hold version 3).
    assert catalog.begin_deposit("alice", "wills/2026.pdf") == 4
    actions = [a.action for a in catalog.recent_audit(10)]
    assert actions.index("version_restore") < actions.index("user_restore")


def test_restore_never_changes_what_the_catalog_has(backend: Backend, catalog: Catalog) -> None:
    make_user(catalog)
    stored = deposit(catalog, "alice", "doc", b"v1")
    deposit(catalog, "alice", "doc", b"v2")
    catalog.mark_deleted("alice", "doc", 2)
    pending = catalog.begin_deposit("alice", "doc")
    before = all_rows(catalog)
    for version in (1, 2, pending):
        result = catalog.restore_version("alice", "doc", version, receipt_of(b"other"))
        assert (result.restored, result.account_created) == (False, False)
    assert all_rows(catalog) == before
    assert catalog.get_version("alice", "doc", 1) == stored
    assert catalog.authenticate("alice", PASSWORD) == "alice"  # the real account is untouched


def test_restore_raises_next_version_only_upwards(catalog: Catalog) -> None:
    make_user(catalog)
    for _ in range(5):
        deposit(catalog, "alice", "doc")
    assert catalog.restore_version("alice", "doc", 9, receipt_of(b"9")).restored
    assert catalog.begin_deposit("alice", "doc") == 10
    # a gap below the counter (a version the catalog lost) comes back without lowering it
    catalog.fail_deposit("alice", "doc", 10, "test")
    with catalog.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM versions WHERE version = 4"))
    assert catalog.restore_version("alice", "doc", 4, receipt_of(b"4")).restored
    assert catalog.begin_deposit("alice", "doc") == 11
    assert [v.version for v in catalog.list_versions("alice", "doc")] == [1, 2, 3, 4, 5, 9]


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"sha256": b"short"}, ValueError),
        ({"m": 6}, ValueError),
        ({"signature": b""}, ValueError),
        ({"deposited_at": datetime(2026, 1, 1)}, ValueError),
    ],
)
def test_restore_rejects_bad_receipt_fields_and_writes_nothing(
    catalog: Catalog, override: dict[str, Any], error: type[Exception]
) -> None:
    before = all_rows(catalog)
    with pytest.raises(error):
        catalog.restore_version("alice", "doc", 1, receipt_of(b"x", **override))
    with pytest.raises(BadName):
        catalog.restore_version("alice", "/abs", 1, receipt_of(b"x"))
    assert all_rows(catalog) == before


def test_set_password_unlocks_and_revokes_tokens(backend: Backend, catalog: Catalog) -> None:
    catalog.restore_version("alice", "doc", 1, receipt_of(b"x"))
    assert catalog.set_password("alice", "a new long password") == 0
    assert catalog.authenticate("alice", "a new long password") == "alice"
    make_user(catalog, "bob")
    tokens_of_bob = [catalog.issue_token("bob", 3600) for _ in range(2)]
    catalog.revoke_token(tokens_of_bob[0])
    assert catalog.set_password("BOB", "another long password") == 1
    for token in tokens_of_bob:
        with pytest.raises(AuthFailed):
            catalog.resolve_token(token)
    with pytest.raises(AuthFailed):
        catalog.authenticate("bob", PASSWORD)
    assert catalog.authenticate("bob", "another long password") == "bob"
    last = catalog.recent_audit(3)
    assert any(a.action == "password_set" and a.details == {"tokens_revoked": 1} for a in last)
    with pytest.raises(BadPassword):
        catalog.set_password("bob", "short")
    with pytest.raises(NotFound):
        catalog.set_password("carol", "a long enough password")
