"""The whole vault with its catalog on the real PostgreSQL at 127.0.0.1:5432 (DESIGN §8)."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_vault_e2e import deposit, openssl_verifies, receipt_parts, retrieve
from tests.integration.vault_fixtures import VaultFactory
from tests.unit.test_catalog import postgres_reachable

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def database() -> Iterator[str]:
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
