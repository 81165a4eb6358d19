"""GatewaySession: fail-over between gateways, and every httpx failure mapped in one place."""

from __future__ import annotations

import inspect

import httpx
import pytest

from evault.client import gateway as gw
from evault.client.gateway import GatewaySession, classify, document_path
from evault.errors import (
    BadGatewayAnswer,
    GatewayRefused,
    GatewayUnreachable,
    TransportError,
)
from tests.unit.test_client_fakegateway import FakeGateway

A = "https://gw-a:8443"
B = "https://gw-b:8443"
C = "https://gw-c:8443"


def session(
    fake: FakeGateway, urls: list[str], warnings: list[str], token: str | None = None
) -> GatewaySession:
    return GatewaySession(
        urls, httpx.Client(transport=fake.transport()), token=token, warn=warnings.append
    )


def test_a_gateway_that_does_not_answer_is_skipped_and_reported_once() -> None:
    fake = FakeGateway(dead={"gw-a:8443"})
    warnings: list[str] = []
    s = session(fake, [A, B], warnings)
    for _ in range(3):
        assert s.vault_info()["vault_id"] == fake.vault_id
    # Tried once, then the working gateway is asked first.
    assert fake.hits == {"gw-a:8443": 1, "gw-b:8443": 3}
    assert len(warnings) == 1
    assert "gw-a:8443" in warnings[0] and "Connection refused" in warnings[0]


def test_the_order_of_the_configuration_is_kept_when_every_gateway_answers() -> None:
    fake = FakeGateway()
    s = session(fake, [A, B], [])
    s.vault_info()
    s.vault_info()
    assert fake.hits == {"gw-a:8443": 2}


def test_no_gateway_answering_is_one_error_naming_each_url() -> None:
    fake = FakeGateway(dead={"gw-a:8443", "gw-b:8443"})
    s = session(fake, [A, B], [])
    with pytest.raises(GatewayUnreachable) as info:
        s.vault_info()
    assert set(info.value.attempts) == {A, B}
    assert "no gateway answered" in str(info.value)


def test_a_non_repeatable_request_fails_over_only_if_it_never_left() -> None:
    fake = FakeGateway(dead={"gw-a:8443"})
    fake.tokens["t"] = "alice"
    s = session(fake, [A, B], [], token="t")
    answer, url = s.deposit("x", lambda: iter([b"abc"]), size=3, sha256=_sha(b"abc"))
    assert url == B and answer["version"] == 1


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_a_read_time_out_fails_over_for_a_get_but_not_for_a_deposit() -> None:
    calls: list[str] = []
    fake = FakeGateway()
    fake.tokens["t"] = "alice"

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.host}")
        if request.url.host == "gw-a":
            raise httpx.ReadTimeout("timed out", request=request)
        return fake.handle(request)

    warnings: list[str] = []
    s = GatewaySession(
        [A, B],
        httpx.Client(transport=httpx.MockTransport(handler)),
        token="t",
        warn=warnings.append,
    )
    assert s.documents() == []
    assert calls == ["GET gw-a", "GET gw-b"]
    calls.clear()
    s._preferred = 0  # as if gw-a had come back
    with pytest.raises(TransportError) as info:
        s.deposit("x", lambda: iter([b"abc"]), size=3, sha256=_sha(b"abc"))
    assert calls == ["PUT gw-a"]
    assert "may or may not have been carried out" in str(info.value)
    assert fake.deposits == 0


def test_an_error_answer_is_not_failed_over_and_keeps_the_apis_code() -> None:
    fake = FakeGateway()
    fake.tokens["t"] = "alice"
    s = session(fake, [A, B], [], token="t")
    with pytest.raises(GatewayRefused) as info:
        s.receipt("missing")
    assert info.value.status == 404 and info.value.api_code == "not_found"
    assert fake.hits == {"gw-a:8443": 1}


def test_a_rejected_token_says_to_log_in_again() -> None:
    s = session(FakeGateway(), [A], [], token="expired")
    with pytest.raises(GatewayRefused) as info:
        s.documents()
    assert info.value.status == 401 and "evault login" in str(info.value)


def test_an_error_without_a_json_body_is_still_one_sentence() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(502, text="<html>bad gateway</html>"))
    s = GatewaySession([A], httpx.Client(transport=transport))
    with pytest.raises(GatewayRefused) as info:
        s.vault_info()
    assert info.value.api_code == "no_error_body" and "502" in str(info.value)


def test_a_malformed_answer_is_a_bad_gateway_answer() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"documents": "nope"}))
    s = GatewaySession([A], httpx.Client(transport=transport), token="t")
    with pytest.raises(BadGatewayAnswer):
        s.documents()
    transport = httpx.MockTransport(lambda r: httpx.Response(200, text="not json"))
    s = GatewaySession([A], httpx.Client(transport=transport))
    with pytest.raises(BadGatewayAnswer):
        s.vault_info()


def test_every_httpx_exception_is_classified() -> None:
    # The httpx habit: errors of a lower library are mapped in one place, none left out.
    unmapped = [
        name
        for name, obj in vars(httpx).items()
        if inspect.isclass(obj)
        and issubclass(obj, httpx.HTTPError | httpx.InvalidURL)
        and obj is not httpx.HTTPError
        and obj not in (httpx.HTTPStatusError,)  # raised only by raise_for_status(), never used
        and classify(obj.__new__(obj)) is None
    ]
    assert not unmapped


def test_connect_failures_are_not_reached_and_read_failures_broke() -> None:
    req = httpx.Request("GET", A)
    assert classify(httpx.ConnectError("x", request=req)) == "not-reached"
    assert classify(httpx.ConnectTimeout("x", request=req)) == "not-reached"
    assert classify(httpx.ReadTimeout("x", request=req)) == "broke"
    assert classify(httpx.RemoteProtocolError("x", request=req)) == "broke"
    assert classify(httpx.LocalProtocolError("x", request=req)) == "local"
    assert classify(ValueError("x")) is None


def test_document_names_are_percent_encoded_with_slashes_kept() -> None:
    assert document_path("a b/c?d#e") == "/api/v1/documents/a%20b/c%3Fd%23e"
    assert document_path("x", "/receipt") == "/api/v1/documents/x/receipt"
    assert gw.API == "/api/v1"


def test_a_session_needs_a_url() -> None:
    with pytest.raises(ValueError, match="urls"):
        GatewaySession([], httpx.Client())


def test_three_gateways_two_dead_warns_for_each_once() -> None:
    fake = FakeGateway(dead={"gw-a:8443", "gw-b:8443"})
    warnings: list[str] = []
    s = session(fake, [A, B, C], warnings)
    s.vault_info()
    s.vault_info()
    assert len(warnings) == 2
    assert fake.hits["gw-c:8443"] == 2
