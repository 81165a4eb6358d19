"""``evault gateway --config FILE``: the gateway process.

One process holds one catalog (one SQLAlchemy engine and its pool of open connections, the
paper's §3 bottleneck avoided), one vault service (its pooled mutual-TLS connections to the
nodes), and serves the public API over HTTPS with uvicorn.  Start-up order:

1. read the config and the vault's public key (once; the API hands it out);
2. migrate the catalog to the newest schema (idempotent; several gateways may race safely);
3. bind the listening socket (so a port clash is reported before anything else starts);
4. with ``[gateway] workers`` above 1, fork that many serving processes and supervise them
   (``evault.gateway.workers``): this process accepts the connections and deals them out;
   each worker opens its own catalog engine and node connections, and runs TLS and HTTP on
   the connections it is handed;
5. in the server's lifespan (of the lone process, or of worker 0): fail the deposits a
   previous run left pending, then serve.

SIGTERM or SIGINT stops accepting connections, lets requests in flight finish (at most
``GRACEFUL_SHUTDOWN_S``), closes the node connections and the database pool, and exits.
Access logs carry no secrets: no headers (tokens), no bodies (passwords).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import uvicorn
from fastapi import FastAPI

from evault.catalog import Catalog
from evault.config import GatewayConfig, load_gateway_config, usable_cpus
from evault.errors import ConfigError
from evault.gateway.api import ApiSettings, VaultInfo
from evault.gateway.app import Lifespan, create_app
from evault.gateway.service import VaultService
from evault.gateway.workers import Intake, supervise
from evault.serving import configure_logging, settle_heap
from evault.transport.coalesce import CoalescingHttpToolsProtocol
from evault.transport.tls import server_context

log = logging.getLogger("evault.gateway")

GRACEFUL_SHUTDOWN_S: Final = 30
KEEP_ALIVE_S: Final = 75
READY_MESSAGE: Final = "evault gateway: serving https://{host}:{port} (vault {vault})"
#: The nodes are swept of slices of deleted and failed versions at start-up, then this often.
SWEEP_EVERY_S: Final = 3600.0


def read_vault_info(config: GatewayConfig) -> VaultInfo:
    """The vault's public facts; the public key file is read here, once."""
    try:
        pem = config.vault_public_key.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the vault public key {config.vault_public_key}: {exc}"
        ) from exc
    if "-----BEGIN PUBLIC KEY-----" not in pem:
        raise ConfigError(f"{config.vault_public_key} is not a PEM public key")
    c = config.cluster
    return VaultInfo(
        vault_id=config.vault,
        n=c.n,
        m=c.m,
        k=c.k,
        t=c.t,
        codec=c.codec,
        segment_bytes=c.segment_bytes,
        fingerprint_scheme=c.fingerprint_scheme,
        public_key_pem=pem,
    )


async def sweep_every(service: VaultService, interval_s: float) -> None:
    """Sweep the nodes now, then every ``interval_s`` (``VaultService.sweep``), until
    cancelled; a sweep that fails is logged and tried again at the next turn."""
    while True:
        try:
            outcome = await service.sweep()
        except Exception:
            log.exception("sweep of the nodes failed")
        else:
            if outcome.unknown:
                log.warning(
                    "the nodes hold %d object(s) of versions this catalog does not know: if the "
                    "catalog was lost or brought back from an older backup, run "
                    "`evault admin restore-catalog --config <this gateway's config>`",
                    outcome.unknown,
                )
            count = sum(len(oids) for oids in outcome.swept.values())
            if count or outcome.failed:
                log.info(
                    "swept %d object(s) of deleted or failed versions from the nodes (%d listed)%s",
                    count,
                    outcome.seen,
                    f"; not swept: {outcome.failed}" if outcome.failed else "",
                )
        await asyncio.sleep(interval_s)


