"""The gateway's HTTP transport to the nodes: httpcore's connection pool on asyncio streams.

``httpx.AsyncHTTPTransport`` runs its connections on anyio's streams, whose TLS layer moves
every record through ``ssl.MemoryBIO`` in Python.  On the event loop the gateway runs (uvloop),
asyncio streams get TLS from the loop itself, in compiled code.  Measured against a live node,
the anyio streams cost about 30% more CPU to receive a 3.5 MB slice and about 20% more per
small request; on 10 MiB retrievals the gateway spends a fifth less CPU on these streams.

:class:`AsyncioNetworkBackend` implements httpcore's documented network-backend interface
(``httpcore.AsyncNetworkBackend``) on ``asyncio.open_connection`` and
``StreamWriter.start_tls``; :class:`PooledTransport` is an ``httpx.AsyncBaseTransport`` over an
``httpcore.AsyncConnectionPool`` using it.  Every httpcore failure is re-raised as the httpx
exception httpx itself would raise (:data:`_ERRORS`), so ``evault.transport.nodes._translate``
stays the one place where transport failures become evault errors.  httpcore is the library
httpx is built on (a dependency of httpx, not a new one).

Time-outs: each operation runs under the time-out httpcore hands down (the request's
``timeout`` extension).  Closing a connection does not wait for the peer's TLS close_notify:
a connection is only closed when it is of no further use, and waiting could stall the request
that triggered the close.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, Final

import httpcore
import httpx

# httpcore exception → the httpx exception httpx raises for it (subclasses first).
_ERRORS: Final[tuple[tuple[type[Exception], type[httpx.TransportError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc) or type(exc).__name__) from exc
        raise


class _Stream(httpcore.AsyncNetworkStream):
    """One TCP (then TLS) connection as an asyncio reader/writer pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(f"no data for {timeout} s") from exc
        except (OSError, ssl.SSLError) as exc:  # ConnectionError and TLS errors among them
            raise httpcore.ReadError(f"{type(exc).__name__}: {exc}") from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(f"could not send for {timeout} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.WriteError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            self._writer.close()
            raise httpcore.ConnectTimeout(f"TLS handshake took over {timeout} s") from exc
        except (OSError, ssl.SSLError) as exc:  # certificate refused, reset, ...
            self._writer.close()
            raise httpcore.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            # Asked of an idle pooled connection: the loop has already read whatever arrived,
            # so "the node closed it" shows as end-of-stream here, not on the socket.
            return self._reader.at_eof() or self._writer.is_closing()
        return None


class AsyncioNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on asyncio streams (see the module docstring)."""

    #: Bytes the stream reader may buffer before it pauses reading from the socket.
    READ_LIMIT: Final = 1 << 20

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                    limit=self.READ_LIMIT,
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"no connection within {timeout} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return _Stream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("nodes are reached over TCP")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(self, body: AsyncIterable[bytes]) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for chunk in self._body:
                yield chunk

    async def aclose(self) -> None:
        close = getattr(self._body, "aclose", None)
        if close is not None:
            with _as_httpx_errors():
                await close()


class PooledTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with persistent pooled connections (httpcore), on :class:`AsyncioNetworkBackend`.

    ``ssl_context``: the client context for ``https`` URLs (None: plain HTTP only, for tests).
    The pool limits mean what they mean in ``httpx.Limits``.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_keepalive_connections: int,
        keepalive_expiry_s: float,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry_s,
            http1=True,
            http2=False,
            network_backend=AsyncioNetworkBackend(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core_request = httpcore.Request(
            method=request.method.encode("ascii"),
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,  # an async byte stream
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        if not isinstance(response.stream, AsyncIterable):  # pragma: no cover - httpcore's contract
            raise TypeError("httpcore returned a synchronous body to an async request")
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseBody(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        with _as_httpx_errors():
            await self._pool.aclose()
