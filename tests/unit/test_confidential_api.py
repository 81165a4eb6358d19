"""The public API's confidentiality routes (``PUT/GET /api/v1/keys``, ``POST /api/v1/unwrap``),
the ``Evault-Encrypted`` deposit header and the optional identity key at registration, over
the fake vault service (docs/spec/public-api.md)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from fastapi.testclient import TestClient

from evault.crypto.feldman import deal_unwrap_key
from evault.crypto.unwrap import (
    WrapContext,
    blind,
    make_unwrap_request,
    sign_unwrap_request,
    wrap_file_key,
)
from evault.protocol.node_api import KeyCertificate
from evault.protocol.statement import Statement
from tests.unit.test_api_support import PASSWORD, VAULT_ID, Harness, harness_at


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with harness_at(tmp_path) as h:
        yield h


@pytest.fixture
def client(harness: Harness) -> Iterator[TestClient]:
    with TestClient(harness.app) as c:
        yield c


def login(client: TestClient, user: str = "alice", **extra: Any) -> dict[str, str]:
    r = client.post(
        "/api/v1/users",
        json={"user_id": user, "password": PASSWORD, "name": user, "contact": "", **extra},
    )
    assert r.status_code == 201, r.text
    token = client.post("/api/v1/tokens", json={"user_id": user, "password": PASSWORD}).json()
    return {"Authorization": f"Bearer {token['token']}"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def certificate(owner: str = "alice", vault: str = VAULT_ID, nodes: int = 5) -> bytes:
    dealing = deal_unwrap_key(threshold=4, nodes=nodes, rng=os.urandom)
    return KeyCertificate.sign(
        vault=vault,
        owner=owner,
        nodes=nodes,
        commitments=dealing.commitments,
        issued_at=int(time.time()),
        identity=nacl.signing.SigningKey.generate(),
    ).to_bytes()


def test_registration_may_carry_the_identity_key(client: TestClient, harness: Harness) -> None:
    identity = bytes(nacl.signing.SigningKey.generate().verify_key)
    login(client, identity_public_key=identity.hex())
    assert harness.catalog.get_user("alice").identity_public_key == identity
    r = client.post(
        "/api/v1/users",
        json={
            "user_id": "bob",
            "password": PASSWORD,
            "name": "Bob",
            "contact": "",
            "identity_public_key": "XY" * 32,
        },
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_an_encrypted_deposit_gets_an_encrypted_statement(
    client: TestClient, harness: Harness
) -> None:
    auth = login(client)
    for header, expected in (({"Evault-Encrypted": "1"}, True), ({}, False)):
        r = client.put("/api/v1/documents/d", content=b"ciphertext", headers={**auth, **header})
        assert r.status_code == 201, r.text
        statement = Statement.from_bytes(base64.b64decode(r.json()["receipt"]["statement"]))
        assert statement.encrypted is expected
    listed = client.get("/api/v1/documents/d/versions", headers=auth).json()["versions"]
    assert [v["encrypted"] for v in listed] == [True, False]
    r = client.put("/api/v1/documents/d", content=b"x", headers={**auth, "Evault-Encrypted": "yes"})
    assert r.status_code == 422


def test_put_keys_relays_one_sealed_share_per_node(client: TestClient, harness: Harness) -> None:
    auth = login(client)
    cert = certificate()
    sealed = {str(i): b64(os.urandom(100 + i)) for i in range(1, 6)}
    r = client.put("/api/v1/keys", json={"sealed": sealed, "certificate": b64(cert)}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == {str(i): True for i in range(1, 6)}
    call = harness.service.calls[-1]
    assert call[0] == "put_unwrap_key" and call[1][0] == "alice" and call[1][2] == cert
    assert call[1][1] == {i: base64.b64decode(sealed[str(i)]) for i in range(1, 6)}


@pytest.mark.parametrize(
    "body, words",
    [
        ({"certificate": certificate(owner="bob")}, "the caller"),
        ({"certificate": certificate(vault="other")}, "this vault"),
        ({"certificate": certificate(nodes=4)}, "5 nodes"),
        ({"certificate": b"not a certificate"}, "certificate"),
        ({"sealed": {"1": "AA=="}}, "each node 1..5"),
    ],
)
def test_put_keys_refuses_what_cannot_be_right(
    client: TestClient, body: dict[str, Any], words: str
) -> None:
    auth = login(client)
    doc = {
        "sealed": body.get("sealed", {str(i): "AAAA" for i in range(1, 6)}),
        "certificate": b64(body.get("certificate", certificate())),
    }
    r = client.put("/api/v1/keys", json=doc, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text
    assert words in r.json()["error"]["message"]


def test_the_key_routes_need_a_token(client: TestClient) -> None:
    assert client.get("/api/v1/keys").status_code == 401
    assert client.post("/api/v1/unwrap", json={"request": "AAAA"}).status_code == 401
    assert client.put("/api/v1/keys", json={"sealed": {}, "certificate": ""}).status_code == 401


def test_get_keys_lists_what_the_nodes_hold(client: TestClient) -> None:
    auth = login(client)
    r = client.get("/api/v1/keys", headers=auth)
    assert r.status_code == 200 and r.json() == {"certificates": {}, "failed": {}}


def _signed_request(owner: str, vault: str = VAULT_ID) -> bytes:
    dealing = deal_unwrap_key(threshold=4, nodes=5, rng=os.urandom)
    wrapped = wrap_file_key(
        os.urandom(32), dealing.public_key, WrapContext(vault, owner, "d", 0), rng=os.urandom
    )
    request = make_unwrap_request(
        blind(wrapped, rng=os.urandom),
        vault=vault,
        owner=owner,
        issued_at=int(time.time()),
        rng=os.urandom,
    )
    return sign_unwrap_request(request, nacl.signing.SigningKey.generate())


def test_unwrap_relays_only_the_callers_own_requests(client: TestClient) -> None:
    auth = login(client)
    r = client.post("/api/v1/unwrap", json={"request": b64(_signed_request("alice"))}, headers=auth)
    assert r.status_code == 200 and r.json() == {"partials": {}, "refused": {}, "failed": {}}
    for request, reason in (
        (_signed_request("bob"), "wrong_owner"),
        (_signed_request("alice", vault="other"), "wrong_vault"),
        (b"\x00" * 70, "malformed"),
    ):
        r = client.post("/api/v1/unwrap", json={"request": b64(request)}, headers=auth)
        body = r.json()["error"]
        assert r.status_code == 403 and body["code"] == "unwrap_request_rejected", r.text
        assert body["details"]["reason"] == reason
    r = client.post("/api/v1/unwrap", json={"request": "not base64!"}, headers=auth)
    assert r.status_code == 422
    r = client.post("/api/v1/unwrap", json={"request": "QQ="}, headers=auth)  # bad padding
    assert r.status_code == 400 and json.loads(r.text)["error"]["code"] == "bad_request"
