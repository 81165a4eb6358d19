"""The node transport on asyncio streams (``evault.transport.asyncio_net``).

Mutual TLS, certificate names and keep-alive over real sockets are tested through
:class:`~evault.transport.nodes.NodeSet` in ``test_transport_nodes.py``; here: the error mapping,
the idle-connection check, bodies in both directions, and time-outs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpcore
import httpx
import pytest

from evault.transport.asyncio_net import AsyncioNetworkBackend, PooledTransport, _as_httpx_errors
from evault.transport.nodes import NodeAddress, NodeSet


def _httpcore_exceptions() -> list[type[Exception]]:
    # ConnectionNotAvailable never leaves the pool: httpcore retries on another connection.
    return [
        value
        for name in dir(httpcore)
        if isinstance(value := getattr(httpcore, name), type)
        and issubclass(value, Exception)
        and value.__module__.startswith("httpcore")
        and value is not httpcore.ConnectionNotAvailable
    ]


@pytest.mark.parametrize("kind", _httpcore_exceptions(), ids=lambda kind: kind.__name__)
def test_every_httpcore_exception_becomes_the_httpx_one(kind: type[Exception]) -> None:
    with pytest.raises(httpx.HTTPError) as info, _as_httpx_errors():
        raise kind("boom")
    assert type(info.value).__name__ == kind.__name__ or kind.__name__ == "TimeoutException"
    assert "boom" in str(info.value)


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), _as_httpx_errors():
        raise KeyError("mine")


async def _server(
    handler: object,
) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    return server, server.sockets[0].getsockname()[1]


def test_an_idle_connection_the_peer_closed_is_seen_as_readable() -> None:
    async def main() -> tuple[bool, bytes, bytes, bool]:
        async def close_after_hello(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            writer.write(b"hello")
            await writer.drain()
            writer.close()

        quiet_done = asyncio.Event()

        async def quiet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await quiet_done.wait()
            writer.close()

        closing, port = await _server(close_after_hello)
        silent, quiet_port = await _server(quiet)
        backend = AsyncioNetworkBackend()
        try:
            stream = await backend.connect_tcp("127.0.0.1", port, timeout=5)
            first = await stream.read(100, timeout=5)
            end = await stream.read(100, timeout=5)
            closed_seen = stream.get_extra_info("is_readable")
            await stream.aclose()
            idle = await backend.connect_tcp("127.0.0.1", quiet_port, timeout=5)
            idle_seen = idle.get_extra_info("is_readable")
            await idle.aclose()
            quiet_done.set()
            return closed_seen, first, end, idle_seen
        finally:
            closing.close()
            silent.close()

    closed_seen, first, end, idle_seen = asyncio.run(main())
    assert (first, end) == (b"hello", b"")
    assert closed_seen is True and idle_seen is False


def test_refused_connection_and_read_time_out_are_httpx_errors() -> None:
    async def main() -> tuple[type[BaseException], type[BaseException]]:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)
            await asyncio.Event().wait()

        server, port = await _server(silent)
        free, free_port = await _server(silent)
        free.close()
        await free.wait_closed()  # nothing listens on free_port any more
        transport = PooledTransport(
            ssl_context=None, max_connections=4, max_keepalive_connections=4, keepalive_expiry_s=5
        )
        timeout = {"connect": 5, "read": 0.2, "write": 5, "pool": 5}
        kinds = []
        try:
            for target in (free_port, port):
                request = httpx.Request(
                    "GET", f"http://127.0.0.1:{target}/x", extensions={"timeout": timeout}
                )
                try:
                    await transport.handle_async_request(request)
                except httpx.TransportError as exc:
                    kinds.append(type(exc))
        finally:
            await transport.aclose()
            server.close()
        return kinds[0], kinds[1]

    refused, silent = asyncio.run(main())
    assert refused is httpx.ConnectError and silent is httpx.ReadTimeout


def test_bodies_both_ways_over_one_kept_alive_connection() -> None:
    """A streamed request body goes out chunked, answers come back whole, and three requests
    share one connection."""

    async def main() -> tuple[list[bytes], int]:
        connections = 0

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    body = b""
                    if b"transfer-encoding: chunked" in head.lower():
                        while True:
                            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                            chunk = await reader.readexactly(size + 2)
                            if not size:
                                break
                            body += chunk[:-2]
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server, port = await _server(echo)
        transport = PooledTransport(
            ssl_context=None, max_connections=4, max_keepalive_connections=4, keepalive_expiry_s=5
        )
        timeout = {"connect": 5, "read": 5, "write": 5, "pool": 5}

        async def body(n: int) -> AsyncIterator[bytes]:
            for k in range(n):
                yield bytes([65 + k]) * 1000

        answers = []
        try:
            for n in (1, 3, 0):
                request = httpx.Request(
                    "PUT",
                    f"http://127.0.0.1:{port}/o",
                    content=body(n),
                    extensions={"timeout": timeout},
                )
                response = await transport.handle_async_request(request)
                try:
                    answers.append(b"".join([c async for c in response.aiter_bytes()]))
                finally:
                    await response.aclose()
        finally:
            await transport.aclose()
            server.close()
        return answers, connections

    answers, connections = asyncio.run(main())
    assert answers == [b"A" * 1000, b"A" * 1000 + b"B" * 1000 + b"C" * 1000, b""]
    assert connections == 1


def test_each_node_has_a_pool_of_its_own() -> None:
    """httpcore walks all of a pool's connections per request: one pool per node keeps that
    walk to the node's own few connections."""

    class Counting(httpx.AsyncBaseTransport):
        closed = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(204)

        async def aclose(self) -> None:
            Counting.closed += 1

    async def main() -> tuple[int, int]:
        addresses = [NodeAddress(i, f"http://node-{i}.test") for i in (1, 2, 3)]
        own = NodeSet(addresses)
        pools = len({id(client._http) for client in own.clients.values()})
        await own.aclose()
        shared = NodeSet(addresses, transport=Counting())
        await shared.aclose()
        return pools, Counting.closed

    pools, closed = asyncio.run(main())
    assert pools == 3
    assert closed == 1  # a transport given by a test is shared, and closed once
