"""The public HTTP API against a fake vault service and a real SQLite catalog.

Every failure is checked for its status, its stable code and the JSON error shape; the happy
paths check that receipts verify against the published key and bytes come back unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from evault.errors import DocumentCorrupt
from evault.gateway.api import MAX_JSON_BODY_BYTES, nodes_header
from evault.gateway.app import create_app
from evault.gateway.download import StreamAborted
from evault.protocol.statement import Statement
from tests.unit.test_api_support import PASSWORD, VAULT_ID, Harness, harness_at, verify_receipt


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with harness_at(tmp_path) as h:
        yield h


@pytest.fixture
def client(harness: Harness) -> Iterator[TestClient]:
    with TestClient(harness.app) as c:
        yield c


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert isinstance(message, str) and message and "\n" not in message
    assert "Traceback" not in response.text
    return dict(body["error"])


def register(client: TestClient, user_id: str = "alice", password: str = PASSWORD) -> None:
    r = client.post(
        "/api/v1/users",
        json={"user_id": user_id, "password": password, "name": "A User", "contact": "a@x"},
    )
    assert r.status_code == 201, r.text


def token_for(client: TestClient, user_id: str = "alice", password: str = PASSWORD) -> str:
    r = client.post("/api/v1/tokens", json={"user_id": user_id, "password": password})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def alice(client: TestClient) -> dict[str, str]:
    register(client, "alice")
    return auth(token_for(client, "alice"))


@pytest.fixture
def bob(client: TestClient) -> dict[str, str]:
    register(client, "bob")
    return auth(token_for(client, "bob"))


# --- vault ------------------------------------------------------------------------------------


def test_vault_facts_are_public(client: TestClient, harness: Harness) -> None:
    r = client.get("/api/v1/vault")
    assert r.status_code == 200
    body = r.json()
    assert body["vault_id"] == VAULT_ID
    assert (body["n"], body["m"], body["k"], body["t"]) == (5, 3, 4, 1)
    assert body["public_key_pem"] == harness.settings.info.public_key_pem
    assert body["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")


# --- users and tokens -------------------------------------------------------------------------


def test_register_returns_the_stored_lower_case_id(client: TestClient) -> None:
    r = client.post(
        "/api/v1/users",
        json={"user_id": "Alice.B", "password": PASSWORD, "name": "Alice", "contact": ""},
    )
    assert r.status_code == 201
    assert r.json() == {"user_id": "alice.b"}
    assert token_for(client, "ALICE.b")


def test_register_twice_is_409_user_exists(client: TestClient) -> None:
    register(client, "alice")
    r = client.post(
        "/api/v1/users",
        json={"user_id": "ALICE", "password": PASSWORD, "name": "Other", "contact": ""},
    )
    assert_error(r, 409, "user_exists")


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("user_id", "a", "bad_name"),
        ("user_id", "al ice", "bad_name"),
        ("user_id", "ålice", "bad_name"),
        ("name", "", "bad_name"),
        ("name", "Bad\x00Name", "bad_name"),
        ("password", "short", "bad_password"),
    ],
)
def test_register_bad_fields_are_400(client: TestClient, field: str, value: str, code: str) -> None:
    body = {"user_id": "carol", "password": PASSWORD, "name": "Carol", "contact": ""}
    body[field] = value
    err = assert_error(client.post("/api/v1/users", json=body), 400, code)
    assert PASSWORD not in json.dumps(err)


def test_malformed_json_is_400_in_the_json_shape(client: TestClient) -> None:
    r = client.post(
        "/api/v1/users", content=b'{"user_id": "x",', headers={"Content-Type": "application/json"}
    )
    assert_error(r, 400, "malformed_json")


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "carol", "name": "Carol", "contact": ""},  # missing password
        {"user_id": 12345, "password": PASSWORD, "name": "Carol", "contact": ""},  # wrong type
        {"user_id": "carol", "password": PASSWORD, "name": "C", "contact": "", "admin": True},
        ["not", "an", "object"],
    ],
)
def test_schema_violations_are_422_invalid_request(client: TestClient, body: Any) -> None:
    err = assert_error(client.post("/api/v1/users", json=body), 422, "invalid_request")
    assert err["details"]["errors"]
    # The input (here possibly a password) is never echoed back.
    assert PASSWORD not in json.dumps(err)


def test_lone_surrogates_in_json_are_refused_not_crashed_on(client: TestClient) -> None:
    raw = b'{"user_id": "carol", "password": "abcdefgh\\ud800", "name": "C", "contact": ""}'
    r = client.post("/api/v1/users", content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500
    assert r.json()["error"]["code"] in ("malformed_json", "invalid_request")


def test_oversized_json_body_is_413(client: TestClient) -> None:
    big = {
        "user_id": "carol",
        "password": PASSWORD,
        "name": "x" * MAX_JSON_BODY_BYTES,
        "contact": "",
    }
    assert_error(client.post("/api/v1/users", json=big), 413, "too_large")

    def chunked() -> Iterator[bytes]:
        yield b'{"user_id": "carol", "name": "'
        for _ in range(MAX_JSON_BODY_BYTES // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    r = client.post(
        "/api/v1/users", content=chunked(), headers={"Content-Type": "application/json"}
    )
    assert_error(r, 413, "too_large")


def test_log_in_gives_a_token_with_expiry(client: TestClient) -> None:
    register(client, "alice")
    r = client.post("/api/v1/tokens", json={"user_id": "alice", "password": PASSWORD})
    assert r.status_code == 201
    body = r.json()
    assert body["token_type"] == "bearer"
    assert len(body["token"]) >= 32
    assert body["expires_at"] == "2026-11-21T12:00:00Z"  # FIXED_NOW + 24 h


@pytest.mark.parametrize(
    ("user_id", "password"), [("alice", "wrong password!"), ("nobody", PASSWORD), ("x", "")]
)
def test_wrong_credentials_are_401_and_do_not_say_which(
    client: TestClient, user_id: str, password: str
) -> None:
    register(client, "alice")
    r = client.post("/api/v1/tokens", json={"user_id": user_id, "password": password})
    err = assert_error(r, 401, "auth_failed")
    assert err["message"] == "unknown user id or wrong password"
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="evault"'


def test_missing_token_is_401_with_a_challenge(client: TestClient) -> None:
    r = client.get("/api/v1/documents")
    err = assert_error(r, 401, "auth_failed")
    assert "Bearer" in err["message"]
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="evault"'


@pytest.mark.parametrize(
    "header", ["Bearer not-a-token", "Bearer ", "Basic YWxpY2U6cHc=", "Bearer " + "x" * 5000]
)
def test_invalid_token_is_401_invalid_token(client: TestClient, header: str) -> None:
    r = client.get("/api/v1/documents", headers={"Authorization": header})
    assert_error(r, 401, "auth_failed")
    assert r.headers["WWW-Authenticate"].startswith('Bearer realm="evault"')
    if header.startswith("Bearer ") and header.strip() != "Bearer":
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_log_out_revokes_the_token(client: TestClient, alice: dict[str, str]) -> None:
    assert client.get("/api/v1/documents", headers=alice).status_code == 200
    r = client.delete("/api/v1/tokens/current", headers=alice)
    assert r.status_code == 204 and r.content == b""
    assert_error(client.get("/api/v1/documents", headers=alice), 401, "auth_failed")
    assert_error(client.delete("/api/v1/tokens/current", headers=alice), 401, "auth_failed")


def test_change_password_needs_the_current_one_and_renews_every_token(
    client: TestClient, alice: dict[str, str]
) -> None:
    other = auth(token_for(client, "alice"))
    new = "a brand new password"
    r = client.put("/api/v1/password", json={"password": "not it at all", "new_password": new})
    assert_error(r, 401, "auth_failed")  # no token
    r = client.put(
        "/api/v1/password", json={"password": "not it at all", "new_password": new}, headers=alice
    )
    assert_error(r, 401, "auth_failed")  # a token alone does not change the password
    r = client.put(
        "/api/v1/password", json={"password": PASSWORD, "new_password": "short"}, headers=alice
    )
    assert_error(r, 400, "bad_password")
    assert client.get("/api/v1/documents", headers=alice).status_code == 200  # nothing changed
    r = client.put(
        "/api/v1/password", json={"password": PASSWORD, "new_password": new}, headers=alice
    )
    assert r.status_code == 200, r.text
    fresh = auth(r.json()["token"])
    assert client.get("/api/v1/documents", headers=fresh).status_code == 200
    for revoked in (alice, other):
        assert_error(client.get("/api/v1/documents", headers=revoked), 401, "auth_failed")
    r = client.post("/api/v1/tokens", json={"user_id": "alice", "password": PASSWORD})
    assert_error(r, 401, "auth_failed")
    assert token_for(client, "alice", new)


# --- documents --------------------------------------------------------------------------------


def test_deposit_receipt_retrieve_round_trip(
    client: TestClient, harness: Harness, alice: dict[str, str]
) -> None:
    data = bytes(range(256)) * 1000  # several chunks of the fake's retrieval
    digest = hashlib.sha256(data).hexdigest()
    r = client.put(
        "/api/v1/documents/reports/2026/q1.pdf",
        content=data,
        headers={**alice, "Evault-Sha256": digest.upper()},
    )
    assert r.status_code == 201, r.text
    out = r.json()
    assert (out["name"], out["version"], out["size"], out["sha256"]) == (
        "reports/2026/q1.pdf",
        1,
        len(data),
        digest,
    )
    assert out["faulty_nodes"] == {} and out["failed_nodes"] == {}
    statement = base64.b64decode(out["receipt"]["statement"], validate=True)
    signature = base64.b64decode(out["receipt"]["signature"], validate=True)
    verify_receipt(client.get("/api/v1/vault").json()["public_key_pem"], statement, signature)
    parsed = Statement.from_bytes(statement)
    assert (parsed.owner, parsed.name, parsed.version, parsed.sha256) == (
        "alice",
        "reports/2026/q1.pdf",
        1,
        digest,
    )
    # The service got the client's digest (normalised) and the declared size.
    assert harness.service.calls[-1] == (
        "deposit",
        ("alice", "reports/2026/q1.pdf", len(data), digest),
    )

    got = client.get("/api/v1/documents/reports/2026/q1.pdf", headers=alice)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-length"] == str(len(data))
    assert got.headers["Evault-Version"] == "1"
    assert got.headers["Evault-Sha256"] == digest
    assert got.headers["ETag"] == f'"{digest}"'
    assert json.loads(got.headers["Evault-Faulty-Nodes"]) == {}

    receipt = client.get("/api/v1/documents/reports/2026/q1.pdf/receipt", headers=alice).json()
    assert receipt == {
        "name": "reports/2026/q1.pdf",
        "version": 1,
        "size": len(data),
        "sha256": digest,
        "statement": out["receipt"]["statement"],
        "signature": out["receipt"]["signature"],
    }


def test_versions_count_up_and_are_listed(client: TestClient, alice: dict[str, str]) -> None:
    for i in range(3):
        r = client.put("/api/v1/documents/notes.txt", content=b"v%d" % i, headers=alice)
        assert r.json()["version"] == i + 1
    client.put("/api/v1/documents/a/b", content=b"", headers=alice)

    assert client.get("/api/v1/documents/notes.txt?version=2", headers=alice).content == b"v1"
    assert client.get("/api/v1/documents/notes.txt", headers=alice).content == b"v2"
    rec = client.get("/api/v1/documents/notes.txt/receipt?version=1", headers=alice).json()
    assert rec["version"] == 1 and rec["sha256"] == hashlib.sha256(b"v0").hexdigest()

    versions = client.get("/api/v1/documents/notes.txt/versions", headers=alice).json()
    assert versions["name"] == "notes.txt"
    assert [v["version"] for v in versions["versions"]] == [1, 2, 3]
    assert versions["versions"][0]["deposited_at"] == "2026-11-20T12:00:00Z"

    listing = client.get("/api/v1/documents", headers=alice).json()["documents"]
    assert [(d["name"], d["latest_version"], d["version_count"]) for d in listing] == [
        ("a/b", 1, 1),
        ("notes.txt", 3, 3),
    ]


def test_empty_document(client: TestClient, alice: dict[str, str]) -> None:
    r = client.put("/api/v1/documents/empty", content=b"", headers=alice)
    assert r.status_code == 201 and r.json()["size"] == 0
    got = client.get("/api/v1/documents/empty", headers=alice)
    assert got.status_code == 200 and got.content == b""
    assert got.headers["content-length"] == "0"


def test_a_receipt_suffix_names_the_parent_document(
    client: TestClient, alice: dict[str, str]
) -> None:
    client.put("/api/v1/documents/a/b", content=b"ab", headers=alice)
    r = client.get("/api/v1/documents/a/b/receipt", headers=alice)
    assert r.status_code == 200 and r.json()["name"] == "a/b"
    r = client.get("/api/v1/documents/a/b/versions", headers=alice)
    assert r.status_code == 200 and r.json()["name"] == "a/b"
    # Percent-encoded slashes are the same name.
    assert client.get("/api/v1/documents/a%2Fb", headers=alice).content == b"ab"


@pytest.mark.parametrize(
    "path",
    [
        "x/receipt",
        "receipt",
        "dir/versions",
        "versions",
        "x%2Freceipt",
        "..%2Fescape",
        "a//b",
        "a/%2E/b",
        "trailing/",
        "bad%00name",
        "bidi%E2%80%AEtxt",
        " space",
        "x" * 256,
    ],
)
def test_bad_names_are_400_bad_name_on_put(
    client: TestClient, alice: dict[str, str], path: str
) -> None:
    r = client.put(f"/api/v1/documents/{path}", content=b"data", headers=alice)
    assert_error(r, 400, "bad_name")


def test_empty_name_is_400(client: TestClient, alice: dict[str, str]) -> None:
    assert_error(client.put("/api/v1/documents/", content=b"x", headers=alice), 400, "bad_name")
    assert_error(client.get("/api/v1/documents/", headers=alice), 400, "bad_name")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/documents/x/receipt/versions"),
        ("GET", "/api/v1/documents/x/versions/receipt"),
        ("GET", "/api/v1/documents/receipt"),
        ("DELETE", "/api/v1/documents/x/receipt?version=1"),
    ],
)
def test_reserved_names_are_refused_on_every_route(
    client: TestClient, alice: dict[str, str], method: str, path: str
) -> None:
    assert_error(client.request(method, path, headers=alice), 400, "bad_name")


def test_another_users_document_is_404_like_a_missing_one(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    client.put("/api/v1/documents/secret.txt", content=b"alice's", headers=alice)
    for path in (
        "/api/v1/documents/secret.txt",
        "/api/v1/documents/secret.txt?version=1",
        "/api/v1/documents/secret.txt/receipt",
        "/api/v1/documents/secret.txt/versions",
    ):
        theirs = client.get(path, headers=bob)
        missing = client.get(path.replace("secret", "absent"), headers=bob)
        err = assert_error(theirs, 404, "not_found")
        assert_error(missing, 404, "not_found")
        assert err["message"] == missing.json()["error"]["message"].replace("absent", "secret")
        assert b"alice" not in theirs.content
    assert_error(
        client.delete("/api/v1/documents/secret.txt?version=1", headers=bob), 404, "not_found"
    )
    assert client.get("/api/v1/documents", headers=bob).json() == {"documents": []}
    # Still there for its owner.
    assert client.get("/api/v1/documents/secret.txt", headers=alice).content == b"alice's"


def test_missing_version_is_404(client: TestClient, alice: dict[str, str]) -> None:
    client.put("/api/v1/documents/x", content=b"x", headers=alice)
    assert_error(client.get("/api/v1/documents/x?version=2", headers=alice), 404, "not_found")


@pytest.mark.parametrize("query", ["version=0", "version=-1", "version=abc", "version=2147483648"])
def test_bad_version_query_is_422(client: TestClient, alice: dict[str, str], query: str) -> None:
    client.put("/api/v1/documents/x", content=b"x", headers=alice)
    assert_error(client.get(f"/api/v1/documents/x?{query}", headers=alice), 422, "invalid_request")


def test_delete_a_version(client: TestClient, alice: dict[str, str]) -> None:
    client.put("/api/v1/documents/x", content=b"one", headers=alice)
    client.put("/api/v1/documents/x", content=b"two", headers=alice)
    assert_error(client.delete("/api/v1/documents/x", headers=alice), 422, "invalid_request")
    r = client.delete("/api/v1/documents/x?version=2", headers=alice)
    assert r.status_code == 204 and r.content == b""
    assert "Evault-Failed-Nodes" not in r.headers
    assert client.get("/api/v1/documents/x", headers=alice).content == b"one"
    assert_error(client.delete("/api/v1/documents/x?version=2", headers=alice), 404, "not_found")


def test_body_over_the_limit_is_413_before_reading_it(
    client: TestClient, harness: Harness, alice: dict[str, str]
) -> None:
    limit = harness.settings.max_document_bytes
    r = client.put("/api/v1/documents/big", content=b"x" * (limit + 1), headers=alice)
    err = assert_error(r, 413, "too_large")
    assert err["details"]["limit_bytes"] == limit
    # Refused on its Content-Length: the service never saw it.
    assert not [c for c in harness.service.calls if c[0] == "deposit"]
    assert (
        client.put("/api/v1/documents/ok", content=b"x" * limit, headers=alice).status_code == 201
    )


def test_chunked_body_over_the_limit_is_413_and_not_listed(
    client: TestClient, harness: Harness, alice: dict[str, str]
) -> None:
    limit = harness.settings.max_document_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 4096 + 2):
            yield b"y" * 4096

    r = client.put("/api/v1/documents/big", content=chunks(), headers=alice)
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_error(r, 413, "too_large")
    assert client.get("/api/v1/documents", headers=alice).json() == {"documents": []}
    assert_error(client.get("/api/v1/documents/big", headers=alice), 404, "not_found")


def test_digest_mismatch_is_409(client: TestClient, alice: dict[str, str]) -> None:
    r = client.put(
        "/api/v1/documents/x",
        content=b"actual",
        headers={**alice, "Evault-Sha256": hashlib.sha256(b"claimed").hexdigest()},
    )
    assert_error(r, 409, "digest_mismatch")
    assert_error(client.get("/api/v1/documents/x", headers=alice), 404, "not_found")


@pytest.mark.parametrize("value", ["abc", "g" * 64, "0" * 63, "0" * 65])
def test_malformed_digest_header_is_422(
    client: TestClient, alice: dict[str, str], value: str
) -> None:
    r = client.put("/api/v1/documents/x", content=b"x", headers={**alice, "Evault-Sha256": value})
    err = assert_error(r, 422, "invalid_request")
    assert "Evault-Sha256" in err["message"]


def test_deposit_needs_a_token_before_the_body_is_read(
    client: TestClient, harness: Harness
) -> None:
    r = client.put("/api/v1/documents/x", content=b"x" * 10)
    assert_error(r, 401, "auth_failed")
    assert not harness.service.calls


def test_faulty_nodes_are_reported(
    client: TestClient, harness: Harness, alice: dict[str, str]
) -> None:
    harness.service.faulty = {3: "served a block that fails its fingerprint\r\nX-Injected: 1"}
    harness.service.failed = {5: "connection refused"}
    out = client.put("/api/v1/documents/x", content=b"x", headers=alice).json()
    assert out["faulty_nodes"] == {"3": harness.service.faulty[3]}
    assert out["failed_nodes"] == {"5": "connection refused"}
    got = client.get("/api/v1/documents/x", headers=alice)
    assert "x-injected" not in {k.lower() for k in got.headers}
    assert json.loads(got.headers["Evault-Faulty-Nodes"]) == {"3": harness.service.faulty[3]}
    assert json.loads(got.headers["Evault-Failed-Nodes"]) == {"5": "connection refused"}
    gone = client.delete("/api/v1/documents/x?version=1", headers=alice)
    assert gone.status_code == 204
    assert json.loads(gone.headers["Evault-Failed-Nodes"]) == {"5": "connection refused"}


def test_faulty_header_is_ascii_and_bounded() -> None:
    header = nodes_header({1: "é" * 1000, 2: "ok"})
    assert header.isascii() and len(header) < 1500
    assert json.loads(header)["1"].endswith("…")


def test_failure_mid_stream_aborts_instead_of_finishing(
    client: TestClient, harness: Harness, alice: dict[str, str]
) -> None:
    data = b"z" * (3 * 64 * 1024)
    client.put("/api/v1/documents/x", content=data, headers=alice)
    harness.service.corrupt_mid_stream = True
    received = bytearray()
    with (
        pytest.raises(StreamAborted) as aborted,
        client.stream("GET", "/api/v1/documents/x", headers=alice) as r,
    ):
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            received += chunk
    assert len(received) < len(data)
    assert isinstance(aborted.value.__cause__, DocumentCorrupt)
    assert harness.service.last_retrieval is not None
    assert harness.service.last_retrieval.closed


def test_failure_before_the_first_byte_is_a_json_error(
    client: TestClient, harness: Harness, alice: dict[str, str], monkeypatch: Any
) -> None:
    client.put("/api/v1/documents/x", content=b"x", headers=alice)

    async def broken(*_args: Any, **_kw: Any) -> Any:
        from evault.errors import NotEnoughSlices

        raise NotEnoughSlices(have=2, need=3, failed={4: "down", 5: "lied"})

    monkeypatch.setattr(harness.service, "retrieve", broken)
    err = assert_error(client.get("/api/v1/documents/x", headers=alice), 503, "not_enough_slices")
    assert err["details"]["failed"] == {"4": "down", "5": "lied"}


def test_unexpected_exception_is_500_without_a_traceback(
    client: TestClient, harness: Harness, alice: dict[str, str], monkeypatch: Any, caplog: Any
) -> None:
    async def broken(*_args: Any, **_kw: Any) -> Any:
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(harness.service, "deposit", broken)
    with caplog.at_level(logging.ERROR, logger="evault.gateway"):
        r = client.put("/api/v1/documents/x", content=b"x", headers=alice)
    err = assert_error(r, 500, "internal_error")
    assert "secret internal detail" not in r.text
    assert "secret internal detail" in caplog.text  # logged for the operator
    assert err["message"]


def test_unknown_path_and_wrong_method_are_json(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "unknown_path")
    assert_error(client.get("/api/v2/vault"), 404, "unknown_path")
    r = client.post("/api/v1/vault")
    assert_error(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]


def test_access_log_never_contains_tokens_or_passwords(client: TestClient, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="evault.gateway.access"):
        register(client, "alice")
        token = token_for(client, "alice")
        client.put("/api/v1/documents/x", content=b"x", headers=auth(token))
        client.get("/api/v1/documents/x?version=1", headers=auth(token))
    lines = [r.getMessage() for r in caplog.records if r.name == "evault.gateway.access"]
    assert len(lines) == 4
    assert any('"PUT /api/v1/documents/x" 201' in line and " alice " in line for line in lines)
    assert any("version=1" in line for line in lines)
    assert token not in caplog.text
    assert PASSWORD not in caplog.text


def test_openapi_describes_the_raw_body_and_the_bytes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    put = spec["paths"]["/api/v1/documents/{name}"]["put"]
    assert set(put["requestBody"]["content"]) == {"application/octet-stream"}
    assert put["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/DepositOut"
    )
    get = spec["paths"]["/api/v1/documents/{name}"]["get"]
    assert "application/octet-stream" in get["responses"]["200"]["content"]
    assert "Evault-Faulty-Nodes" in get["responses"]["200"]["headers"]
    assert get["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def _asgi_stalled(
    app: Any, method: str, path: str, token: str, first_chunk: bytes
) -> list[dict[str, Any]]:
    """Drive the app directly: send one chunk of a chunked body, then nothing at all."""
    sent: list[dict[str, Any]] = []
    stalled = asyncio.Event()  # never set: the client goes quiet after the first chunk
    chunks = [{"type": "http.request", "body": first_chunk, "more_body": True}]

    async def receive() -> dict[str, Any]:
        if chunks:
            return chunks.pop()
        await stalled.wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {token}".encode()), (b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    return sent


def test_a_stalled_body_is_408_and_nothing_is_stored(tmp_path: Path) -> None:
    with harness_at(tmp_path) as h:
        h.app.state.evault = dataclasses.replace(h.settings, body_idle_timeout_s=0.05)
        h.catalog.create_user("alice", PASSWORD, "Alice", "")
        token = h.catalog.issue_token("alice", 60)
        sent = _asgi_stalled(h.app, "PUT", "/api/v1/documents/slow", token, b"first bytes")
        start = next(m for m in sent if m["type"] == "http.response.start")
        assert start["status"] == 408
        body = json.loads(b"".join(m.get("body", b"") for m in sent if "body" in m))
        assert body["error"]["code"] == "body_timeout"
        assert body["error"]["details"]["received"] == len(b"first bytes")
        assert h.catalog.list_documents("alice") == []


def test_a_stalled_json_body_is_408(tmp_path: Path) -> None:
    with harness_at(tmp_path) as h:
        h.settings = dataclasses.replace(h.settings, body_idle_timeout_s=0.05)
        app = create_app(h.settings)
        sent = _asgi_stalled(app, "POST", "/api/v1/users", "unused", b'{"user_id": "ca')
        start = next(m for m in sent if m["type"] == "http.response.start")
        assert start["status"] == 408
        body = json.loads(b"".join(m.get("body", b"") for m in sent if "body" in m))
        assert body["error"]["code"] == "body_timeout"
