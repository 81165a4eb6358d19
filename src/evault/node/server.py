"""Serving the node's ASGI app with uvicorn over mutual TLS, exposing the client certificate.

The TLS handshake itself admits only clients whose certificate chains to the cluster CA
(``CERT_REQUIRED`` with the CA as the only trust anchor).  The spec further requires the client
to be the gateway (subject CN ``evault-gateway``), and the app enforces that
(``evault.node.app.ClientCertGate``).  Uvicorn does not put the peer certificate into the ASGI
scope, so :class:`PeerCertProtocol` does: when a connection is made — after the handshake, so the
certificate is verified and available — it reads it from the transport's SSL object and adds it
to every request's scope as the ASGI TLS extension (``scope["extensions"]["tls"]``:
``client_cert_chain`` as PEM, ``client_cert_name`` as an RFC 4514 string, ``tls_version``,
``cipher_suite``).  If the transport has no certificate the extension says so and the gate
answers ``401``: it fails closed.  A test runs the real process and checks that a client holding
a CA-issued certificate with another CN is refused.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any, Final

import uvicorn
from cryptography import x509
from starlette.types import ASGIApp, Receive, Scope, Send

from evault.transport.coalesce import CoalescingHttpToolsProtocol
from evault.transport.tls import server_context

#: Seconds an idle keep-alive connection stays open (the gateway pools connections).
KEEP_ALIVE_S: Final = 75
#: Seconds given to running requests on SIGTERM before they are cut.
GRACEFUL_SHUTDOWN_S: Final = 10


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any]:
    """The ASGI TLS extension for one connection, from its SSL object."""
    info: dict[str, Any] = {
        "server_cert": None,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": None,
        "cipher_suite": None,
    }
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        info["client_cert_error"] = "not a TLS connection"
        return info
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        info["client_cert_error"] = "no client certificate"
        return info
    pem = ssl.DER_cert_to_PEM_cert(der)
    info["client_cert_chain"] = [pem]
    info["client_cert_name"] = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    version = ssl_object.version()
    info["tls_version"] = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}.get(version or "")
    return info


class PeerCertProtocol(CoalescingHttpToolsProtocol):
    """Uvicorn's HTTP/1.1 protocol (writing once per loop turn, ``evault.transport.coalesce``),
    plus the TLS extension in every request's scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        extension = tls_extension(transport)
        app = self.app

        async def with_tls(scope: Scope, receive: Receive, send: Send) -> None:
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = extension
            scope["extensions"] = extensions
            await app(scope, receive, send)

        self.app = with_tls


def make_server(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    cert: Path,
    key: Path,
    ca: Path,
) -> uvicorn.Server:
    """A uvicorn server for ``app`` on ``host:port``, mutual TLS against the cluster CA."""

    def context(_config: uvicorn.Config, _default: Any) -> ssl.SSLContext:
        return server_context(cert, key, ca=ca, require_client_cert=True)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=PeerCertProtocol,
        ssl_context_factory=context,
        lifespan="off",
        access_log=False,  # AccessLog writes our own line per request
        log_config=None,
        server_header=False,
        # Only the gateway talks to a node, directly: no proxy's X-Forwarded-* is believed.
        proxy_headers=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return uvicorn.Server(config)
