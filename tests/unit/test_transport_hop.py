"""The aiohttp hop to the nodes, against small real servers on loopback.

What the node protocol needs of its transport: persistent connections (an answer read to its
end leaves its connection pooled, one closed early does not), streamed request bodies in both
framings, time-outs and refusals as evault errors, and one pool per node.  Mutual TLS and
node names are tested in ``test_transport_nodes.py`` (``test_mutual_tls_names_and_keep_alive``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import httpx
import pytest
import yarl
from aiohttp.base_protocol import BaseProtocol
from multidict import CIMultiDict, CIMultiDictProxy

from evault.errors import BadNodeAnswer, NodeTimeout, NodeUnreachable
from evault.transport.hop import AiohttpHop, _chunks_as_received
from evault.transport.nodes import (
    NodeAddress,
    NodeSet,
    PoolLimits,
    Timeouts,
    _translate,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _server(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 request: (head, body), either framing."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    body = b""
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if not size:
                break
            body += chunk[:-2]
    elif b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
    return head, body


def _hop(timeouts: Timeouts | None = None) -> AiohttpHop:
    return AiohttpHop(
        tls_name="node-1", ssl_context=None, timeouts=timeouts or Timeouts(), limits=PoolLimits()
    )


def test_bodies_both_ways_over_one_kept_alive_connection() -> None:
    """A streamed body without a length goes out chunked, one with a length as is; answers
    read to their end keep the one connection for the next request."""
    connections = 0
    heads: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head, body = await _read_request(reader)
                heads.append(head)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def body(n: int) -> AsyncIterator[bytes]:
        for k in range(n):
            yield bytes([65 + k]) * 1000

    async def main() -> list[bytes]:
        server, port = await _server(echo)
        hop = _hop()
        answers = []
        try:
            url = f"http://127.0.0.1:{port}/o"
            for content, headers in (
                (body(1), {}),
                (body(3), {}),
                (body(2), {"Content-Length": "2000"}),
                (b"whole", {}),
                (None, {}),
            ):
                answer = await hop.send("PUT", url, headers, content)
                try:
                    assert answer.status == 200
                    answers.append(b"".join([c async for c in answer.chunks()]))
                finally:
                    await answer.aclose()
        finally:
            await hop.aclose()
            server.close()
        return answers

    answers = asyncio.run(main())
    assert answers == [
        b"A" * 1000,
        b"A" * 1000 + b"B" * 1000 + b"C" * 1000,
        b"A" * 1000 + b"B" * 1000,
        b"whole",
        b"",
    ]
    assert connections == 1
    assert b"transfer-encoding: chunked" in heads[0].lower()
    assert b"transfer-encoding" not in heads[2].lower()
    assert b"content-length: 2000" in heads[2].lower()


def test_an_answer_closed_before_its_end_does_not_go_back_to_the_pool() -> None:
    connections = 0

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await _read_request(reader)
                payload = b"x" * 200_000
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
                writer.write(payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> list[int]:
        server, port = await _server(big)
        hop = _hop()
        seen = []
        try:
            url = f"http://127.0.0.1:{port}/s"
            for read_all in (False, True, True):
                answer = await hop.send("GET", url, {}, None)
                try:
                    async for _ in answer.chunks():
                        if not read_all:
                            break
                finally:
                    await answer.aclose()
                await asyncio.sleep(0.01)
                seen.append(connections)
        finally:
            await hop.aclose()
            server.close()
        return seen

    # the first answer was abandoned: the second request needed a new connection, the third
    # reused the second's
    assert asyncio.run(main()) == [1, 2, 2]


def test_refused_silent_and_garbled_nodes_become_evault_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.Event().wait()

    async def garbled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        writer.write(b"HTTP/1.1 2OO OK\r\n\r\n")
        await writer.drain()
        writer.close()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        writer.close()

    async def main() -> dict[str, BaseException]:
        quiet, quiet_port = await _server(silent)
        bad, bad_port = await _server(garbled)
        gone, gone_port = await _server(hang_up)
        free, free_port = await _server(silent)
        free.close()
        await free.wait_closed()  # nothing listens on free_port any more
        ports = {"refused": free_port, "silent": quiet_port, "garbled": bad_port}
        ports["hung up"] = gone_port
        seen: dict[str, BaseException] = {}
        nodes = NodeSet(
            [
                NodeAddress(i, f"http://127.0.0.1:{port}")
                for i, port in enumerate(ports.values(), 1)
            ],
            timeouts=Timeouts(connect_s=5, read_s=0.3),
        )
        try:
            for i, what in enumerate(ports, 1):
                try:
                    await nodes[i].health()
                except Exception as exc:
                    seen[what] = exc
        finally:
            await nodes.aclose()
            for server in (quiet, bad, gone):
                server.close()
        return seen

    seen = asyncio.run(main())
    assert type(seen["refused"]) is NodeUnreachable and "cannot connect" in str(seen["refused"])
    assert isinstance(seen["silent"], NodeTimeout) and "waiting for data" in str(seen["silent"])
    assert isinstance(seen["garbled"], BadNodeAnswer)
    assert type(seen["hung up"]) is NodeUnreachable
    assert {exc.details["node"] for exc in seen.values()} == {1, 2, 3, 4}  # type: ignore[attr-defined]


_URL = yarl.URL("https://127.0.0.1:1/v1/health")
_REQUEST = aiohttp.RequestInfo(_URL, "GET", CIMultiDictProxy(CIMultiDict()), _URL)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (aiohttp.ConnectionTimeoutError("connect"), NodeTimeout),
        (aiohttp.SocketTimeoutError("read"), NodeTimeout),
        (aiohttp.ServerTimeoutError("x"), NodeTimeout),
        (TimeoutError(), NodeTimeout),
        (aiohttp.ServerDisconnectedError(), NodeUnreachable),
        (aiohttp.ClientConnectionResetError("reset"), NodeUnreachable),
        (aiohttp.ClientOSError(104, "reset"), NodeUnreachable),
        (aiohttp.ClientPayloadError("incomplete"), BadNodeAnswer),
        (aiohttp.ClientResponseError(_REQUEST, (), status=400, message="bad"), BadNodeAnswer),
        (aiohttp.ClientResponseError(None, (), status=400), BadNodeAnswer),  # type: ignore[arg-type]
        (aiohttp.InvalidURL("x"), NodeUnreachable),
        (aiohttp.ClientError("other"), NodeUnreachable),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_aiohttp_failures_map_into_the_evault_tree(exc: Exception, kind: type) -> None:
    translated = _translate(exc, 3, "slice")
    assert type(translated) is kind
    assert translated is not None and translated.details["node"] == 3


def test_each_node_has_a_pool_of_its_own() -> None:
    class Counting(httpx.AsyncBaseTransport):
        closed = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(204)

        async def aclose(self) -> None:
            Counting.closed += 1

    async def main() -> tuple[int, bool, int]:
        addresses = [NodeAddress(i, f"http://node-{i}.test") for i in (1, 2, 3)]
        own = NodeSet(addresses)
        hops = {id(client._hop) for client in own.clients.values()}
        aiohttp_hops = all(isinstance(c._hop, AiohttpHop) for c in own.clients.values())
        await own.aclose()
        shared = NodeSet(addresses, transport=Counting())
        await shared.aclose()
        return len(hops), aiohttp_hops, Counting.closed

    hops, aiohttp_hops, closed = asyncio.run(main())
    assert hops == 3 and aiohttp_hops
    assert closed == 1  # a transport given by a test is shared, and closed once


def test_a_closed_hop_refuses_new_requests() -> None:
    async def main() -> None:
        hop = _hop()
        await hop.aclose()
        await hop.send("GET", "http://127.0.0.1:9/", {}, None)

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(main())


def test_answer_chunks_are_the_pieces_as_received_never_joined() -> None:
    # iter_any would hand over one bytes joining everything buffered (a copy of most of a big
    # answer); the hop hands over each piece the parser delivered, and no empty one.
    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        protocol = BaseProtocol(loop)
        content = aiohttp.StreamReader(protocol, 2**16, loop=loop)
        for piece in (b"a" * 10, b"b" * 20, b"c" * 5):
            content.feed_data(piece)
        content.feed_eof()
        return [piece async for piece in _chunks_as_received(content)]

    assert asyncio.run(main()) == [b"a" * 10, b"b" * 20, b"c" * 5]


def test_chunked_answers_lose_no_byte_and_yield_no_empty_piece() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"x" * 3000, b"y" * 7, b"z" * 70000):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    [pieces] = asyncio.run(_answers_in_chunks(handler, "GET", 1))
    assert all(pieces) and b"".join(pieces) == b"x" * 3000 + b"y" * 7 + b"z" * 70000


@pytest.mark.timeout(30)  # the bug this guards against spins without yielding
def test_empty_answers_end_every_time() -> None:
    # aiohttp gives every answer without a body one shared EmptyStreamReader, whose
    # readchunk says "end" only once per process: a reader relying on it would spin forever
    # on the second 204.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
        writer.close()

    assert asyncio.run(_answers_in_chunks(handler, "DELETE", 3)) == [[], [], []]


async def _answers_in_chunks(handler: Handler, method: str, times: int) -> list[list[bytes]]:
    """Send ``times`` requests over one hop to a server running ``handler``; each answer's
    body as the chunks the hop handed over."""
    server, port = await _server(handler)
    hop = _hop()
    seen = []
    try:
        for _ in range(times):
            answer = await hop.send(method, f"http://127.0.0.1:{port}/x", {}, None)
            try:
                seen.append([chunk async for chunk in answer.chunks()])
            finally:
                await answer.aclose()
    finally:
        await hop.aclose()
        server.close()
        await server.wait_closed()
    return seen
