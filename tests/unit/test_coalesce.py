"""evault.transport.coalesce: small writes of one event-loop turn leave as one write, in order;
big writes are never held or copied; closing sends what is kept, aborting drops it.  The last
test serves a real uvicorn app over TLS through the protocol and counts the writes."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import uvicorn

from evault.transport.coalesce import (
    BIG_WRITE_BYTES,
    CoalescingHttpToolsProtocol,
    CoalescingTransport,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[Any] = []
        self.closing = False
        self.events: list[str] = []

    def write(self, data: Any) -> None:
        assert not self.closing
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def write_eof(self) -> None:
        self.events.append("eof")

    def abort(self) -> None:
        self.events.append("abort")
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def _next_turn() -> None:
    await asyncio.sleep(0)


async def test_small_writes_of_one_turn_leave_together() -> None:
    fake = FakeTransport()
    t = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.write(bytearray(b"body"))
    t.write(b"")
    assert fake.writes == [] and t.get_write_buffer_size() == 7 + 23
    await _next_turn()
    assert fake.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert t.get_write_buffer_size() == 7
    t.write(b"next")
    await _next_turn()
    assert fake.writes[-1] == b"next" and len(fake.writes) == 2
    assert t.get_extra_info("peername") == "info:peername"  # everything else is the transport's


async def test_big_writes_go_through_after_what_is_kept() -> None:
    fake = FakeTransport()
    t = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    big = memoryview(bytes(BIG_WRITE_BYTES))
    t.write(b"head")
    t.write(big)
    assert fake.writes[0] == b"head" and fake.writes[1] is big  # in order, not copied
    await _next_turn()
    assert len(fake.writes) == 2
    # Small writes adding up to a big one do not wait for the end of the turn.
    for _ in range(4):
        t.write(bytes(BIG_WRITE_BYTES // 4))
    assert len(fake.writes) == 3 and len(fake.writes[2]) == BIG_WRITE_BYTES
    t.writelines([b"a", b"b"])
    await _next_turn()
    assert fake.writes[3] == b"ab"


async def test_close_and_eof_send_what_is_kept_and_abort_drops_it() -> None:
    fake = FakeTransport()
    t = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"last words")
    t.write_eof()
    assert fake.writes == [b"last words"] and fake.events == ["eof"]
    t.write(b"bye")
    t.close()
    assert fake.writes[-1] == b"bye" and fake.events[-1] == "close"
    await _next_turn()  # the scheduled turn-end finds nothing left, and the transport closed
    assert len(fake.writes) == 2

    fake = FakeTransport()
    t = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"never sent")
    t.abort()
    await _next_turn()
    assert fake.writes == [] and fake.events == ["abort"]


async def test_a_kept_write_is_dropped_when_the_connection_went_away() -> None:
    fake = FakeTransport()
    t = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"too late")
    fake.closing = True  # the peer hung up before the end of the turn
    await _next_turn()
    assert fake.writes == []


class _CountingProtocol(CoalescingHttpToolsProtocol):
    writes: ClassVar[list[int]] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        real_write = transport.write

        def counting_write(data: Any) -> None:
            _CountingProtocol.writes.append(len(data))
            real_write(data)

        transport.write = counting_write  # type: ignore[method-assign]
        super().connection_made(transport)


async def test_a_real_server_sends_head_and_small_body_in_one_write(
    tmp_path: Path, tls_material: Any
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b"x" * (10 if scope["path"] == "/small" else 3 * BIG_WRITE_BYTES)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    cert, key, ca = tls_material
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=_CountingProtocol,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]
        context = ssl.create_default_context(cafile=str(ca))
        async with httpx.AsyncClient(verify=context, timeout=10) as client:
            _CountingProtocol.writes.clear()
            small = await client.get(f"https://localhost:{port}/small")
            assert small.status_code == 200 and small.content == b"x" * 10
            assert len(_CountingProtocol.writes) == 1  # head and body together
            _CountingProtocol.writes.clear()
            big = await client.get(f"https://localhost:{port}/big")
            assert len(big.content) == 3 * BIG_WRITE_BYTES
            assert _CountingProtocol.writes[-1] == 3 * BIG_WRITE_BYTES  # passed through whole
            assert len(_CountingProtocol.writes) == 2  # the head, then the body
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
def tls_material(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost (cryptography)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem")
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return paths
