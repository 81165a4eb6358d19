"""Real local vaults for integration tests: processes on 127.0.0.1 over TLS.

Keys are dealt once per session and per (n, m, k) (2048-bit, through the real `evault init`
command); each test gets a copy of that vault with fresh data directories and free ports, and
its processes are stopped by PID when the test ends.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from evault.local import Cluster, start_cluster


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _rewrite(path: Path, edit: Any) -> None:
    doc = tomllib.loads(path.read_text())
    edit(doc)
    path.write_text(tomli_w.dumps(doc))


def relocate(directory: Path) -> int:
    """Give a copied vault fresh ports; return the gateway port."""
    gw_path = directory / "gateway" / "gateway.toml"
    n = tomllib.loads(gw_path.read_text())["cluster"]["n"]
    ports = free_ports(n + 1)
    for i in range(1, n + 1):
        _rewrite(
            directory / "nodes" / f"node-{i}" / "node.toml",
            lambda doc, i=i: doc["node"].__setitem__("port", ports[i - 1]),
        )

    def edit_gateway(doc: dict[str, Any]) -> None:
        doc["gateway"]["port"] = ports[n]
        for entry in doc["nodes"]:
            entry["url"] = f"https://127.0.0.1:{ports[entry['index'] - 1]}"

    _rewrite(gw_path, edit_gateway)
    return ports[n]


def make_template(root: Path, n: int, m: int, k: int) -> Path:
    target = root / f"vault-{n}-{m}-{k}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "evault",
            "init",
            str(target),
            "-n",
            str(n),
            "-m",
            str(m),
            "-k",
            str(k),
            "--key-bits",
            "2048",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


@dataclass
class LiveVault:
    directory: Path
    cluster: Cluster
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.cluster.gateway_url

    def node_pid(self, index: int) -> int:
        return self.cluster.processes[f"node-{index}"].pid

    def kill_node(self, index: int) -> None:
        proc = self.cluster.processes[f"node-{index}"]
        proc.kill()
        proc.wait(timeout=10)

    def log(self, name: str) -> str:
        path = self.directory / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def register(self, user: str = "alice", password: str = "correct horse battery") -> str:
        r = self.client.post(
            "/api/v1/users",
            json={"user_id": user, "password": password, "name": user.title(), "contact": "x@y"},
        )
        assert r.status_code == 201, r.text
        return self.login(user, password)

    def stop(self) -> None:
        """Close the client and stop every process of the vault (by PID)."""
        self.client.close()
        self.cluster.stop()

    def login(self, user: str = "alice", password: str = "correct horse battery") -> str:
        """A fresh token of a registered user (after a restart, say)."""
        r = self.client.post("/api/v1/tokens", json={"user_id": user, "password": password})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


class VaultFactory:
    def __init__(self, tmp_root: Path) -> None:
        self.tmp_root = tmp_root
        self.templates: dict[tuple[int, int, int], Path] = {}
        self.live: list[LiveVault] = []

    def start(
        self,
        target: Path,
        n: int = 5,
        m: int = 3,
        k: int = 4,
        *,
        extra_node_args: dict[int, list[str]] | None = None,
        env: dict[str, str] | None = None,
        database_url: str | None = None,
        gateway: dict[str, Any] | None = None,
    ) -> LiveVault:
        """A copy of the (n, m, k) template on free ports, started; ``gateway``: keys of the
        ``[gateway]`` table to set (``database_url`` is one)."""
        key = (n, m, k)
        if key not in self.templates:
            self.templates[key] = make_template(self.tmp_root, n, m, k)
        shutil.copytree(self.templates[key], target)
        port = relocate(target)
        settings = dict(gateway or {})
        if database_url is not None:
            settings["database_url"] = database_url
        if settings:
            _rewrite(
                target / "gateway" / "gateway.toml",
                lambda doc: doc["gateway"].update(settings),
            )
        return self._live(
            target, start_cluster(target, port=port, extra_node_args=extra_node_args, env=env)
        )

    def restart(self, old: LiveVault) -> LiveVault:
        """Start the processes of an existing (stopped) vault directory again, same ports."""
        port = int(old.cluster.gateway_url.rsplit(":", 1)[1])
        return self._live(old.directory, start_cluster(old.directory, port=port))

    def _live(self, directory: Path, cluster: Cluster) -> LiveVault:
        """A started vault with its HTTPS client, stopped again by ``stop_all``."""
        ctx = ssl.create_default_context(cafile=str(directory / "client" / "ca.pem"))
        client = httpx.Client(base_url=cluster.gateway_url, verify=ctx, timeout=120.0)
        vault = LiveVault(directory, cluster, client)
        self.live.append(vault)
        return vault

    def stop_all(self) -> None:
        for vault in self.live:
            vault.stop()
        self.live.clear()


@pytest.fixture(scope="session")
def vault_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultFactory]:
    factory = VaultFactory(tmp_path_factory.mktemp("vault-templates"))
    yield factory
    factory.stop_all()


@pytest.fixture
def vault(vault_factory: VaultFactory, tmp_path: Path) -> Iterator[LiveVault]:
    """A fresh default (5, 3, 4) vault for one test."""
    v = vault_factory.start(tmp_path / "vault")
    try:
        yield v
    finally:
        v.stop()
