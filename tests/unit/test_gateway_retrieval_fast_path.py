"""The retrieval fast path: the FV cache, and node connections that survive a retrieval.

Same fake nodes as ``test_gateway_service.py`` (the node protocol served in-process).  What is
checked here: a version whose FV the gateway knows is read with m slice requests and no
metadata round, and still verified against the signed receipt's fv_hash; spare metadata
requests are left to finish instead of being cancelled; slice answers are read to their end
(both keep the pooled keep-alive connections alive).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evault.errors import BadNodeAnswer, InvalidSignature, NodeTimeout
from evault.gateway.rebuild import FVCache
from evault.gateway.receipts import VerifiedReceipts
from evault.gateway.service import VaultService
from evault.ida.fingerprint import FingerprintVector
from evault.protocol.node_api import HEADER_FV_HASH
from evault.protocol.statement import Statement
from evault.transport.nodes import NodeAddress, NodeSet, SliceStream, Timeouts
from tests.unit.test_gateway_service import (
    SEGMENT,
    VAULT,
    FakeCluster,
    FakeCombiner,
    Harness,
    chunks,
    cluster,
    document,
)


def meta_requests(h: Harness, node: int) -> int:
    return sum(
        1
        for method, path, _ in h.nodes[node].log
        if method == "GET" and not path.endswith("/slice")
    )


async def deposit_and_retrieve(service: VaultService, data: bytes) -> tuple[bytes, Any]:
    await service.deposit("alice", "doc.bin", chunks(data))
    retrieval = await service.retrieve("alice", "doc.bin")
    return b"".join([chunk async for chunk in retrieval]), retrieval


# --- the FV cache -----------------------------------------------------------------------------


def fv(seed: int, n: int = 5) -> FingerprintVector:
    return FingerprintVector(tuple(bytes([seed, k]) * 16 for k in range(n)))


def test_fv_cache_is_keyed_by_the_vectors_own_hash() -> None:
    cache = FVCache(4)
    cache.put(fv(1))
    assert cache.get(fv(1).fv_hash()) == fv(1)
    assert cache.get(fv(2).fv_hash()) is None


def test_fv_cache_evicts_the_least_recently_used() -> None:
    cache = FVCache(2)
    cache.put(fv(1))
    cache.put(fv(2))
    assert cache.get(fv(1).fv_hash()) == fv(1)  # 1 is now the most recent
    cache.put(fv(3))
    assert len(cache) == 2
    assert cache.get(fv(2).fv_hash()) is None
    assert cache.get(fv(1).fv_hash()) == fv(1) and cache.get(fv(3).fv_hash()) == fv(3)


def test_fv_cache_never_returns_a_vector_under_another_hash() -> None:
    cache = FVCache(4)
    cache.put(fv(1))
    cache._entries[fv(2).fv_hash()] = fv(1)  # a corrupted entry
    assert cache.get(fv(2).fv_hash()) is None
    assert len(cache) == 1


def test_fv_cache_of_size_zero_keeps_nothing() -> None:
    cache = FVCache(0)
    cache.put(fv(1))
    assert len(cache) == 0 and cache.get(fv(1).fv_hash()) is None
    with pytest.raises(ValueError, match="max_entries"):
        FVCache(-1)


def test_deposit_fills_the_cache_and_the_retrieval_skips_the_metadata_round() -> None:
    h = Harness(cluster())
    data = document(5 * SEGMENT + 3)
    got, retrieval = h.run(lambda s: deposit_and_retrieve(s, data))
    assert got == data
    assert retrieval.faulty == {} and retrieval.failed == {}
    assert [meta_requests(h, node) for node in range(1, 6)] == [0, 0, 0, 0, 0]
    assert [len(h.slice_requests(node)) for node in range(1, 6)] == [1, 1, 1, 0, 0]


def test_a_settled_fv_is_remembered_for_the_next_retrieval() -> None:
    h = Harness(cluster())
    data = document(2 * SEGMENT)
    h.deposit(data)  # another service: this gateway has never seen the FV

    async def twice(service: VaultService) -> list[bytes]:
        out = []
        for _ in range(2):
            retrieval = await service.retrieve("alice", "doc.bin")
            out.append(b"".join([chunk async for chunk in retrieval]))
        return out

    assert h.run(twice) == [data, data]
    # one metadata round (at least m nodes asked), then none
    assert sum(meta_requests(h, node) for node in range(1, 6)) in range(3, 6)
    assert [len(h.slice_requests(node)) for node in range(1, 4)] == [2, 2, 2]


def test_cache_off_always_asks_for_metadata() -> None:
    h = Harness(cluster(), fv_cache_entries=0)
    data = document(SEGMENT)
    got, _ = h.run(lambda s: deposit_and_retrieve(s, data))
    assert got == data
    assert sum(meta_requests(h, node) for node in range(1, 6)) >= 3


def test_with_a_cached_fv_a_node_serving_another_fv_is_named_and_replaced() -> None:
    h = Harness(cluster())
    data = document(3 * SEGMENT)

    async def go(service: VaultService) -> tuple[bytes, Any]:
        await service.deposit("alice", "doc.bin", chunks(data))
        # Node 2 now claims its slice belongs to another FV (its stored statement changed).
        for obj in h.nodes[2].objects.values():
            other = replace(Statement.from_bytes(obj.statement), fv_hash="cd" * 32)
            obj.statement = other.to_bytes()
        retrieval = await service.retrieve("alice", "doc.bin")
        return b"".join([chunk async for chunk in retrieval]), retrieval

    got, retrieval = h.run(go)
    assert got == data
    assert set(retrieval.faulty) == {2}
    assert "differs from the receipt's fv_hash" in retrieval.faulty[2]
    assert h.slice_requests(4) == [{}]  # the replacement read the whole slice


def test_with_a_cached_fv_a_node_flipping_bytes_is_still_caught() -> None:
    h = Harness(cluster())
    data = document(4 * SEGMENT)

    async def go(service: VaultService) -> tuple[bytes, Any]:
        await service.deposit("alice", "doc.bin", chunks(data))
        h.nodes[1].faults.flip_blocks_from = 2
        retrieval = await service.retrieve("alice", "doc.bin")
        return b"".join([chunk async for chunk in retrieval]), retrieval

    got, retrieval = h.run(go)
    assert got == data
    assert set(retrieval.faulty) == {1} and "fingerprint" in retrieval.faulty[1]


# --- connections survive ------------------------------------------------------------------------


class _Recording(httpx.AsyncByteStream):
    """A response body that records whether it was read to its end or abandoned."""

    def __init__(
        self, inner: httpx.AsyncByteStream, log: list[str], tag: str, ended: asyncio.Event
    ) -> None:
        self.inner, self.log, self.tag, self.ended = inner, log, tag, ended

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            yield chunk
        self.log.append(f"{self.tag} read to the end")
        self.ended.set()

    async def aclose(self) -> None:
        self.log.append(f"{self.tag} closed")


class SlowMetaCluster(FakeCluster):
    """Node ``slow`` answers metadata only once ``release`` is set; every body is recorded."""

    def __init__(self, nodes: Any, slow: int) -> None:
        super().__init__(nodes)
        self.slow = slow
        self.release = asyncio.Event()
        self.slow_answer_read = asyncio.Event()
        self.log: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = int(request.url.host.split(".")[0].split("-")[1])
        kind = "slice" if request.url.path.endswith("/slice") else request.method
        if index == self.slow and kind == "GET":
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.log.append(f"{kind} {index} cancelled")
                raise
        response = await super().handle_async_request(request)
        # A response built from bytes would be handed over without being streamed: stream it.
        inner = response.stream
        if not isinstance(inner, httpx.AsyncByteStream) or hasattr(response, "_content"):
            inner = httpx.ByteStream(response.content)
        ended = self.slow_answer_read if index == self.slow else asyncio.Event()
        headers = [(k, v) for k, v in response.headers.items() if k != "content-length"]
        return httpx.Response(
            response.status_code,
            headers=headers,
            stream=_Recording(inner, self.log, f"{kind} {index}", ended),
        )


def test_spare_metadata_requests_finish_and_slice_answers_are_read_to_the_end() -> None:
    h = Harness(cluster())
    data = document(3 * SEGMENT + 1)
    h.deposit(data)
    transport = SlowMetaCluster(h.nodes, slow=5)

    async def go(service: VaultService) -> bytes:
        retrieval = await service.retrieve("alice", "doc.bin")
        got = b"".join([chunk async for chunk in retrieval])
        transport.release.set()  # node 5 answers only after the retrieval is over
        async with asyncio.timeout(5):
            await transport.slow_answer_read.wait()
        return got

    async def main() -> bytes:
        node_set = NodeSet(
            [NodeAddress(i, f"http://node-{i}.test") for i in h.nodes],
            transport=transport,
            timeouts=Timeouts(connect_s=5, read_s=5, write_s=5, pool_s=5),
        )
        service = VaultService.from_parts(
            vault=VAULT,
            cluster=h.params,
            nodes=node_set,
            catalog=h.catalog,
            combiner=h.combiner,
            node_timeout_s=5.0,
        )
        try:
            return await go(service)
        finally:
            await service.aclose()

    assert asyncio.run(main()) == data
    assert "GET 5 cancelled" not in transport.log
    assert "GET 5 read to the end" in transport.log
    for node in (1, 2, 3):
        assert f"slice {node} read to the end" in transport.log


# --- SliceStream.finish ---------------------------------------------------------------------------


class _Answer:
    """A slice answer as a hop hands it over, its body in one piece."""

    status = 200

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.headers = {HEADER_FV_HASH: "ab" * 32}

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    async def aclose(self) -> None:
        return None


def _stream(body: bytes) -> SliceStream:
    return SliceStream(
        3,
        _Answer(body),
        slice_index=2,
        leaves_bytes=32,
        fv_hash=bytes(32),
        segment_count=1,
        from_segment=0,
    )


def test_finish_accepts_an_answer_read_exactly_to_its_end() -> None:
    async def go() -> bytes:
        stream = _stream(b"a" * 40)
        got = await stream.read_exactly(40)
        await stream.finish()
        return got

    assert asyncio.run(go()) == b"a" * 40


def test_finish_refuses_bytes_past_the_last_block() -> None:
    async def go() -> None:
        stream = _stream(b"a" * 45)
        await stream.read_exactly(40)
        await stream.finish()

    with pytest.raises(BadNodeAnswer, match="5 bytes past the last block"):
        asyncio.run(go())


# --- receipts already verified --------------------------------------------------------------------


class CountingCombiner(FakeCombiner):
    def __init__(self, k: int) -> None:
        super().__init__(k)
        self.verified = 0

    def verify(self, statement: bytes, signature: bytes) -> None:
        self.verified += 1
        super().verify(statement, signature)


def test_verified_receipts_remember_exact_bytes() -> None:
    seen = VerifiedReceipts(2)
    seen.add(b"statement", b"signature")
    assert seen.seen(b"statement", b"signature")
    assert not seen.seen(b"statement", b"signaturf")
    assert not seen.seen(b"statementsig", b"nature")  # the length prefix keeps them apart
    seen.add(b"a", b"1")
    seen.add(b"b", b"2")
    assert len(seen) == 2 and not seen.seen(b"statement", b"signature")
    off = VerifiedReceipts(0)
    off.add(b"a", b"1")
    assert not off.seen(b"a", b"1")


def test_a_receipt_verified_at_deposit_is_not_verified_again() -> None:
    combiner = CountingCombiner(4)
    h = Harness(cluster(), combiner=combiner)
    data = document(2 * SEGMENT)

    async def go(service: VaultService) -> list[bytes]:
        await service.deposit("alice", "doc.bin", chunks(data))
        out = []
        for _ in range(3):
            retrieval = await service.retrieve("alice", "doc.bin")
            out.append(b"".join([chunk async for chunk in retrieval]))
        return out

    assert h.run(go) == [data] * 3
    assert combiner.verified == 1  # the deposit's own check, none for the retrievals


def test_a_tampered_catalog_receipt_is_still_refused() -> None:
    h = Harness(cluster())
    data = document(SEGMENT)

    async def go(service: VaultService) -> None:
        await service.deposit("alice", "doc.bin", chunks(data))
        retrieval = await service.retrieve("alice", "doc.bin")
        await retrieval.aclose()
        h.catalog.versions[("alice", "doc.bin", 1)]["signature"] = b"forged"
        await service.retrieve("alice", "doc.bin")

    with pytest.raises(InvalidSignature):
        h.run(go)


class _Chunked(_Answer):
    def __init__(self, pieces: list[bytes]) -> None:
        super().__init__(b"")
        self.pieces = pieces

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self.pieces:
            yield chunk


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(min_size=0, max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=12),
    reads=st.lists(st.integers(min_value=0, max_value=80), max_size=12),
)
def test_read_exactly_returns_the_body_in_order_however_it_is_chunked(
    body: bytes, cuts: list[int], reads: list[int]
) -> None:
    edges = sorted({0, len(body), *(c for c in cuts if c <= len(body))})
    chunks = [body[a:b] for a, b in itertools.pairwise(edges)]

    async def go() -> list[bytes]:
        stream = SliceStream(
            1,
            _Chunked(chunks),
            slice_index=0,
            leaves_bytes=0,
            fv_hash=bytes(32),
            segment_count=0,
            from_segment=0,
        )
        out = []
        for size in reads:
            try:
                out.append(await stream.read_exactly(size))
            except BadNodeAnswer:
                out.append(b"<short>")
                break
        return out

    got = asyncio.run(go())
    position = 0
    for size, piece in zip(reads, got, strict=False):
        if position + size > len(body):
            assert piece == b"<short>"
            break
        assert piece == body[position : position + size] and type(piece) is bytes
        position += size


def test_node_set_time_outs_apply_on_the_bare_transport() -> None:
    """Requests skip httpx's client, so the time-outs travel with each request: a node that
    accepts and never answers is a NodeTimeout after read_s, not a hang."""

    async def main() -> type[BaseException]:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)
            await asyncio.Event().wait()  # never answers; cancelled when the server closes

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with NodeSet(
                [NodeAddress(1, f"http://127.0.0.1:{port}")],
                timeouts=Timeouts(connect_s=5, read_s=0.2, write_s=5, pool_s=5),
            ) as nodes:
                async with asyncio.timeout(10):
                    try:
                        await nodes[1].health()
                    except NodeTimeout as exc:
                        return type(exc)
                    raise AssertionError("a silent node answered")
        finally:
            server.close()

    assert asyncio.run(main()) is NodeTimeout


def test_parsed_statements_are_remembered_by_their_exact_bytes() -> None:
    from evault.errors import FormatError
    from evault.gateway.service import parsed_statement
    from tests.unit.test_statement import FIELDS

    raw = Statement(**FIELDS).to_bytes()  # type: ignore[arg-type]
    first = parsed_statement(bytes(raw))
    assert first == Statement.from_bytes(raw)
    assert parsed_statement(bytes(raw)) is first  # equal bytes, another object: remembered
    other = Statement(**{**FIELDS, "version": 2}).to_bytes()  # type: ignore[arg-type]
    assert parsed_statement(other).version == 2
    broken = raw.replace(b'"v":1', b'"v":2')
    assert broken != raw
    for _ in range(2):  # a refusal is never remembered as a statement
        with pytest.raises(FormatError):
            parsed_statement(broken)
