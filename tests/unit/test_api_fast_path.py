"""The gateway's retrieval fast path (evault.gateway.app._RetrievalFastPath) answers exactly
as the FastAPI route does: every request of a matrix of tokens, names and queries is sent to
one app with the fast path and one without, over the same catalog and service, and the two
answers must be equal to the byte (status, headers, body)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from evault.gateway.app import _plain_retrieval, create_app
from tests.unit.test_api_support import PASSWORD, Harness, harness_at

DOC = "/api/v1/documents/"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with harness_at(tmp_path) as h:
        yield h


def _token(client: TestClient, user: str) -> str:
    r = client.post(
        "/api/v1/users",
        json={"user_id": user, "password": PASSWORD, "name": "U", "contact": ""},
    )
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/tokens", json={"user_id": user, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _scope(path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "headers": headers if headers is not None else [(b"authorization", b"Bearer tok")],
    }


def test_plain_retrievals_take_the_fast_path_and_others_do_not() -> None:
    assert _plain_retrieval(_scope(DOC + "a/b.txt")) == ("a/b.txt", None, "tok")
    assert _plain_retrieval(_scope(DOC + "x", b"version=12")) == ("x", 12, "tok")
    assert _plain_retrieval(_scope(DOC + "x", b"version=2147483647")) == ("x", 2**31 - 1, "tok")
    lower = [(b"authorization", b"bearer  tok ")]
    assert _plain_retrieval(_scope(DOC + "x", headers=lower)) == ("x", None, "tok")
    for scope in (
        {**_scope(DOC + "x"), "method": "PUT"},
        _scope("/api/v1/documents"),
        _scope(DOC),
        _scope(DOC + "a/receipt"),
        _scope(DOC + "versions"),
        _scope(DOC + "x", b"version=0"),
        _scope(DOC + "x", b"version=01"),
        _scope(DOC + "x", b"version=2147483648"),
        _scope(DOC + "x", b"version=1&version=2"),
        _scope(DOC + "x", b"version="),
        _scope(DOC + "x", b"v=1"),
        _scope(DOC + "x", b"5"),
        _scope(DOC + "x", b"xversion=5"),
        _scope(DOC + "x", headers=[]),
        _scope(DOC + "x", headers=[(b"authorization", b"Basic dTpw")]),
        _scope(DOC + "x", headers=[(b"authorization", b"Bearer ")]),
        _scope(DOC + "x", headers=[(b"authorization", b"Bearer \xe9")]),
        _scope(DOC + "x", headers=[(b"authorization", b"Bearer a")] * 2),
    ):
        assert _plain_retrieval(scope) is None, scope


def _answer(response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, sorted(response.headers.multi_items()), response.content


def test_fast_path_and_fastapi_route_answer_alike(harness: Harness) -> None:
    slow_app = create_app(harness.settings, fast_path=False)
    with TestClient(harness.app) as fast, TestClient(slow_app) as slow:
        alice = _token(fast, "alice")
        bob = _token(fast, "bob")
        for name, body in (("a/b.txt", b"one"), ("a/b.txt", b"two" * 5000), ("\u20ac.txt", b"")):
            r = fast.put(DOC + name, content=body, headers={"Authorization": f"Bearer {alice}"})
            assert r.status_code == 201, r.text

        tokens: list[list[tuple[str, str]]] = [
            [("Authorization", f"Bearer {alice}")],
            [("Authorization", f"bearer   {alice}  ")],
            [("Authorization", f"Bearer {bob}")],
            [("Authorization", "Bearer not-a-token")],
            [("Authorization", "Bearer")],
            [("Authorization", "Basic YWxpY2U6cHc=")],
            [],
            [("Authorization", f"Bearer {alice}"), ("Authorization", "Bearer other")],
        ]
        names = [
            "a/b.txt",
            "%E2%82%AC.txt",
            "missing",
            "a/receipt",
            "a/b.txt/versions",
            "receipt",
            "",
            "a/",
            "a//b.txt",
            "./a",
            "a%0Ab",
            "x" * 300,
        ]
        queries = [
            "",
            "?version=1",
            "?version=2",
            "?version=3",
            "?version=0",
            "?version=01",
            "?version=abc",
            "?version=2147483648",
            "?version=1&version=2",
            "?version=1&other=2",
            "?5",
        ]
        compared = 0
        fast_ok = 0
        for headers, name, query in itertools.product(tokens, names, queries):
            url = DOC + name + query
            a = fast.get(url, headers=headers)
            b = slow.get(url, headers=headers)
            assert _answer(a) == _answer(b), (url, headers)
            compared += 1
            fast_ok += a.status_code == 200
        assert compared == len(tokens) * len(names) * len(queries)
        # The matrix holds successes as well as failures of every kind.
        assert fast_ok >= 6
        assert fast.get(DOC + "a/b.txt", headers=tokens[0]).content == b"two" * 5000


def test_fast_path_answers_keep_the_access_log_user(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(harness.app) as client:
        token = _token(client, "carol")
        r = client.put(DOC + "d", content=b"x", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201
        with caplog.at_level("INFO", logger="evault.gateway.access"):
            r = client.get(DOC + "d", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.content == b"x"
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "evault.gateway.access"]
    assert any(" carol " in line and '"GET /api/v1/documents/d"' in line for line in lines), lines
