"""The node's slice fast path (evault.node.app.SliceFastPath) answers as the router does:
the same requests go to one app with it and one without, over the same service and store,
and the answers must be equal to the byte."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import pytest

from evault.node.app import _slice_object_id, create_app
from evault.protocol.node_api import GATEWAY_CERT_CN
from tests.unit.test_node_app import (  # noqa: F401 - anyio_backend is a fixture
    SEGMENT,
    Node,
    _obj,
    anyio_backend,
    document,
    make_proposal,
)


def test_slice_paths_are_recognised_as_the_router_would() -> None:
    oid = "ab" * 32
    assert _slice_object_id(f"/v1/objects/{oid}/slice") == oid
    assert _slice_object_id("/v1/objects/not-an-id/slice") == "not-an-id"  # the endpoint refuses
    for path in (
        "/v1/objects//slice",
        "/v1/objects/slice",
        f"/v1/objects/{oid}",
        f"/v1/objects/{oid}/share",
        f"/v1/objects/a/{oid}/slice",
        f"/v1/objects/{oid}/slice/",
        f"/v2/objects/{oid}/slice",
    ):
        assert _slice_object_id(path) is None, path


def _answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, sorted(response.headers.multi_items()), response.content


@pytest.mark.anyio
async def test_fast_path_and_router_answer_alike(tmp_path: Path, vault_key_2048: Any) -> None:
    node = Node(tmp_path, (vault_key_2048.public, list(vault_key_2048.shares)))
    routed = create_app(node.service, require_client_cn=None, fast_path=False)
    slow = httpx.AsyncClient(transport=httpx.ASGITransport(app=routed), base_url="http://node-3")
    try:
        assert (await node.put(document(3 * SEGMENT + 7))).status_code == 201
        damaged = make_proposal(name="damaged")
        assert (await node.put(document(SEGMENT), damaged)).status_code == 201
        with node.store.slice_path(damaged.object_id()).open("r+b") as fh:
            fh.truncate(5)
        paths = [
            _obj(make_proposal(), "/slice"),
            _obj(damaged, "/slice"),
            f"/v1/objects/{'1' * 64}/slice",
            "/v1/objects/NOT-AN-ID/slice",
            "/v1/objects//slice",
            _obj(make_proposal(), "/slice/"),
        ]
        queries = ["", "?from_segment=2", "?from_segment=4", "?from_segment=5", "?from_segment=x"]
        served = 0
        for path, query in itertools.product(paths, queries):
            for method in ("GET", "HEAD"):
                a = await node.client.request(method, path + query)
                b = await slow.request(method, path + query)
                assert _answer(a) == _answer(b), (method, path + query)
                served += a.status_code == 200
        assert served >= 4  # the matrix holds answers as well as every kind of refusal
    finally:
        await slow.aclose()
        await node.client.aclose()
        node.store.close()


@pytest.mark.parametrize("require_client_cn", [GATEWAY_CERT_CN, None])
@pytest.mark.parametrize("record_traffic", [False, True])
def test_every_app_configuration_has_the_fast_path(
    tmp_path: Path, vault_key_2048: Any, require_client_cn: str | None, record_traffic: bool
) -> None:
    node = Node(tmp_path, (vault_key_2048.public, list(vault_key_2048.shares)))
    try:
        app: Any = create_app(
            node.service,
            require_client_cn=require_client_cn,
            traffic_dir=tmp_path / "traffic" if record_traffic else None,
        )
        layers = []
        while app is not None:
            layers.append(type(app).__name__)
            app = getattr(app, "app", None)
        assert "SliceFastPath" in layers, layers
        assert ("ClientCertGate" in layers) == (require_client_cn is not None)
        # Behind the gate (when there is one), never in front of it.
        if require_client_cn is not None:
            assert layers.index("ClientCertGate") < layers.index("SliceFastPath")
    finally:
        node.store.close()
