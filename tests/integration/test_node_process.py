"""`evault node` as a real process on 127.0.0.1 with mutual TLS, from `evault init` output.

One vault is made by the dealer (2048-bit key); node 1 is started as `python -m evault node`,
then: the gateway's client certificate gets answers and a deposit whose share verifies; a client
without a certificate, one from another CA, a node's (server-only) certificate and a cluster
certificate with another CN are all refused; SIGTERM by PID stops it cleanly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from evault.config import NodeConfig, load_node_config
from evault.crypto import keyfiles, threshold_rsa
from evault.dealer import InitOptions, init_vault
from evault.protocol.node_api import (
    HEADER_PROPOSAL,
    HEADER_SHA256,
    DepositResult,
    Proposal,
    ShareAnswer,
)
from evault.protocol.statement import Statement, format_time
from evault.transport import tls

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NodeProcess:
    proc: subprocess.Popen[str]
    config: NodeConfig
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def drain(self) -> None:
        """Collect stderr (never let the pipe fill up); flag readiness when uvicorn listens."""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if "Uvicorn running on" in line:
                self.ready.set()
        self.ready.set()  # the process ended: stop waiting either way

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.config.port}"


@dataclass(frozen=True)
class Vault:
    directory: Path
    ca_key: Any
    ca_cert: Any


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Vault:
    """A fresh `evault init` vault; the CA key is kept (by wrapping generate_ca) so the test can
    issue a cluster certificate with a wrong CN, which the dealer itself never does."""
    captured: dict[str, Any] = {}
    real = tls.generate_ca

    def keeping_ca(*args: Any, **kwargs: Any) -> Any:
        captured["key"], captured["cert"] = real(*args, **kwargs)
        return captured["key"], captured["cert"]

    directory = tmp_path_factory.mktemp("vault") / "v"
    port = _free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tls, "generate_ca", keeping_ca)
        init_vault(
            directory,
            InitOptions(key_bits=2048, base_port=port - 1, gateway_port=_free_port()),
        )
    return Vault(directory, captured["key"], captured["cert"])


@pytest.fixture
def node(vault: Vault) -> Iterator[NodeProcess]:
    config_path = vault.directory / "nodes" / "node-1" / "node.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "evault", "node", "--config", str(config_path)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    node = NodeProcess(proc, load_node_config(config_path))
    drainer = threading.Thread(target=node.drain, daemon=True)
    drainer.start()
    try:
        assert node.ready.wait(START_TIMEOUT_S), "node did not start in time"
        assert proc.poll() is None, "\n".join(node.lines)
        yield node
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        drainer.join(timeout=5)


def _gateway_client(vault: Vault) -> httpx.Client:
    gw = vault.directory / "gateway"
    ctx = tls.client_context(
        vault.directory / "public" / "ca.pem", gw / "client.pem", gw / "client.key"
    )
    return httpx.Client(verify=ctx, timeout=30.0)


def _client_with(vault: Vault, cert: Path | None, key: Path | None) -> httpx.Client:
    ctx = tls.client_context(vault.directory / "public" / "ca.pem", cert, key)
    return httpx.Client(verify=ctx, timeout=10.0)


def _refused(client: httpx.Client, url: str) -> str:
    """The request must fail in the TLS layer or get 401; returns what happened."""
    with client:
        try:
            response = client.get(url + "/v1/health")
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError) as exc:
            return type(exc).__name__
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthenticated"
    return "401"


def test_node_process_serves_the_gateway_only_and_stops_on_sigterm(
    vault: Vault, node: NodeProcess, tmp_path: Path
) -> None:
    config = node.config
    with _gateway_client(vault) as client:
        health = client.get(node.url + "/v1/health")
        assert health.status_code == 200
        assert health.json()["node"] == 1 and health.json()["vault"] == config.vault

        data = b"a document deposited over mutual TLS\n" * 1000
        sha = hashlib.sha256(data).hexdigest()
        proposal = Proposal(
            vault=config.vault,
            owner="alice",
            name="over-tls.txt",
            version=1,
            n=config.cluster.n,
            m=config.cluster.m,
            codec=config.cluster.codec,
            segment_bytes=config.cluster.segment_bytes,
            fingerprint_scheme=config.cluster.fingerprint_scheme,
            encrypted=False,
            deposited_at=format_time(dt.datetime.now(dt.UTC)),
        )
        response = client.put(
            f"{node.url}/v1/objects/{proposal.object_id()}",
            content=data,
            headers={HEADER_PROPOSAL: proposal.to_header(), HEADER_SHA256: sha},
        )
        assert response.status_code == 201, response.text
        result = DepositResult.from_json_obj(response.json(), n=config.cluster.n)
        assert Statement.from_bytes(result.statement).sha256 == sha
        public = keyfiles.read_threshold_public(config.threshold_public)
        # The answer carries the share alone; GET .../share gives it with a proof that verifies.
        assert not result.share.proven
        answer = client.get(f"{node.url}/v1/objects/{proposal.object_id()}/share")
        assert answer.status_code == 200, answer.text
        share = ShareAnswer.from_json_obj(answer.json()).share
        assert share.value == result.share.value
        threshold_rsa.verify_share(
            public,
            result.statement,
            threshold_rsa.SignatureShare(share.index, share.value, share.proof_c, share.proof_z),
        )
        # The same connection pool serves the slice (keep-alive), and the blocks follow leaves.
        body = client.get(f"{node.url}/v1/objects/{proposal.object_id()}/slice").content
        assert len(body) > 32

    # No client certificate: the handshake (CERT_REQUIRED) refuses it.
    assert _refused(_client_with(vault, None, None), node.url) != "401"

    # A certificate from another CA: refused in the handshake.
    other_key, other_ca = tls.generate_ca("not the cluster", now=dt.datetime.now(dt.UTC))
    key, cert = tls.issue_certificate(
        other_key,
        other_ca,
        common_name="evault-gateway",
        client=True,
        server=False,
        now=dt.datetime.now(dt.UTC),
    )
    tls.write_private_key(tmp_path / "other.key", key)
    tls.write_certificate(tmp_path / "other.pem", cert)
    assert (
        _refused(_client_with(vault, tmp_path / "other.pem", tmp_path / "other.key"), node.url)
        != "401"
    )

    # A node's certificate (cluster CA, but serverAuth only) is no client certificate.
    ndir = vault.directory / "nodes" / "node-2"
    assert _refused(_client_with(vault, ndir / "tls.pem", ndir / "tls.key"), node.url) != "401"

    # A cluster client certificate with another CN passes the handshake, and the node's
    # gate answers 401: only the gateway is served.
    key, cert = tls.issue_certificate(
        vault.ca_key,
        vault.ca_cert,
        common_name="intruder",
        client=True,
        server=False,
        now=dt.datetime.now(dt.UTC),
    )
    tls.write_private_key(tmp_path / "intruder.key", key)
    tls.write_certificate(tmp_path / "intruder.pem", cert)
    assert (
        _refused(
            _client_with(vault, tmp_path / "intruder.pem", tmp_path / "intruder.key"), node.url
        )
        == "401"
    )

    # SIGTERM by PID: a clean exit, the store closed.
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=STOP_TIMEOUT_S) == 0
    log = "\n".join(node.lines)
    assert "node-1 stopped" in log
    assert f"PUT /v1/objects/{proposal.object_id()} 201" in log
    assert "GET /v1/health 401 unauthenticated" in log
    assert "Traceback" not in log


def test_fault_modes_are_refused_without_the_environment_switch(vault: Vault) -> None:
    config_path = vault.directory / "nodes" / "node-2" / "node.toml"
    env = {k: v for k, v in os.environ.items() if k != "EVAULT_ALLOW_FAULTS"}
    result = subprocess.run(
        [sys.executable, "-m", "evault", "node", "--config", str(config_path), "--fault", "lie"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 1
    assert "EVAULT_ALLOW_FAULTS=1" in result.stderr
    assert "Traceback" not in result.stderr