def _lifespan(service: VaultService, catalog: Catalog, *, maintenance: bool) -> Lifespan:
    """Serve with ``service``; with ``maintenance`` (a lone gateway, or worker 0 of several),
    first fail the deposits an earlier run left pending, and sweep the nodes hourly."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = None
        if maintenance:
            cleaned = await service.cleanup_pending()
            if cleaned:
                log.info("failed %d deposit(s) left pending by an earlier run", len(cleaned))
            sweeper = asyncio.create_task(sweep_every(service, SWEEP_EVERY_S))
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            await service.aclose()
            catalog.close()

    return lifespan


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


class _Server(uvicorn.Server):
    """uvicorn's server, calling ``on_ready`` once the lifespan start-up is done; with an
    ``intake`` (a worker of several) it serves the connections the supervisor hands over
    instead of listening itself."""

    def __init__(
        self, config: uvicorn.Config, on_ready: Callable[[], None], intake: Intake | None
    ) -> None:
        super().__init__(config)
        self._on_ready = on_ready
        self._intake = intake
        self._adopting: set[asyncio.Task[None]] = set()
        self._protocol: Callable[[], asyncio.Protocol] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        if self._intake is not None:
            self._protocol = self._counted_protocol(self._intake)
            asyncio.get_running_loop().add_reader(self._intake.fileno(), self._take_connections)
        self._on_ready()

    def _counted_protocol(self, intake: Intake) -> Callable[[], asyncio.Protocol]:
        """uvicorn's protocol for a handed-over connection, telling ``intake`` when it ends."""
        config = self.config
        base: type[Any] = config.http_protocol_class

        class Counted(base):  # type: ignore[misc]
            def connection_lost(self, exc: Exception | None) -> None:
                try:
                    super().connection_lost(exc)
                finally:
                    intake.finished()

        def protocol() -> asyncio.Protocol:
            made: asyncio.Protocol = Counted(
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            return made

        return protocol

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._intake is not None:  # stop taking connections, as a listener would
            asyncio.get_running_loop().remove_reader(self._intake.fileno())
        await super().shutdown(sockets=sockets)

    def _take_connections(self) -> None:
        intake, protocol = self._intake, self._protocol
        assert intake is not None and protocol is not None
        loop = asyncio.get_running_loop()
        try:
            connections = intake.receive()
        except EOFError:  # the supervisor is gone (and this process with it, soon)
            loop.remove_reader(intake.fileno())
            self.should_exit = True
            return
        for conn in connections:
            task = loop.create_task(self._adopt(conn, intake, protocol))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    async def _adopt(
        self, conn: socket.socket, intake: Intake, protocol: Callable[[], asyncio.Protocol]
    ) -> None:
        """Run TLS and uvicorn's HTTP protocol on a handed-over connection."""
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(protocol, conn, ssl=self.config.ssl)
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            # As with a listening server: a failed handshake is the client's business.
            log.debug("gateway: a connection ended before serving: %s", exc)
            conn.close()
            intake.finished()


def run_gateway(config_path: str | Path, port: int | None = None) -> None:
    """Run the gateway of ``config_path`` until SIGTERM/SIGINT; ``port`` overrides the
    config's (0 = any free port, printed on stdout when ready).  With ``[gateway] workers``
    above 1 this process binds the socket and supervises that many serving processes
    (``evault.gateway.workers``)."""
    if port is not None and (not isinstance(port, int) or not 0 <= port <= 65535):
        raise ValueError(f"port: expected an int in [0, 65535], got {port!r}")
    _configure_logging()
    config = load_gateway_config(config_path)
    info = read_vault_info(config)
    tls = server_context(config.server_cert, config.server_key)
    tls.set_alpn_protocols(["http/1.1"])
    catalog = Catalog(config.database_url)
    try:
        catalog.migrate()
    finally:
        catalog.close()  # each serving process opens its own engine: none crosses a fork
    sock = _bind(config.host, config.port if port is None else port)
    bound_host, bound_port = sock.getsockname()[:2]
    announce = READY_MESSAGE.format(host=bound_host, port=bound_port, vault=info.vault_id)

    def ready() -> None:
        print(announce, flush=True)

    address = (bound_host, bound_port)

    def serve(index: int, on_ready: Callable[[], None], intake: Intake) -> None:
        _serve(config, info, tls, intake, address, maintenance=index == 0, on_ready=on_ready)

    try:
        if config.workers == 1:
            _serve(config, info, tls, sock, address, maintenance=True, on_ready=ready)
        else:
            log.info("gateway: %d workers on %s:%d", config.workers, bound_host, bound_port)
            supervise(
                config.workers,
                serve,
                listener=sock,
                on_ready=ready,
                stop_grace_s=GRACEFUL_SHUTDOWN_S + 10,
            )
    finally:
        sock.close()


def _serve(
    config: GatewayConfig,
    info: VaultInfo,
    tls: ssl.SSLContext,
    source: socket.socket | Intake,
    address: tuple[str, int],
    *,
    maintenance: bool,
    on_ready: Callable[[], None],
) -> None:
    """Serve the connections of ``source`` (the listening socket, bound to ``address``, or a
    worker's intake) until SIGTERM/SIGINT, with this process's own catalog engine and node
    connections; ``maintenance``: run the start-up clean-up and the hourly sweep here."""
    catalog = Catalog(config.database_url)
    try:
        # A thread for big segments pays only where a core would otherwise idle.
        service = VaultService(config, catalog, decode_in_thread=config.workers < usable_cpus())
    except BaseException:
        catalog.close()
        raise
    settings = ApiSettings(
        info=info,
        catalog=catalog,
        service=service,
        max_document_bytes=config.max_document_bytes,
    )
    app = create_app(settings, lifespan=_lifespan(service, catalog, maintenance=maintenance))
    bound_host, bound_port = address

    def tls_factory(_config: uvicorn.Config, _default: Any) -> ssl.SSLContext:
        return tls

    server_config = uvicorn.Config(
        app,
        host=bound_host,
        port=bound_port,
        ssl_context_factory=tls_factory,
        http=CoalescingHttpToolsProtocol,
        lifespan="on",
        log_config=None,  # our logging set-up (below) applies to uvicorn's loggers too
        access_log=False,  # replaced by evault.gateway.access, which never logs headers
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    if isinstance(source, Intake):
        server = _Server(server_config, on_ready, source)
        sockets: list[socket.socket] = []
    else:
        server = _Server(server_config, on_ready, None)
        sockets = [source]
    settle_heap()
    server.run(sockets=sockets)


def _configure_logging() -> None:
    configure_logging()
    # One access line per public request is the record; the node calls behind it would add
    # five to ten lines each (failures are logged by the service with their reasons).
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
