"""evault.transport.nodes: requests, answers, and the one place where failures are mapped."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from evault.errors import (
    BadNodeAnswer,
    EvaultError,
    FormatError,
    NodeRejected,
    NodeTimeout,
    NodeUnreachable,
)
from evault.protocol.node_api import (
    HEADER_FV_HASH,
    HEADER_LEAVES_BYTES,
    HEADER_PROPOSAL,
    HEADER_SEGMENT_COUNT,
    HEADER_SHA256,
    HEADER_SIGN,
    HEADER_SLICE_INDEX,
    DepositResult,
    ObjectListing,
    ObjectMeta,
    Proposal,
    ShareAnswer,
    WireShare,
    error_body,
)
from evault.transport import tls
from evault.transport.nodes import NodeAddress, NodeClient, NodeSet, Timeouts

VAULT = "0123456789abcdef0123456789abcdef"
OID = "ab" * 32
FV = tuple(bytes([i]) * 32 for i in range(3))


def proposal() -> Proposal:
    return Proposal(
        vault=VAULT,
        owner="alice",
        name="doc.txt",
        version=1,
        n=3,
        m=2,
        codec="test/v1",
        segment_bytes=1024,
        fingerprint_scheme="sha256-merkle/v1",
        encrypted=False,
        deposited_at="2026-11-25T12:00:00Z",
    )


Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


def run_with(handler: Handler, body: Callable[[NodeClient], Coroutine[Any, Any, Any]]) -> Any:
    async def main() -> Any:
        async with NodeSet(
            [NodeAddress(1, "http://node-1.test")], transport=httpx.MockTransport(handler)
        ) as nodes:
            return await body(nodes[1])

    return asyncio.run(main())


async def body_of(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def deposit_answer() -> dict[str, Any]:
    return DepositResult(
        node=1, statement=b'{"x":1}', share=WireShare(1, 5, 6, 7), fv=FV
    ).to_json_obj()


def test_deposit_streams_the_body_with_headers_and_parses_the_answer() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        seen["method"] = request.method
        seen["path"] = request.url.path
        seen["headers"] = dict(request.headers)
        seen["body"] = request.content  # MockTransport has read the stream
        seen["sni"] = request.extensions.get("sni_hostname")
        return httpx.Response(201, json=deposit_answer())

    result = run_with(
        handler,
        lambda c: c.deposit(proposal(), body_of(b"hello ", b"world"), 11, "cd" * 32),
    )
    assert result.node == 1 and result.fv == FV and result.share.value == 5
    assert seen["method"] == "PUT"
    assert seen["path"] == f"/v1/objects/{proposal().object_id()}"
    assert seen["body"] == b"hello world"
    assert seen["headers"]["content-length"] == "11"
    assert "transfer-encoding" not in seen["headers"]
    assert seen["headers"][HEADER_SHA256.lower()] == "cd" * 32
    assert Proposal.from_header(seen["headers"][HEADER_PROPOSAL.lower()]) == proposal()
    assert seen["sni"] == "node-1"


def test_deposit_without_size_is_chunked() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        seen["headers"] = dict(request.headers)
        return httpx.Response(201, json=deposit_answer())

    run_with(handler, lambda c: c.deposit(proposal(), body_of(b"x"), None, None))
    assert seen["headers"]["transfer-encoding"] == "chunked"
    assert HEADER_SHA256.lower() not in seen["headers"]


def test_node_json_error_is_carried_with_its_code() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json=error_body("digest_mismatch", "it hashes differently"))

    with pytest.raises(NodeRejected) as info:
        run_with(handler, lambda c: c.deposit(proposal(), body_of(b"x"), 1, "00" * 32))
    assert info.value.node == 1
    assert info.value.status == 409
    assert info.value.node_code == "digest_mismatch"
    assert "it hashes differently" in str(info.value)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500, text="<html>oops</html>"),
        httpx.Response(404, json=error_body("too_large", "wrong status for this code")),
        httpx.Response(201, json={"node": 1}),
        httpx.Response(201, text="not json"),
        httpx.Response(201, content=b"[" * (2 * 1024 * 1024)),
        httpx.Response(200, json=deposit_answer()),
    ],
)
def test_malformed_answers_are_bad_node_answers(response: httpx.Response) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return response

    with pytest.raises(BadNodeAnswer) as info:
        run_with(handler, lambda c: c.deposit(proposal(), body_of(b"x"), 1, None))
    assert info.value.node == 1 and info.value.op == "deposit"


def test_meta_health_delete() -> None:
    meta = ObjectMeta(
        node=1, statement=b"{}", fv=FV, slice_index=0, slice_bytes=10, segment_count=1
    )
    calls: list[tuple[str, str]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path))
        if request.url.path == "/v1/health":
            return httpx.Response(
                200,
                json={"node": 1, "vault": VAULT, "protocol": 1, "objects": 2, "free_bytes": 9},
            )
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json=meta.to_json_obj())

    async def body(client: NodeClient) -> Any:
        return await client.health(), await client.meta(OID), await client.delete(OID)

    health, got, deleted = run_with(handler, body)
    assert health.vault == VAULT and health.objects == 2
    assert got == meta
    assert deleted is None
    assert calls == [
        ("GET", "/v1/health"),
        ("GET", f"/v1/objects/{OID}"),
        ("DELETE", f"/v1/objects/{OID}"),
    ]


def slice_response(
    body: bytes | httpx.AsyncByteStream, *, segments: int = 2, **overrides: str
) -> httpx.Response:
    headers = {
        HEADER_SLICE_INDEX: "0",
        HEADER_LEAVES_BYTES: str(32 * segments),
        HEADER_FV_HASH: "ef" * 32,
        HEADER_SEGMENT_COUNT: str(segments),
        "Content-Type": "application/octet-stream",
    }
    headers.update(overrides)
    if isinstance(body, bytes):
        return httpx.Response(200, headers=headers, content=body)
    return httpx.Response(200, headers=headers, stream=body)


def test_slice_headers_and_exact_reads() -> None:
    leaves = bytes(range(64))
    seen: dict[str, str] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        seen["query"] = request.url.query.decode()
        return slice_response(leaves + b"AAAABBBB")

    async def body(client: NodeClient) -> Any:
        async with client.slice(OID, from_segment=1) as stream:
            head = (stream.slice_index, stream.segment_count, stream.fv_hash, stream.from_segment)
            return (
                head,
                await stream.read_exactly(64),
                await stream.read_exactly(3),
                (await stream.read_exactly(5)),
            )

    head, got_leaves, a, b = run_with(handler, body)
    assert head == (0, 2, bytes.fromhex("ef" * 32), 1)
    assert got_leaves == leaves and a == b"AAA" and b == b"ABBBB"
    assert seen["query"] == "from_segment=1"


class ChunkedStream(httpx.AsyncByteStream):
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def test_slice_pieces_are_the_arriving_chunks_cut_not_copied() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return slice_response(ChunkedStream(bytes(64), b"AAAA", b"BB", b"BBCC"))

    async def body(client: NodeClient) -> Any:
        async with client.slice(OID) as stream:
            await stream.read_exactly(64)
            return [[bytes(p) for p in await stream.read_pieces(n)] for n in (3, 4, 0, 3)]

    assert run_with(handler, body) == [[b"AAA"], [b"A", b"BB", b"B"], [], [b"BCC"]]


@pytest.mark.parametrize(
    "overrides",
    [
        {HEADER_FV_HASH: "xyz"},
        {HEADER_SLICE_INDEX: "-1"},
        {HEADER_LEAVES_BYTES: "31"},
        {HEADER_SEGMENT_COUNT: ""},
    ],
)
def test_slice_bad_headers(overrides: dict[str, str]) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return slice_response(b"", **overrides)

    async def body(client: NodeClient) -> None:
        async with client.slice(OID):
            pass

    with pytest.raises(BadNodeAnswer):
        run_with(handler, body)


def test_slice_ending_early_is_a_bad_answer() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return slice_response(bytes(64) + b"short")

    async def body(client: NodeClient) -> None:
        async with client.slice(OID) as stream:
            await stream.read_exactly(64)
            await stream.read_exactly(10)

    with pytest.raises(BadNodeAnswer, match="stream ended after 69 bytes"):
        run_with(handler, body)


# --- no httpx exception escapes -------------------------------------------------------------


def _instances() -> list[BaseException]:
    """One instance of every exception class httpx exports."""
    request = httpx.Request("GET", "http://node-1.test/")
    out: list[BaseException] = []
    for name in httpx.__all__:
        cls = getattr(httpx, name)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            continue
        if issubclass(cls, httpx.HTTPStatusError):
            out.append(cls("boom", request=request, response=httpx.Response(500)))
        elif issubclass(cls, httpx.RequestError):
            out.append(cls("boom", request=request))
        elif issubclass(cls, httpx.StreamError) and cls is not httpx.StreamError:
            out.append(cls())
        else:
            out.append(cls("boom"))
    out += [ssl.SSLError(1, "bad record mac"), ConnectionResetError(104, "reset"), OSError("x")]
    return out


EXCEPTIONS = _instances()


class FailingStream(httpx.AsyncByteStream):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield bytes(32)
        raise self.exc


def test_every_httpx_exception_class_is_covered() -> None:
    names = {type(e).__name__ for e in EXCEPTIONS}
    assert {"HTTPError", "ReadTimeout", "ConnectError", "StreamConsumed", "InvalidURL"} <= names
    assert len(EXCEPTIONS) >= 28


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("op", ["health", "deposit", "meta", "slice-open", "slice-read", "delete"])
def test_no_lower_exception_escapes(exc: BaseException, op: str) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if op == "slice-read":
            return slice_response(FailingStream(exc), segments=1)
        raise exc

    async def body(client: NodeClient) -> Any:
        if op == "health":
            return await client.health()
        if op == "deposit":
            return await client.deposit(proposal(), body_of(b"x"), 1, None)
        if op == "meta":
            return await client.meta(OID)
        if op == "delete":
            return await client.delete(OID)
        async with client.slice(OID) as stream:
            await stream.read_exactly(32)
            return await stream.read_exactly(32)

    with pytest.raises(EvaultError) as info:
        run_with(handler, body)
    assert isinstance(info.value, NodeUnreachable | BadNodeAnswer)
    assert info.value.details["node"] == 1
    assert not isinstance(info.value, httpx.HTTPError | httpx.StreamError)
    if isinstance(exc, httpx.TimeoutException):
        assert isinstance(info.value, NodeTimeout)


def test_cancellation_is_not_swallowed() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        run_with(handler, lambda c: c.health())


def test_programming_errors_are_value_errors() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("must not be called")

    with pytest.raises(ValueError, match="object_id"):
        run_with(handler, lambda c: c.meta("../etc/passwd"))
    with pytest.raises(ValueError, match="from_segment"):

        async def body(client: NodeClient) -> None:
            async with client.slice(OID, from_segment=-1):
                pass

        run_with(handler, body)


def test_unreachable_port_is_node_unreachable() -> None:
    async def main() -> None:
        # Port 9 on loopback: nothing listens there in the test environment.
        async with NodeSet(
            [NodeAddress(2, "http://127.0.0.1:9")], timeouts=Timeouts(connect_s=2.0)
        ) as nodes:
            await nodes[2].health()

    with pytest.raises(NodeUnreachable) as info:
        asyncio.run(main())
    assert info.value.node == 2 and info.value.op == "health"


# --- real TLS on loopback: mutual authentication, node names, persistent connections ----------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def make_pki(d: Path) -> dict[str, Path]:
    """A cluster CA, node-1's server certificate and the gateway's client certificate."""
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_cert = tls.generate_ca("test-ca", now=now)
    out = {"ca": d / "ca.pem"}
    tls.write_certificate(out["ca"], ca_cert)
    for name, kwargs in {
        "node": {"dns_names": ["node-1"], "ip_addresses": ["127.0.0.1"], "server": True},
        "gateway": {"client": True},
    }.items():
        key, cert = tls.issue_certificate(
            ca_key,
            ca_cert,
            common_name="evault-gateway" if name == "gateway" else "node-1",
            now=now,
            server=bool(kwargs.get("server")),
            client=bool(kwargs.get("client")),
            dns_names=kwargs.get("dns_names", ()),  # type: ignore[arg-type]
            ip_addresses=kwargs.get("ip_addresses", ()),  # type: ignore[arg-type]
        )
        out[f"{name}_cert"], out[f"{name}_key"] = d / f"{name}.pem", d / f"{name}.key"
        tls.write_certificate(out[f"{name}_cert"], cert)
        tls.write_private_key(out[f"{name}_key"], key)
    return out


async def _tiny_https_node(
    pki: dict[str, Path], connections: list[int]
) -> tuple[asyncio.Server, int]:
    """A minimal HTTP/1.1 keep-alive server answering /v1/health, with mutual TLS."""
    context = tls.server_context(
        pki["node_cert"], pki["node_key"], ca=pki["ca"], require_client_cert=True
    )
    body = json.dumps(
        {"node": 1, "vault": VAULT, "protocol": 1, "objects": 0, "free_bytes": 1}
    ).encode()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    return server, port


def test_mutual_tls_names_and_keep_alive(pki: dict[str, Path]) -> None:
    connections: list[int] = []

    async def main() -> tuple[int, type[BaseException] | None]:
        server, port = await _tiny_https_node(pki, connections)
        try:
            context = tls.client_context(pki["ca"], pki["gateway_cert"], pki["gateway_key"])
            url = f"https://127.0.0.1:{port}"
            async with NodeSet([NodeAddress(1, url, "node-1")], ssl_context=context) as nodes:
                for _ in range(3):
                    health = await nodes[1].health()
                    assert health.vault == VAULT
            # A node presenting node-1's certificate cannot pass for node-2.
            wrong: type[BaseException] | None = None
            async with NodeSet([NodeAddress(2, url)], ssl_context=context) as nodes:
                try:
                    await nodes[2].health()
                except NodeUnreachable as exc:
                    wrong = type(exc)
            return len(connections), wrong
        finally:
            server.close()
            await server.wait_closed()

    count, wrong = asyncio.run(main())
    # three requests over one persistent connection; the refused handshake never reaches serve()
    assert count == 1
    assert wrong is NodeUnreachable


# --- shares: alone in deposit answers, with proofs on demand -----------------------------------


def test_wire_shares_with_and_without_proofs() -> None:
    alone = WireShare(3, 0xABC)
    assert alone.to_json_obj() == {"index": 3, "value": "abc"} and not alone.proven
    assert WireShare.from_json_obj(alone.to_json_obj()) == alone
    proven = WireShare(3, 0xABC, 5, 6)
    assert WireShare.from_json_obj(proven.to_json_obj()) == proven and proven.proven
    with pytest.raises(FormatError):
        WireShare.from_json_obj({"index": 3, "value": "abc", "proof_c": "5"})
    with pytest.raises(ValueError, match="both or neither"):
        WireShare(3, 1, 5)


def test_share_asks_for_the_proven_share_and_checks_who_answers() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v1/objects/{OID}/share"
        return httpx.Response(200, json=ShareAnswer(1, WireShare(1, 9, 1, 2)).to_json_obj())

    got = run_with(handler, lambda c: c.share(OID))
    assert got == WireShare(1, 9, 1, 2)

    async def unproven(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"node": 1, "share": {"index": 1, "value": "9"}})

    with pytest.raises(BadNodeAnswer, match="no proof"):
        run_with(unproven, lambda c: c.share(OID))

    async def other(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=ShareAnswer(2, WireShare(2, 9, 1, 2)).to_json_obj())

    with pytest.raises(BadNodeAnswer, match="another node"):
        run_with(other, lambda c: c.share(OID))


def test_deposit_asks_not_to_sign_and_refuses_a_missing_share_it_asked_for() -> None:
    seen: list[str | None] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get(HEADER_SIGN))
        await request.aread()
        answer = deposit_answer()
        answer["share"] = None
        return httpx.Response(201, json=answer)

    got = run_with(handler, lambda c: c.deposit(proposal(), body_of(b"x"), 1, None, sign=False))
    assert got.share is None and seen == ["0"]
    with pytest.raises(BadNodeAnswer, match="no share"):
        run_with(handler, lambda c: c.deposit(proposal(), body_of(b"x"), 1, None))
    assert seen == ["0", None]


def _listing(*oids: str, next_after: str | None = None) -> dict[str, Any]:
    return ObjectListing(tuple((oid, b'{"x":1}') for oid in oids), next_after).to_json_obj()


def test_listing_asks_for_a_page_and_parses_it() -> None:
    asked: list[dict[str, str]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params))
        return httpx.Response(200, json=_listing("b" * 64, "c" * 64, next_after="c" * 64))

    page = run_with(handler, lambda client: client.list_objects("a" * 64, 2))
    assert asked == [{"limit": "2", "after": "a" * 64}]
    assert page.objects == (("b" * 64, b'{"x":1}'), ("c" * 64, b'{"x":1}'))
    assert page.next_after == "c" * 64


@pytest.mark.parametrize(
    "answer",
    [
        _listing("c" * 64, "b" * 64),  # not in order
        _listing("a" * 64),  # not past the page's start
        _listing("b" * 64, "c" * 64, "d" * 64),  # more than asked for
        _listing(next_after="b" * 64),  # an empty page that is not the last
        _listing("c" * 64, next_after="b" * 64),  # a next behind the page
        _listing("NOPE"),
        {"objects": [], "next": None, "extra": 1},
        {"objects": [{"object_id": "b" * 64, "statement": "%%%"}], "next": None},
    ],
)
def test_malformed_listings_are_bad_node_answers(answer: dict[str, Any]) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer)

    with pytest.raises(BadNodeAnswer):
        run_with(handler, lambda client: client.list_objects("a" * 64, 2))
