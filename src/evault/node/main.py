"""`evault node --config FILE`: start one storage node (the paper's "evault daemon", §2.2).

Start-up, in order, each step failing with one clear sentence:

1. read ``node.toml`` (``evault.config``); refuse a test-only fault unless
   ``EVAULT_ALLOW_FAULTS=1`` is in the environment;
2. open the data directory — the store checks that it belongs to this vault and node, and runs
   fsck (interrupted deposits removed, damaged objects reported in the log);
3. read the threshold public key and this node's key share (``EVAULT_SHARE_PASSPHRASE`` if the
   share file is encrypted) and check the share against its verification key; read the
   sealing key (X25519) and open the unwrap-key store (``evault.node.unwrap``);
4. serve the internal protocol on ``host:port`` over mutual TLS (``evault.node.server``) until
   SIGTERM or SIGINT; running requests get a few seconds to finish; the store is closed.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Final

import uvicorn

from evault.config import NodeConfig, load_node_config
from evault.crypto import keyfiles
from evault.errors import ConfigError
from evault.ida import get_codec
from evault.node.app import create_app
from evault.node.server import make_server
from evault.node.service import SLOW_FAULT_DELAY_S, Fault, NodeService, NodeSettings
from evault.node.signing import ShareSigner
from evault.node.unwrap import UnwrapService, load_seal_key
from evault.protocol.node_api import GATEWAY_CERT_CN, MAX_UNWRAP_KEYS_PER_OWNER
from evault.serving import configure_logging, settle_heap
from evault.store import DiskSliceStore
from evault.store.keys import KeyShareStore

ALLOW_FAULTS_ENV: Final = "EVAULT_ALLOW_FAULTS"
#: Tests only (needs EVAULT_ALLOW_FAULTS=1): a directory to record every body in and out.
TRAFFIC_LOG_ENV: Final = "EVAULT_TRAFFIC_LOG"
FAULT_DELAY_ENV: Final = "EVAULT_FAULT_DELAY_S"
PASSPHRASE_ENV: Final = "EVAULT_SHARE_PASSPHRASE"

log = logging.getLogger("evault.node")


def parse_fault(fault: str | None, environ: dict[str, str] | None = None) -> Fault | None:
    """The fault mode named on the command line, refused unless the environment allows it."""
    if fault is None:
        return None
    env = os.environ if environ is None else environ
    try:
        mode = Fault(fault)
    except ValueError:
        names = ", ".join(f.value for f in Fault)
        raise ConfigError(f"unknown fault mode {fault!r} (known: {names})") from None
    if env.get(ALLOW_FAULTS_ENV) != "1":
        raise ConfigError(
            f"--fault {fault} makes this node misbehave on purpose and is for tests only; "
            f"set {ALLOW_FAULTS_ENV}=1 to allow it"
        )
    return mode


def _signer(config: NodeConfig) -> ShareSigner:
    passphrase_text = os.environ.get(PASSPHRASE_ENV)
    passphrase = passphrase_text.encode("utf-8") if passphrase_text is not None else None
    public = keyfiles.read_threshold_public(config.threshold_public)
    share = keyfiles.read_key_share(config.signing_share, passphrase)
    return ShareSigner(public, share, index=config.index)


def build_service(config: NodeConfig, fault: Fault | None) -> NodeService:
    """Everything but the network: settings, store (after fsck), signer, codec check."""
    c = config.cluster
    try:
        get_codec(c.codec, c.m, c.n)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{config.path}: [cluster] codec {c.codec!r}: {exc}") from exc
    signer = _signer(config)
    store = DiskSliceStore(config.data_dir, vault=config.vault, slice_index=config.index - 1)
    for sentence in store.last_fsck.sentences():
        log.info("store check: %s", sentence)
    delay_text = os.environ.get(FAULT_DELAY_ENV, str(SLOW_FAULT_DELAY_S))
    try:
        delay = float(delay_text)
    except ValueError:
        raise ConfigError(f"{FAULT_DELAY_ENV}={delay_text!r} is not a number of seconds") from None
    return NodeService(
        NodeSettings.from_config(config),
        store,
        signer,
        clock=lambda: datetime.now(UTC),
        fault=fault,
        slow_delay_s=delay,
    )


def build_unwrap_service(config: NodeConfig, fault: Fault | None) -> UnwrapService:
    """The node's confidentiality part: its sealing key and its unwrap-key store."""
    try:
        seal_key = load_seal_key(config.seal_key.read_text(encoding="ascii"))
    except FileNotFoundError:
        raise ConfigError(f"{config.path}: the sealing key {config.seal_key} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{config.path}: the sealing key {config.seal_key}: {exc}") from None
    store = KeyShareStore(
        config.data_dir,
        vault=config.vault,
        node=config.index,
        max_keys_per_owner=MAX_UNWRAP_KEYS_PER_OWNER,
    )
    return UnwrapService(
        vault=config.vault,
        index=config.index,
        nodes=config.cluster.n,
        store=store,
        seal_key=seal_key,
        clock=time.time,
        fault=fault,
    )


def traffic_dir(environ: dict[str, str] | None = None) -> Path | None:
    """The test-only traffic recording directory, refused unless faults are allowed."""
    env = os.environ if environ is None else environ
    value = env.get(TRAFFIC_LOG_ENV)
    if not value:
        return None
    if env.get(ALLOW_FAULTS_ENV) != "1":
        raise ConfigError(
            f"{TRAFFIC_LOG_ENV} records every document byte and is for tests only; "
            f"set {ALLOW_FAULTS_ENV}=1 to allow it"
        )
    return Path(value)


def run_node(config_path: str | Path, fault: str | None = None) -> None:
    """Run the node of ``config_path`` until SIGTERM/SIGINT (see the module docstring)."""
    configure_logging()
    config = load_node_config(config_path)
    mode = parse_fault(fault)
    if mode is not None:
        log.warning("node-%d runs with the test-only fault mode %r", config.index, mode.value)
    recording = traffic_dir()
    service = build_service(config, mode)
    unwrap = None
    try:
        unwrap = build_unwrap_service(config, mode)
        if recording is not None:
            log.warning("node-%d records all traffic in %s (test-only)", config.index, recording)
        app = create_app(
            service, require_client_cn=GATEWAY_CERT_CN, unwrap=unwrap, traffic_dir=recording
        )
        server = make_server(
            app,
            host=config.host,
            port=config.port,
            cert=config.cert,
            key=config.key,
            ca=config.ca_cert,
        )
        log.info(
            "node-%d of vault %s serving https://%s:%d (mutual TLS, clients: CN=%s)",
            config.index,
            config.vault,
            config.host,
            config.port,
            GATEWAY_CERT_CN,
        )
        received = _serve_until_signalled(server)
    finally:
        service.store.close()
        if unwrap is not None:
            unwrap.store.close()
        if isinstance(service.signer, ShareSigner):
            service.signer.close()  # the nonce pool's refill thread and the nonces it holds
    why = f" on {', '.join(signal.Signals(s).name for s in received)}" if received else ""
    log.info("node-%d stopped%s", config.index, why)


def _serve_until_signalled(server: uvicorn.Server) -> list[int]:
    """Run uvicorn; return the signals that stopped it.

    Uvicorn handles SIGTERM/SIGINT itself (graceful shutdown), then restores the previous
    handlers and re-raises the signal, whose default action would kill the process before the
    store is closed.  The handlers installed here are those "previous" ones: they only note the
    signal, so the shutdown finishes in order and the process exits with status 0.
    """
    received: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, note) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        settle_heap()
        server.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return received
