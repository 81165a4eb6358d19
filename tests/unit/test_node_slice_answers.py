"""Slice answers the node reads on its event loop (small) or streams (large), and index reads
that never wait for a writer.  The protocol itself is tested in ``test_node_app.py``."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from evault.crypto import threshold_rsa
from evault.node import service as node_service
from evault.node.service import Fault
from tests.unit.test_node_app import SEGMENT, Node, _obj, document, make_proposal

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def keys(
    vault_key_2048: Any,
) -> tuple[threshold_rsa.ThresholdPublicKey, list[threshold_rsa.KeyShare]]:
    return vault_key_2048.public, list(vault_key_2048.shares)


@pytest.fixture
async def node(tmp_path: Path, keys: Any) -> AsyncIterator[Node]:
    n = Node(tmp_path, keys)
    yield n
    await n.client.aclose()
    n.store.close()


async def _bodies(node: Node, segments: int) -> list[bytes]:
    out = []
    for start in range(segments + 1):
        query = f"/slice?from_segment={start}" if start else "/slice"
        response = await node.client.get(_obj(make_proposal(), query))
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == len(response.content)
        out.append(response.content)
    return out


async def test_small_and_streamed_answers_are_the_same_bytes(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    await node.put(document(6 * SEGMENT + 7))
    inline = await _bodies(node, 7)
    monkeypatch.setattr(node_service, "INLINE_SLICE_BYTES", 0)  # every answer streams
    streamed = await _bodies(node, 7)
    assert inline == streamed
    assert len(inline[0]) > len(inline[3]) > len(inline[7]) == 7 * 32  # leaves only


async def test_streamed_answers_go_out_in_bounded_writes(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read from disk in groups of blocks, handed to TLS in pieces of at most SEND_BYTES.
    monkeypatch.setattr(node_service, "SEND_BYTES", 1000)
    await node.put(document(6 * SEGMENT + 7))
    oid = make_proposal().object_id()
    reader = await node.service.open_slice(oid, 2)
    leaves, expected = reader.record.leaves, len(reader.record.leaves)
    expected += reader.record.slice_bytes - reader.record.segment_offset(2)
    pieces = [piece async for piece in node.service.slice_body(reader, 2)]
    assert pieces[0] == leaves and all(len(p) <= 1000 for p in pieces[1:])
    assert len(pieces) > 2 and sum(len(p) for p in pieces) == expected
    assert b"".join(pieces) == (await _bodies(node, 2))[2]


async def test_only_small_honest_answers_are_read_whole(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    await node.put(document(3 * SEGMENT))
    oid = make_proposal().object_id()
    reader = await node.service.open_slice(oid, 0)
    body = node.service.small_slice_body(reader, 0)
    assert body is not None and body.startswith(reader.record.leaves)
    assert len(body) == len(reader.record.leaves) + reader.record.slice_bytes

    monkeypatch.setattr(node_service, "INLINE_SLICE_BYTES", len(body) - 1)
    reader = await node.service.open_slice(oid, 0)
    assert node.service.small_slice_body(reader, 0) is None
    reader.close()

    monkeypatch.setattr(node_service, "INLINE_SLICE_BYTES", 1 << 20)
    node.service.fault = Fault.LIE  # faults keep to the streamed path (per-block behaviour)
    reader = await node.service.open_slice(oid, 0)
    assert node.service.small_slice_body(reader, 0) is None
    reader.close()


async def test_index_reads_do_not_wait_for_a_writer(node: Node) -> None:
    await node.put(document(SEGMENT))
    oid = make_proposal().object_id()
    held, release = threading.Event(), threading.Event()

    def writer() -> None:  # stands for a commit holding the write lock through its fsyncs
        with node.store._lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert held.wait(10)
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(node.store.get(oid)))
        reader.start()
        reader.join(5)
        assert got and got[0].object_id == oid, "a point read waited for the write lock"
        assert node.store.has_committed(oid) and node.store.count() == 1
    finally:
        release.set()
        thread.join()
