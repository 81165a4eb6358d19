"""The gateway process's start-up helpers (evault.gateway.main); the process itself runs in
the end-to-end tests (tests/integration/test_vault_e2e.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from evault.config import ClusterParams, GatewayConfig, NodeEndpoint
from evault.errors import ConfigError
from evault.gateway import main
from tests.unit.test_api_support import public_pem, vault_key


def gateway_config(tmp_path: Path) -> GatewayConfig:
    pem = tmp_path / "vault-public.pem"
    pem.write_text(public_pem(vault_key()), encoding="ascii")
    any_path = tmp_path / "unused"
    return GatewayConfig(
        path=tmp_path / "gateway.toml",
        vault="0123456789abcdef0123456789abcdef",
        host="127.0.0.1",
        port=0,
        database_url=f"sqlite:///{tmp_path / 'catalog.db'}",
        max_document_bytes=1024,
        node_timeout_s=5.0,
        workers=1,
        cluster=ClusterParams(5, 3, 4, "rs-isal-cauchy/v1", 1024 * 1024, "sha256-merkle/v1"),
        ca_cert=any_path,
        client_cert=any_path,
        client_key=any_path,
        server_cert=any_path,
        server_key=any_path,
        vault_public_key=pem,
        threshold_public=any_path,
        nodes=tuple(
            NodeEndpoint(i, f"https://127.0.0.1:{7100 + i}", f"node-{i}") for i in range(1, 6)
        ),
    )


def test_vault_info_reads_the_public_key_once(tmp_path: Path) -> None:
    config = gateway_config(tmp_path)
    info = main.read_vault_info(config)
    assert info.public_key_pem == config.vault_public_key.read_text()
    assert (info.n, info.m, info.k, info.t) == (5, 3, 4, 1)
    assert info.vault_id == config.vault


def test_a_missing_or_wrong_public_key_is_a_config_error(tmp_path: Path) -> None:
    config = gateway_config(tmp_path)
    with pytest.raises(ConfigError, match="cannot read the vault public key"):
        main.read_vault_info(replace(config, vault_public_key=tmp_path / "absent.pem"))
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello", encoding="ascii")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        main.read_vault_info(replace(config, vault_public_key=not_pem))


def test_a_port_in_use_is_a_config_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            main._bind("127.0.0.1", port)
    free = main._bind("127.0.0.1", 0)
    try:
        assert free.getsockname()[1] > 0
    finally:
        free.close()


@pytest.mark.parametrize("port", [-1, 65536])
def test_a_port_out_of_range_is_refused_before_anything_starts(port: int) -> None:
    with pytest.raises(ValueError, match="port"):
        main.run_gateway("/nonexistent/gateway.toml", port)


def test_a_missing_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        main.run_gateway("/nonexistent/gateway.toml", None)


def test_the_sweeper_goes_on_after_a_failed_sweep(caplog: pytest.LogCaptureFixture) -> None:
    from evault.gateway.service import SweepOutcome

    class Service:
        calls = 0

        async def sweep(self) -> SweepOutcome:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("catalog away")
            return SweepOutcome({2: ["ab" * 32]}, {4: "unreachable"}, 7, unknown=3)

    async def go() -> int:
        service = Service()
        task = asyncio.create_task(main.sweep_every(service, 0.01))  # type: ignore[arg-type]
        while service.calls < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return service.calls

    with caplog.at_level(logging.INFO, logger="evault.gateway"):
        assert asyncio.run(go()) >= 3
    assert "sweep of the nodes failed" in caplog.text and "catalog away" in caplog.text
    assert "swept 1 object(s)" in caplog.text and "7 listed" in caplog.text
    assert "unreachable" in caplog.text
    assert "the nodes hold 3 object(s) of versions this catalog does not know" in caplog.text
    assert "evault admin restore-catalog" in caplog.text


def test_the_ready_line_is_what_evault_up_waits_for() -> None:
    from evault.local import GATEWAY_READY_PREFIX

    line = main.READY_MESSAGE.format(host="127.0.0.1", port=8443, vault="0" * 32)
    assert line.startswith(GATEWAY_READY_PREFIX)
