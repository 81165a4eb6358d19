"""The gateway's node client (evault.transport.nodes) against the real node app, in process:
the two sides of docs/spec/node-protocol.md must understand each other, errors included."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from evault.errors import NodeRejected
from evault.ida import DEFAULT_CODEC_ID, Layout, disperse, get_codec
from evault.ida.fingerprint import FingerprintVector, SliceVerifier, leaves_from_bytes
from evault.protocol.statement import Statement
from evault.transport.nodes import NodeClient
from tests.unit.test_node_app import INDEX, SEGMENT, M, N, Node, document, make_proposal

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def pair(tmp_path: Path, vault_key_2048: Any) -> AsyncIterator[tuple[Node, NodeClient]]:
    node = Node(tmp_path, (vault_key_2048.public, list(vault_key_2048.shares)))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app))
    yield node, NodeClient(INDEX, "http://node-3", http)
    await http.aclose()
    await node.client.aclose()
    node.store.close()


async def _chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for k in range(0, len(data), size):
        yield data[k : k + size]


async def test_deposit_meta_slice_delete_through_the_gateway_client(
    pair: tuple[Node, NodeClient],
) -> None:
    node, client = pair
    data = document(3 * SEGMENT + 77)
    proposal = make_proposal()
    sha = hashlib.sha256(data).hexdigest()

    health = await client.health()
    assert (health.node, health.objects) == (INDEX, 0)

    result = await client.deposit(proposal, _chunks(data), len(data), sha)
    statement = Statement.from_bytes(result.statement)
    assert statement.sha256 == sha and statement.size == len(data)
    assert FingerprintVector(result.fv).fv_hash().hex() == statement.fv_hash

    meta = await client.meta(proposal.object_id())
    assert meta.statement == result.statement and meta.fv == result.fv

    # The slice verifies block by block against the FV root, as the gateway will do it.
    layout = Layout(len(data), SEGMENT, M, N, DEFAULT_CODEC_ID)
    async with client.slice(proposal.object_id(), from_segment=1) as stream:
        assert stream.slice_index == INDEX - 1 and stream.segment_count == 4
        assert stream.fv_hash.hex() == statement.fv_hash
        leaves = leaves_from_bytes(await stream.read_exactly(stream.leaves_bytes), 4)
        verifier = SliceVerifier(result.fv[INDEX - 1], INDEX - 1, leaves)
        for i in range(1, 4):
            verifier.verify(i, await stream.read_exactly(layout.block_bytes(i)))
    mine = disperse(data, get_codec(DEFAULT_CODEC_ID, M, N), SEGMENT)[INDEX - 1]
    assert node.store.slice_path(proposal.object_id()).read_bytes() == mine

    await client.delete(proposal.object_id())
    await client.delete(proposal.object_id())
    with pytest.raises(NodeRejected) as info:
        await client.meta(proposal.object_id())
    assert (info.value.status, info.value.node_code) == (404, "not_found")


async def test_node_errors_reach_the_gateway_as_the_specs_codes(
    pair: tuple[Node, NodeClient],
) -> None:
    _node, client = pair
    await client.deposit(make_proposal(), _chunks(b"once"), 4, None)
    cases = [
        (make_proposal(), b"twice", 5, None, "exists"),
        (make_proposal(version=2, n=4), b"x", 1, None, "bad_proposal"),
        (make_proposal(version=3), b"x", 1, "0" * 64, "digest_mismatch"),
        (make_proposal(version=4), b"x" * (300 * 1024), 300 * 1024, None, "too_large"),
    ]
    for proposal, data, size, sha, code in cases:
        with pytest.raises(NodeRejected) as info:
            await client.deposit(proposal, _chunks(data), size, sha)
        assert info.value.node_code == code, info.value
    with pytest.raises(NodeRejected) as info:
        async with client.slice(make_proposal().object_id(), from_segment=9):
            pass
    assert info.value.node_code == "bad_range"
