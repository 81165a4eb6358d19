"""The whole vault with its catalog on the real PostgreSQL at 127.0.0.1:5432 (DESIGN §8)."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_vault_e2e import (
    deposit,
    evault_cli,
    openssl_verifies,
    receipt_parts,
    retrieve,
)
from tests.integration.vault_fixtures import VaultFactory, _rewrite
from tests.unit.test_catalog import postgres_reachable

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def new_database() -> Iterator[str]:
    """A throwaway database on the local server (dropped at exit), as a catalog URL."""
    reason = postgres_reachable()
    if reason is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 not reachable: {reason}")
    name = f"evault_e2e_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database() -> Iterator[str]:
    with new_database() as url:
        yield url


def test_vault_on_postgresql_survives_a_gateway_kill(
    vault_factory: VaultFactory, tmp_path: Path, database: str
) -> None:
    v = vault_factory.start(tmp_path / "vault", database_url=database)
    try:
        token = v.register()
        data = os.urandom(400_000)
        body = deposit(v, token, "pg/one.bin", data)
        statement, signature = receipt_parts(body)
        assert openssl_verifies(v, statement, signature, tmp_path)
        assert retrieve(v, token, "pg/one.bin") == data
        gw = v.cluster.processes["gateway"]
        gw.send_signal(signal.SIGKILL)
        gw.wait(timeout=10)
    finally:
        v.stop()
    with psycopg.connect(database.replace("+psycopg", "")) as conn:
        count = conn.execute("SELECT count(*) FROM versions WHERE state = 'stored'").fetchone()
        assert count is not None and count[0] == 1
    v2 = vault_factory.restart(v)
    try:
        assert retrieve(v2, v2.login(), "pg/one.bin") == data
    finally:
        v2.stop()


def test_a_catalog_restored_into_a_new_postgresql_database(
    vault_factory: VaultFactory, tmp_path: Path, database: str
) -> None:
    """The catalog restore (docs/spec/catalog.md) into an empty PostgreSQL database: the CLI
    migrates it, rebuilds every receipt from the nodes, and the gateway serves from it."""
    v = vault_factory.start(tmp_path / "vault", database_url=database)
    data = {"pg/a.bin": os.urandom(300_000), "pg/b.bin": b"b"}
    try:
        token = v.register()
        receipts = {
            name: receipt_parts(deposit(v, token, name, blob)) for name, blob in data.items()
        }
    finally:
        v.stop()
    config = v.directory / "gateway" / "gateway.toml"
    with new_database() as fresh:
        _rewrite(config, lambda doc: doc["gateway"].__setitem__("database_url", fresh))
        v2 = vault_factory.restart(v)  # the gateway starts on the new, empty database
        try:
            done = evault_cli("admin", "restore-catalog", "--config", str(config), "--json")
            assert done.returncode == 0, done.stderr
            with psycopg.connect(fresh.replace("+psycopg", "")) as conn:
                rows = conn.execute(
                    "SELECT d.name, v.statement, v.signature FROM versions v "
                    "JOIN documents d USING (document_id) WHERE v.state = 'stored' "
                    "ORDER BY d.name"
                ).fetchall()
                locked = conn.execute("SELECT password_hash FROM users WHERE user_id = 'alice'")
                assert locked.fetchone()[0].startswith("!")  # type: ignore[index]
            assert [(name, bytes(st), bytes(sig)) for name, st, sig in rows] == [
                (name, *receipts[name]) for name in sorted(data)
            ]
            ok = evault_cli(
                "admin",
                "set-password",
                "--config",
                str(config),
                "alice",
                "--password-stdin",
                stdin="set by the operator\n",
            )
            assert ok.returncode == 0, ok.stderr
            token = v2.login("alice", "set by the operator")
            for name, blob in data.items():
                assert retrieve(v2, token, name) == blob
        finally:
            v2.stop()
