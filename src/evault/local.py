"""`evault up`: the one-command local vault — n nodes and a gateway on 127.0.0.1.

It runs ``evault init`` when the directory holds no vault, starts every node and the gateway
as separate processes (the same commands an operator would run on separate hosts), waits
until the gateway answers, writes ``DIR/client.toml`` for the CLI, and on Ctrl-C or SIGTERM
stops every process it started, by PID, and waits for each.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final

import httpx
import tomli_w

from evault.config import load_gateway_config, load_node_config
from evault.errors import ConfigError, EvaultError

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class StartFailed(EvaultError):
    code = "start_failed"


@dataclass
class Cluster:
    """The processes of a running local vault."""

    directory: Path
    gateway_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def stop(self) -> None:
        """SIGTERM every process by PID, wait, SIGKILL what did not stop in time."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def dead(self) -> dict[str, int]:
        return {
            name: code for name, proc in self.processes.items() if (code := proc.poll()) is not None
        }


#: How ``evault gateway`` announces, on stdout, that it (every worker of it) serves: the start
#: of ``evault.gateway.main.READY_MESSAGE`` (not imported: this module stays light).
GATEWAY_READY_PREFIX: Final = "evault gateway: serving "


def _evault_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "evault", *args]


def _announced(log: Path, offset: int) -> bool:
    """Whether the gateway wrote its ready line to ``log`` past ``offset``."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            return GATEWAY_READY_PREFIX.encode() in f.read()
    except OSError:
        return False


def _wait_for_gateway(
    url: str, ca: Path, cluster: Cluster, timeout_s: float, log: Path, log_offset: int
) -> None:
    """Until the gateway answers and has announced that it serves: with several workers it
    answers once the first is ready, but deals connections only to the ready ones, so a
    client connecting earlier would stay on that first worker."""
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with httpx.Client(verify=ctx, timeout=2.0) as client:
        while time.monotonic() < deadline:
            dead = cluster.dead()
            if dead:
                raise StartFailed(
                    "process(es) exited during start-up: "
                    + ", ".join(f"{name} (status {code})" for name, code in dead.items())
                )
            try:
                response = client.get(f"{url}/api/v1/vault")
                if response.status_code == 200 and _announced(log, log_offset):
                    return
                last = (
                    f"HTTP {response.status_code}"
                    if response.status_code != 200
                    else "not every gateway worker serves yet"
                )
            except httpx.HTTPError as exc:
                last = str(exc) or type(exc).__name__
            time.sleep(0.2)
    raise StartFailed(f"the gateway at {url} did not answer within {timeout_s:.0f} s ({last})")


def start_cluster(
    directory: Path,
    *,
    port: int | None = None,
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
    extra_node_args: dict[int, list[str]] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> Cluster:
    """Start the nodes and the gateway of the vault in ``directory``; return once it answers."""
    directory = directory.resolve()
    gateway_config_path = directory / "gateway" / "gateway.toml"
    gateway = load_gateway_config(gateway_config_path)
    gateway_port = port or gateway.port
    url = f"https://127.0.0.1:{gateway_port}"
    logs = log_dir or (directory / "logs")
    logs.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(directory=directory, gateway_url=url)
    child_env = {**os.environ, **(env or {})}
    try:
        for endpoint in gateway.nodes:
            node_config = directory / "nodes" / f"node-{endpoint.index}" / "node.toml"
            load_node_config(node_config)  # fail early, in this process, on a broken config
            args = ["node", "--config", str(node_config)]
            args += (extra_node_args or {}).get(endpoint.index, [])
            with (logs / f"node-{endpoint.index}.log").open("ab") as log:
                cluster.processes[f"node-{endpoint.index}"] = subprocess.Popen(
                    _evault_command(*args), stdout=log, stderr=subprocess.STDOUT, env=child_env
                )
        gateway_log = logs / "gateway.log"
        log_offset = gateway_log.stat().st_size if gateway_log.exists() else 0
        with gateway_log.open("ab") as log:
            cluster.processes["gateway"] = subprocess.Popen(
                _evault_command(
                    "gateway", "--config", str(gateway_config_path), "--port", str(gateway_port)
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
            )
        _wait_for_gateway(url, gateway.ca_cert, cluster, timeout_s, gateway_log, log_offset)
    except BaseException:
        cluster.stop()
        raise
    write_client_config(directory, [url])
    return cluster


def write_client_config(directory: Path, gateways: list[str]) -> Path:
    """``DIR/client.toml``: what the CLI needs to talk to this vault and check its receipts."""
    path = directory / "client.toml"
    doc = {
        "gateways": gateways,
        "ca_cert": str((directory / "client" / "ca.pem").resolve()),
        "vault_public_key": str((directory / "client" / "vault-public.pem").resolve()),
        "seal_keys": str((directory / "client" / "seal-keys.json").resolve()),
    }
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_bytes(tomli_w.dumps(doc).encode("utf-8"))
    os.replace(tmp, path)
    return path


def run_until_signalled(cluster: Cluster, say: Callable[[str], None]) -> int:
    """Block until SIGINT/SIGTERM or the gateway dies; then stop everything."""
    stop = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    reported: set[str] = set()
    status = 0
    try:
        while not stop:
            for name, code in cluster.dead().items():
                if name not in reported:
                    reported.add(name)
                    say(f"{name} exited with status {code} (see {cluster.directory}/logs)")
            if "gateway" in reported:
                status = 1
                break
            time.sleep(0.25)
    finally:
        say("stopping the vault ...")
        cluster.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    say("stopped.")
    return status


def require_vault_dir(directory: Path) -> None:
    if not (directory / "vault.toml").is_file():
        raise ConfigError(f"{directory} holds no vault (run `evault init {directory}` first)")
