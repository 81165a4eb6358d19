"""The HTTP hop from the gateway to one node: send a request, get its answer as a stream.

:class:`evault.transport.nodes.NodeClient` speaks the node protocol over a :class:`Hop`, which
knows nothing of that protocol.  Two hops exist:

* :class:`AiohttpHop`, the real network: one ``aiohttp.ClientSession`` per node, whose
  connector keeps persistent HTTP/1.1 connections (the paper, §2.2 and §3: a connection per
  request was the bottleneck) with mutual TLS through the cluster's client ``SSLContext``.
  Each request names the node's certificate name (``node-<i>``) as SNI and verified host
  name, so a node reached by IP address still proves who it is.  aiohttp parses HTTP in
  compiled code and its TLS runs in the event loop's transport: measured against a live node
  on this project's 2-core machine, a small request costs 0.36 ms of CPU, against 1.0 ms
  through httpx's transport layers (httpcore, h11), which made the node hop the largest part
  of the gateway's CPU on small retrievals.
* :class:`HttpxHop`: any httpx client or transport.  Tests use it to put a node's ASGI app,
  a mock or a fake cluster behind the same :class:`~evault.transport.nodes.NodeClient`.

A hop raises whatever its library raises; ``evault.transport.nodes._translate`` is the one
place where those exceptions become evault errors.

Time-outs (:class:`evault.transport.nodes.Timeouts`) on the aiohttp hop: ``connect_s`` bounds
the TCP connect and TLS handshake; ``pool_s + connect_s`` the whole wait for a connection
(a free pooled one, or a new one); ``read_s`` each wait for data (also the wait for the answer
after the body was sent, while a node stores and signs).  aiohttp has no write time-out: a
node that stops reading a deposit body is caught by the deposit's own stall time-out
(``evault.gateway.fanout``), which drops that node.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import aiohttp
import httpx

if TYPE_CHECKING:
    from evault.transport.nodes import PoolLimits, Timeouts

#: Request body: none, whole bytes, or streamed chunks.
Content = bytes | AsyncIterator[bytes] | None

#: Bytes a response stream may buffer before aiohttp stops reading the socket (back-pressure).
#: Big enough that a 10 MiB retrieval's blocks arrive in few pieces, small enough to bound
#: memory per connection.
READ_BUFFER_BYTES: Final = 1 << 20


class Answer(Protocol):
    """An answer whose status and headers have arrived; the body is read with :meth:`chunks`.

    ``headers`` is case-insensitive.  :meth:`aclose` must be called however the exchange
    ends; an answer read to its end leaves its connection in the pool, one closed earlier
    loses it.
    """

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Hop(Protocol):
    """Sends one request at a time to one node (concurrent calls are fine)."""

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], content: Content
    ) -> Answer: ...

    async def aclose(self) -> None: ...


# --- aiohttp: the real network ------------------------------------------------------------------


class _AiohttpAnswer:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    def chunks(self) -> AsyncIterator[bytes]:
        return _chunks_as_received(self._response.content)

    async def aclose(self) -> None:
        # ``release`` pools the connection if the answer was read to its end (aiohttp closes
        # it otherwise): never a connection with unread bytes back in the pool.
        self._response.release()


class AiohttpHop:
    """Requests to one node over an aiohttp session (created on first use, in the loop)."""

    def __init__(
        self,
        *,
        tls_name: str,
        ssl_context: ssl.SSLContext | None,
        timeouts: Timeouts,
        limits: PoolLimits,
    ) -> None:
        self.tls_name = tls_name
        self._ssl_context = ssl_context
        self._timeouts = timeouts
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _open_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this node hop is closed")
        t, limits = self._timeouts, self._limits
        connector = aiohttp.TCPConnector(
            ssl=self._ssl_context if self._ssl_context is not None else True,
            limit=limits.max_connections,
            limit_per_host=0,
            keepalive_timeout=limits.keepalive_expiry_s,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=t.pool_s + t.connect_s,
                sock_connect=t.connect_s,
                sock_read=t.read_s,
            ),
            # Slices are incompressible: never ask for or decode compression, keep no cookies.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
            read_bufsize=READ_BUFFER_BYTES,
            raise_for_status=False,
        )

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], content: Content
    ) -> Answer:
        session = self._session
        if session is None:
            session = self._session = self._open_session()
        extra: dict[str, Any] = {}
        if url.startswith("https:"):
            extra["server_hostname"] = self.tls_name
        response = await session.request(
            method, url, headers=headers, data=content, allow_redirects=False, **extra
        )
        return _AiohttpAnswer(response)

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


# --- httpx: clients and transports given by tests --------------------------------------------


class _HttpxAnswer:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.aiter_bytes()

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxHop:
    """Requests through an ``httpx.AsyncClient`` (its own time-outs apply unless ``timeouts``
    is given) or straight to an ``httpx.AsyncBaseTransport`` (``timeouts`` or the defaults).
    The hop does not own what it is given: :meth:`aclose` closes nothing."""

    def __init__(
        self,
        http: httpx.AsyncClient | httpx.AsyncBaseTransport,
        *,
        tls_name: str,
        timeouts: Timeouts | None,
    ) -> None:
        from evault.transport.nodes import Timeouts

        self._http = http
        # httpcore verifies the certificate against the SNI name when it is given.
        self._extensions: dict[str, Any] = {"sni_hostname": tls_name}
        if timeouts is not None or not isinstance(http, httpx.AsyncClient):
            self._extensions["timeout"] = (timeouts or Timeouts()).to_httpx().as_dict()

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], content: Content
    ) -> Answer:
        request = httpx.Request(
            method, url, headers=headers, content=content, extensions=self._extensions
        )
        if isinstance(self._http, httpx.AsyncClient):
            response = await self._http.send(request, stream=True)
        else:
            response = await self._http.handle_async_request(request)
        return _HttpxAnswer(response)

    async def aclose(self) -> None:
        return None


async def _chunks_as_received(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body in the pieces the parser delivered, one at a time.  (``iter_any`` joins every
    piece buffered since the last read into a new bytes: a copy of most of a big answer when
    the reader runs behind the network; measured 4 % of the gateway's CPU on 10 MiB
    retrievals.)

    Not ``iter_chunks``: it stops at the first ``(b"", False)``, and the empty body of an
    answer without one (a 204) is aiohttp's one shared ``EMPTY_PAYLOAD``, which says so only
    to its first reader in the process and ``(b"", True)`` to every later one, forever.
    """
    while True:
        data, _ = await content.readchunk()
        if data:
            yield data
        elif content.at_eof():
            return
        # else b"" at the end of an HTTP chunk (chunked encoding): read on
