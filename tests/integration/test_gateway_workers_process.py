"""A real gateway with several workers (``[gateway] workers``, evault.gateway.workers): they
share its one port and its catalog, connections are dealt evenly among them, a worker that
dies is replaced while the others serve, and stopping or killing the gateway's PID leaves no
worker behind."""

from __future__ import annotations

import os
import signal
import ssl
import time
from pathlib import Path

import httpx
import psutil

from tests.integration.test_vault_e2e import deposit, retrieve
from tests.integration.vault_fixtures import LiveVault, VaultFactory
from tests.processes import alive, established, wait_for

WORKERS = 3


def workers_of(v: LiveVault) -> list[int]:
    return sorted(p.pid for p in psutil.Process(v.cluster.processes["gateway"].pid).children())


def fresh_client(v: LiveVault) -> httpx.Client:
    """A client on its own new connection (so the gateway may deal it to any worker)."""
    ctx = ssl.create_default_context(cafile=str(v.directory / "client" / "ca.pem"))
    return httpx.Client(base_url=v.url, verify=ctx, timeout=60.0)


def test_connections_are_dealt_evenly_and_tls_runs_in_the_workers(
    vault_factory: VaultFactory, tmp_path: Path
) -> None:
    v = vault_factory.start(tmp_path / "vault", gateway={"workers": WORKERS})
    try:
        port = httpx.URL(v.url).port
        assert port is not None
        supervisor = v.cluster.processes["gateway"].pid
        workers = workers_of(v)
        # start_cluster returned only once every worker serves (connections are dealt only
        # to workers that are ready: earlier ones would all stay on the first).
        assert f"all {WORKERS} workers serving" in v.log("gateway")
        assert v.client.get("/api/v1/vault").status_code == 200  # the vault's own connection
        wait_for(lambda: sum(established(pid, port) for pid in workers) == 1)
        clients = [fresh_client(v) for _ in range(2 * WORKERS)]
        try:
            for c in clients:  # each on its own persistent connection, all held open
                assert c.get("/api/v1/vault").status_code == 200
            loads = [established(pid, port) for pid in workers]
            assert sum(loads) == 2 * WORKERS + 1
            assert max(loads) - min(loads) <= 1, loads
            # The supervisor only deals: it keeps none of the connections it accepted.
            assert established(supervisor, port) == 0
            for c in clients:
                c.close()
            # Each worker sees its clients go (and tells the supervisor: see the unit tests).
            wait_for(lambda: sum(established(pid, port) for pid in workers) == 1)
        finally:
            for c in clients:
                c.close()
    finally:
        v.stop()


def test_workers_serve_one_vault_and_one_that_dies_is_replaced(
    vault_factory: VaultFactory, tmp_path: Path
) -> None:
    v = vault_factory.start(tmp_path / "vault", gateway={"workers": WORKERS})
    try:
        workers = workers_of(v)
        assert len(workers) == WORKERS
        token = v.register()
        data = {f"doc-{i}.bin": os.urandom(20_000 + i) for i in range(6)}
        for name, blob in data.items():
            deposit(v, token, name, blob)
        # Every new connection, whichever worker accepts it, sees the same catalog: the
        # token, the documents, the versions.
        for name, blob in data.items():
            with fresh_client(v) as c:
                r = c.get(f"/api/v1/documents/{name}", headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 200 and r.content == blob

        victim = workers[1]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (len(now := workers_of(v)) == WORKERS and victim not in now):
            assert time.monotonic() < deadline, v.log("gateway")[-2000:]
            # The others serve meanwhile (a connection the dead one had is simply lost).
            with fresh_client(v) as c:
                assert c.get("/api/v1/vault").status_code == 200
            time.sleep(0.1)
        assert f"(pid {victim}) exited (killed by signal SIGKILL); starting another" in v.log(
            "gateway"
        )
        assert retrieve(v, token, "doc-0.bin") == data["doc-0.bin"]
        survivors = workers_of(v)
    finally:
        v.stop()
    assert v.cluster.processes["gateway"].returncode == 0
    assert not any(alive(pid) for pid in survivors)


def test_killing_the_gateway_pid_takes_its_workers_down(
    vault_factory: VaultFactory, tmp_path: Path
) -> None:
    v = vault_factory.start(tmp_path / "vault", gateway={"workers": 2})
    try:
        workers = workers_of(v)
        assert len(workers) == 2
        gw = v.cluster.processes["gateway"]
        gw.send_signal(signal.SIGKILL)
        gw.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its gateway"
            time.sleep(0.05)
    finally:
        v.stop()
