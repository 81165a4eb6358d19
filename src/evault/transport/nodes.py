"""The gateway's client of the node protocol (``docs/spec/node-protocol.md``).

One :class:`NodeSet` hands out one :class:`NodeClient` per node.  A client speaks the protocol
over a :class:`~evault.transport.hop.Hop`: on the real network one aiohttp session per node
(``evault.transport.hop.AiohttpHop``: persistent HTTP/1.1 connections with mutual TLS, each
request naming the node's certificate name as SNI and verified host name, explicit
time-outs); in tests any httpx client or transport (an ASGI app, a mock, a fake cluster).

Errors
------
Every failure below this module is translated in exactly one place, :func:`_translate`, into
the evault tree; no ``aiohttp`` or ``httpx`` (or ``ssl``/``OSError``) exception escapes::

    NodeUnreachable (TransportError)  connect refused, reset, TLS failure, broken stream
    └── NodeTimeout                   connect/read/write/pool time-out
    NodeRejected (ProtocolError)      the node answered a JSON error; ``node_code`` is its code
    BadNodeAnswer (ProtocolError)     status, headers or body the protocol forbids

Every answer body is read with a size cap; slice bodies are read incrementally by the caller.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

import aiohttp
import httpx

from evault.errors import (
    BadNodeAnswer,
    EvaultError,
    NodeRejected,
    NodeTimeout,
    NodeUnreachable,
    ProtocolError,
)
from evault.protocol.node_api import (
    ERRORS,
    HEADER_FV_HASH,
    HEADER_LEAVES_BYTES,
    HEADER_PROPOSAL,
    HEADER_SEGMENT_COUNT,
    HEADER_SHA256,
    HEADER_SIGN,
    HEADER_SLICE_INDEX,
    MAX_LIST_LIMIT,
    PATH_HEALTH,
    PATH_OBJECT,
    PATH_OBJECTS,
    PATH_SHARE,
    PATH_SLICE,
    PATH_UNWRAP,
    PATH_UNWRAP_KEYS,
    DepositResult,
    KeyDeposit,
    KeyDepositResult,
    KeyListing,
    ObjectListing,
    ObjectMeta,
    Proposal,
    ShareAnswer,
    UnwrapAnswer,
    UnwrapCall,
    WireShare,
    is_object_id,
    node_name,
)
from evault.transport.hop import AiohttpHop, Answer, Content, Hop, HttpxHop

#: Cap on any JSON answer a node sends (a deposit answer is a few KiB: statement, FV, share).
MAX_ANSWER_BYTES: Final = 1024 * 1024
#: Headers of every request (the hop adds Host, and Content-Length or chunked framing).
#: Slices are incompressible and compression would only cost CPU on both ends.
_HEADERS: Final = {"Accept-Encoding": "identity"}


@dataclass(frozen=True)
class Timeouts:
    """Time-outs for every phase of a request, in seconds.

    ``read_s`` bounds the wait for each piece of an answer (also the wait for a node to finish
    storing and signing after the body was sent), ``write_s`` each socket write (a node that
    stops reading the body), ``pool_s`` the wait for a free pooled connection.
    """

    connect_s: float = 10.0
    read_s: float = 30.0
    write_s: float = 30.0
    pool_s: float = 30.0

    def to_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_s, read=self.read_s, write=self.write_s, pool=self.pool_s
        )


@dataclass(frozen=True)
class PoolLimits:
    """Connection pool limits of each node's pool (every node has a pool of its own).

    ``max_connections`` bounds the connections open to one node at once (one per concurrent
    deposit or retrieval using it); a connection read to its end goes back to the pool and is
    closed after ``keepalive_expiry_s`` unused (aiohttp keeps every idle connection until then).
    """

    max_connections: int = 128
    keepalive_expiry_s: float = 60.0


@dataclass(frozen=True)
class NodeHealth:
    """A node's answer to ``GET /v1/health``."""

    node: int
    vault: str
    protocol: int
    objects: int
    free_bytes: int


# --- the one place where lower-level failures become evault errors --------------------------


def _translate(exc: BaseException, node: int, op: str) -> EvaultError | None:
    """The evault error for ``exc`` raised while talking to ``node``, or None to re-raise it.

    Cancellation and programming errors (TypeError, ValueError from our own code) pass through.
    """
    if isinstance(exc, EvaultError):
        if isinstance(exc, NodeUnreachable | NodeRejected | BadNodeAnswer):
            return exc
        if isinstance(exc, ProtocolError):
            # A message parser (evault.protocol.node_api) refused the answer.
            return BadNodeAnswer(node, op, exc.message)
        return exc
    if isinstance(exc, aiohttp.ClientError | TimeoutError):
        return _translate_aiohttp(exc, node, op)
    if isinstance(exc, httpx.TimeoutException):
        phase = {
            httpx.ConnectTimeout: "connecting",
            httpx.ReadTimeout: "waiting for data",
            httpx.WriteTimeout: "sending data",
            httpx.PoolTimeout: "waiting for a free connection",
        }.get(type(exc), "waiting")
        return NodeTimeout(node, op, f"timed out {phase}")
    if isinstance(exc, httpx.ConnectError):
        return NodeUnreachable(node, op, f"cannot connect: {_reason(exc)}")
    if isinstance(exc, httpx.RemoteProtocolError):
        return BadNodeAnswer(node, op, f"HTTP protocol violation: {_reason(exc)}")
    if isinstance(exc, httpx.DecodingError):
        return BadNodeAnswer(node, op, f"undecodable body: {_reason(exc)}")
    if isinstance(exc, httpx.TooManyRedirects):
        return BadNodeAnswer(node, op, "redirects are not part of the protocol")
    if isinstance(exc, httpx.HTTPError | httpx.StreamError | httpx.InvalidURL):
        # NetworkError (read/write/close), LocalProtocolError, UnsupportedProtocol, ProxyError,
        # stream-state errors, a bad node URL: the node cannot be used for this request.
        return NodeUnreachable(node, op, f"{type(exc).__name__}: {_reason(exc)}")
    if isinstance(exc, httpx.CookieConflict):
        return BadNodeAnswer(node, op, "conflicting cookies")
    if isinstance(exc, ssl.SSLError | OSError):
        return NodeUnreachable(node, op, f"{type(exc).__name__}: {_reason(exc)}")
    return None


def _translate_aiohttp(exc: Exception, node: int, op: str) -> EvaultError:
    """An aiohttp failure (or a time-out, which only the hop can raise inside ``_mapped``)."""
    if isinstance(exc, TimeoutError):  # aiohttp's time-outs are TimeoutErrors too
        phase = (
            "connecting"
            if isinstance(exc, aiohttp.ConnectionTimeoutError)
            else "waiting for data"
            if isinstance(exc, aiohttp.SocketTimeoutError)
            else "waiting"
        )
        return NodeTimeout(node, op, f"timed out {phase}")
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, TLS handshake, certificate
        return NodeUnreachable(node, op, f"cannot connect: {_reason(exc)}")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        # A body cut short or malformed, an unparsable status line or header block.
        return BadNodeAnswer(node, op, f"HTTP protocol violation: {_reason(exc)}")
    # Disconnected, reset, other socket and URL errors: the node cannot be used now.
    return NodeUnreachable(node, op, f"{type(exc).__name__}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    try:
        text = str(exc).strip()
    except Exception:  # a library exception whose __str__ needs fields it was not given
        text = ""
    return text.splitlines()[0][:200] if text else type(exc).__name__


@contextmanager
def _mapped(node: int, op: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        translated = _translate(exc, node, op)
        if translated is None or translated is exc:
            raise
        raise translated from exc


# --- one node -------------------------------------------------------------------------------


class SliceStream:
    """An open ``GET .../slice`` answer: validated headers, then the body read incrementally.

    The body is the slice's leaf hashes (``leaves_bytes``), then the blocks of segments
    ``from_segment..segment_count-1``.  :meth:`read_exactly` returns exactly the bytes asked
    for (:meth:`read_pieces` the same bytes in the pieces they came in) or raises
    ``BadNodeAnswer`` if the node ends the stream early.
    """

    def __init__(
        self,
        node: int,
        answer: Answer,
        *,
        slice_index: int,
        leaves_bytes: int,
        fv_hash: bytes,
        segment_count: int,
        from_segment: int,
    ) -> None:
        self.node = node
        self.slice_index = slice_index
        self.leaves_bytes = leaves_bytes
        self.fv_hash = fv_hash
        self.segment_count = segment_count
        self.from_segment = from_segment
        # Chunks as the network delivers them (no waiting to fill a buffer), kept as a list so
        # that a piece is copied at most once, when it is joined, and not at all by a reader
        # of pieces: a block of a 10 MiB document is about 350 KB, and every copy of it costs
        # a third of hashing it.
        self._chunks = answer.chunks()
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._received = 0

    async def read_exactly(self, size: int) -> bytes:
        """The next ``size`` bytes, joined (no copy when they came as one piece)."""
        pieces = await self.read_pieces(size)
        return b"".join(pieces)  # a lone bytes comes back as it is

    async def read_pieces(self, size: int) -> list[bytes | memoryview]:
        """The next ``size`` bytes as the pieces they came in (the last one cut through a
        view), never joined: for a reader that hashes and forwards them as they are."""
        if size < 0:
            raise ValueError("size: must be >= 0")
        with _mapped(self.node, "slice"):
            while self._pending_bytes < size:
                try:
                    chunk = await self._chunks.__anext__()
                except StopAsyncIteration:
                    raise BadNodeAnswer(
                        self.node,
                        "slice",
                        f"stream ended after {self._received} bytes, "
                        f"{size - self._pending_bytes} short of the next piece",
                    ) from None
                self._received += len(chunk)
                self._pending.append(chunk)
                self._pending_bytes += len(chunk)
        return self._take(size)

    def _take(self, size: int) -> list[bytes | memoryview]:
        """The first ``size`` pending bytes (there are at least that many), uncopied."""
        pending = self._pending
        parts: list[bytes | memoryview] = []
        need = size
        while need:
            chunk = pending[0]
            if len(chunk) <= need:
                parts.append(chunk)
                del pending[0]
                need -= len(chunk)
            else:
                view = memoryview(chunk)
                parts.append(view[:need])
                pending[0] = view[need:]
                need = 0
        self._pending_bytes -= size
        return parts

    async def finish(self) -> None:
        """Read the answer to its end, which must hold no byte more than was asked for.

        A slice read to its last block is finished this way so that HTTP/1.1 sees the whole
        answer and the pooled connection goes back to the pool: an answer closed before its
        end costs the next request a new connection and TLS handshake.
        """
        extra = self._pending_bytes
        with _mapped(self.node, "slice"):
            async for chunk in self._chunks:
                extra += len(chunk)
        if extra:
            raise BadNodeAnswer(self.node, "slice", f"{extra} bytes past the last block")


class NodeClient:
    """Requests to one node, over the shared client of a :class:`NodeSet`."""

    def __init__(
        self,
        index: int,
        base_url: str,
        http: Hop | httpx.AsyncClient | httpx.AsyncBaseTransport,
        *,
        tls_name: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        """``http``: the node's :class:`~evault.transport.hop.Hop` (a :class:`NodeSet` makes
        them), or an httpx client or transport, for tests (a client's time-outs apply unless
        ``timeouts`` is given; over a bare transport they default to :class:`Timeouts`)."""
        if not isinstance(index, int) or index < 1:
            raise ValueError("index: must be an integer >= 1")
        self.index = index
        self.base_url = base_url.rstrip("/")
        self.tls_name = tls_name or node_name(index)
        self._hop: Hop = (
            HttpxHop(http, tls_name=self.tls_name, timeouts=timeouts)
            if isinstance(http, httpx.AsyncClient | httpx.AsyncBaseTransport)
            else http
        )

    def __repr__(self) -> str:
        return f"NodeClient({self.index}, {self.base_url!r})"

    async def aclose(self) -> None:
        """Close the hop (its pooled connections) if this client owns it."""
        await self._hop.aclose()

    def _url(self, path: str) -> str:
        return self.base_url + path

    @asynccontextmanager
    async def _request(
        self,
        op: str,
        method: str,
        path: str,
        *,
        expect: int,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: Content = None,
        also: tuple[int, ...] = (),
    ) -> AsyncIterator[Answer]:
        """Send a request and yield the streaming answer once its status is ``expect``
        (or one of ``also``); the answer is closed when the block ends."""
        url = self._url(path)
        if params:
            url += "?" + urlencode(params)
        with _mapped(self.index, op):
            answer = await self._hop.send(
                method, url, {**_HEADERS, **headers} if headers else _HEADERS, content
            )
            try:
                if answer.status != expect and answer.status not in also:
                    await self._raise_error_answer(op, answer)
                yield answer
            finally:
                await answer.aclose()

    async def _read_json(self, op: str, answer: Answer) -> Any:
        body = bytearray()
        async for chunk in answer.chunks():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise BadNodeAnswer(self.index, op, f"answer over {MAX_ANSWER_BYTES} bytes")
        try:
            return json.loads(bytes(body))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadNodeAnswer(self.index, op, f"answer is not JSON: {exc}") from exc

    async def _raise_error_answer(self, op: str, answer: Answer) -> None:
        status = answer.status
        try:
            obj = await self._read_json(op, answer)
        except BadNodeAnswer:
            obj = None
        error = obj.get("error") if isinstance(obj, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(code, str) or not isinstance(message, str):
            raise BadNodeAnswer(self.index, op, f"HTTP {status} without a JSON error body")
        if ERRORS.get(code) != status:
            raise BadNodeAnswer(
                self.index, op, f"HTTP {status} with error code {code!r} the spec does not pair"
            )
        raise NodeRejected(self.index, op, status, code, message[:500])

    async def health(self) -> NodeHealth:
        async with self._request("health", "GET", PATH_HEALTH, expect=200) as response:
            obj = await self._read_json("health", response)
        fields = {"node": int, "vault": str, "protocol": int, "objects": int, "free_bytes": int}
        if not isinstance(obj, dict) or any(
            not isinstance(obj.get(key), kind) or isinstance(obj.get(key), bool)
            for key, kind in fields.items()
        ):
            raise BadNodeAnswer(self.index, "health", "health answer lacks its fields")
        return NodeHealth(**{key: obj[key] for key in fields})

    async def deposit(
        self,
        proposal: Proposal,
        body: AsyncIterator[bytes],
        size: int | None,
        sha256: str | None,
        *,
        sign: bool = True,
    ) -> DepositResult:
        """Stream a whole document to the node (``PUT /v1/objects/{id}``) and parse its answer.

        With ``size`` the request carries ``Content-Length``; without, chunked encoding.
        ``sign=False`` asks the node to store the document without signing (``Evault-Sign:
        0``); its share can be asked for later (:meth:`share`).
        """
        headers = {HEADER_PROPOSAL: proposal.to_header()}
        if not sign:
            headers[HEADER_SIGN] = "0"
        if size is not None:
            if size < 0:
                raise ValueError("size: must be >= 0")
            headers["Content-Length"] = str(size)
        if sha256 is not None:
            headers[HEADER_SHA256] = sha256
        path = PATH_OBJECT.format(object_id=proposal.object_id())
        async with self._request(
            "deposit", "PUT", path, expect=201, headers=headers, content=body
        ) as response:
            obj = await self._read_json("deposit", response)
        with _mapped(self.index, "deposit"):
            result = DepositResult.from_json_obj(obj, n=proposal.n)
        if sign and result.share is None:
            raise BadNodeAnswer(self.index, "deposit", "asked to sign, sent no share")
        return result

    async def meta(self, object_id: str) -> ObjectMeta:
        _check_object_id(object_id)
        path = PATH_OBJECT.format(object_id=object_id)
        async with self._request("meta", "GET", path, expect=200) as response:
            obj = await self._read_json("meta", response)
        with _mapped(self.index, "meta"):
            return ObjectMeta.from_json_obj(obj)

    @asynccontextmanager
    async def slice(self, object_id: str, from_segment: int = 0) -> AsyncIterator[SliceStream]:
        """Open the node's slice of ``object_id`` from segment ``from_segment`` on."""
        _check_object_id(object_id)
        if not isinstance(from_segment, int) or from_segment < 0:
            raise ValueError("from_segment: must be an integer >= 0")
        path = PATH_SLICE.format(object_id=object_id)
        params = {"from_segment": str(from_segment)} if from_segment else {}
        async with self._request("slice", "GET", path, expect=200, params=params) as response:
            yield self._slice_stream(response, from_segment)

    def _slice_stream(self, response: Answer, from_segment: int) -> SliceStream:
        def header_int(name: str) -> int:
            text = response.headers.get(name, "")
            if not text.isdigit() or len(text) > 18:
                raise BadNodeAnswer(self.index, "slice", f"header {name} is {text!r}")
            return int(text)

        slice_index = header_int(HEADER_SLICE_INDEX)
        leaves_bytes = header_int(HEADER_LEAVES_BYTES)
        segment_count = header_int(HEADER_SEGMENT_COUNT)
        fv_hex = response.headers.get(HEADER_FV_HASH, "")
        if not is_object_id(fv_hex):  # the same shape: 64 lowercase hex digits
            raise BadNodeAnswer(self.index, "slice", f"header {HEADER_FV_HASH} is {fv_hex!r}")
        if leaves_bytes != 32 * segment_count:
            raise BadNodeAnswer(
                self.index,
                "slice",
                f"{leaves_bytes} leaf bytes for {segment_count} segments (expected 32 each)",
            )
        if from_segment > segment_count:
            raise BadNodeAnswer(
                self.index, "slice", f"served from segment {from_segment} of {segment_count}"
            )
        return SliceStream(
            self.index,
            response,
            slice_index=slice_index,
            leaves_bytes=leaves_bytes,
            fv_hash=bytes.fromhex(fv_hex),
            segment_count=segment_count,
            from_segment=from_segment,
        )

    async def list_objects(self, after: str | None, limit: int) -> ObjectListing:
        """One page of the objects the node holds, by object id (``GET /v1/objects``)."""
        if after is not None:
            _check_object_id(after)
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit: must be in 1..{MAX_LIST_LIMIT}")
        params = {"limit": str(limit), **({"after": after} if after is not None else {})}
        async with self._request("list", "GET", PATH_OBJECTS, expect=200, params=params) as answer:
            obj = await self._read_json("list", answer)
        with _mapped(self.index, "list"):
            return ObjectListing.from_json_obj(obj, after=after, limit=limit)

    async def share(self, object_id: str) -> WireShare:
        """The node's share, with its proof, of the statement it stored for ``object_id``
        (``GET /v1/objects/{id}/share``)."""
        _check_object_id(object_id)
        path = PATH_SHARE.format(object_id=object_id)
        async with self._request("share", "GET", path, expect=200) as response:
            obj = await self._read_json("share", response)
        with _mapped(self.index, "share"):
            answer = ShareAnswer.from_json_obj(obj)
        if answer.node != self.index or answer.share.index != self.index:
            raise BadNodeAnswer(self.index, "share", "answers for another node's share")
        return answer.share

    async def delete(self, object_id: str) -> None:
        _check_object_id(object_id)
        path = PATH_OBJECT.format(object_id=object_id)
        async with self._request("delete", "DELETE", path, expect=204) as response:
            async for _ in response.chunks():  # read to its end: the connection stays pooled
                pass

    # -- confidentiality (issue 6): unwrap keys and partial unwraps ----------------------

    async def _json_call(
        self, op: str, method: str, path: str, body: Any, *, expect: tuple[int, ...]
    ) -> tuple[int, Any]:
        data = json.dumps(body, separators=(",", ":")).encode("ascii")

        async def once() -> AsyncIterator[bytes]:
            yield data

        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        async with self._request(
            op, method, path, expect=expect[0], headers=headers, content=once(), also=expect[1:]
        ) as response:
            return response.status, await self._read_json(op, response)

    async def put_unwrap_key(self, owner_id: str, deposit: KeyDeposit) -> KeyDepositResult:
        """Relay one sealed unwrap-key share (``PUT /v1/unwrap-keys/{owner_id}``)."""
        _check_object_id(owner_id)
        path = PATH_UNWRAP_KEYS.format(owner_id=owner_id)
        status, obj = await self._json_call(
            "unwrap-key", "PUT", path, deposit.to_json_obj(), expect=(201, 200)
        )
        with _mapped(self.index, "unwrap-key"):
            result = KeyDepositResult.from_json_obj(obj)
        if result.created != (status == 201) or result.node != self.index:
            raise BadNodeAnswer(self.index, "unwrap-key", "answer contradicts its status or node")
        return result

    async def unwrap_keys(self, owner_id: str) -> KeyListing:
        """The certificates of an owner's unwrap keys (``GET /v1/unwrap-keys/{owner_id}``)."""
        _check_object_id(owner_id)
        path = PATH_UNWRAP_KEYS.format(owner_id=owner_id)
        async with self._request("unwrap-keys", "GET", path, expect=200) as response:
            obj = await self._read_json("unwrap-keys", response)
        with _mapped(self.index, "unwrap-keys"):
            return KeyListing.from_json_obj(obj)

    async def unwrap(self, signed_request: bytes) -> UnwrapAnswer:
        """Relay a client's signed unwrap request (``POST /v1/unwrap``)."""
        _, obj = await self._json_call(
            "unwrap", "POST", PATH_UNWRAP, UnwrapCall(signed_request).to_json_obj(), expect=(200,)
        )
        with _mapped(self.index, "unwrap"):
            return UnwrapAnswer.from_json_obj(obj)


def _check_object_id(object_id: str) -> None:
    if not is_object_id(object_id):
        raise ValueError("object_id: must be 64 lowercase hex digits")


# --- all nodes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeAddress:
    index: int
    url: str
    tls_name: str | None = None


class NodeSet:
    """One :class:`NodeClient` per node, each on its own pooled transport (see
    :class:`PoolLimits`).  Close with :meth:`aclose`.

    ``transport`` replaces the network (tests pass ``httpx.MockTransport`` or an ASGI transport).
    """

    def __init__(
        self,
        nodes: Sequence[NodeAddress],
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeouts: Timeouts | None = None,
        limits: PoolLimits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        indices = [node.index for node in nodes]
        if len(set(indices)) != len(indices) or not indices:
            raise ValueError("nodes: need at least one node, each index once")
        self.timeouts = timeouts or Timeouts()
        pool = limits or PoolLimits()
        self._transport = transport
        # A transport given by a test serves every node; otherwise each node has its own
        # aiohttp session, so its pool holds only that node's few connections.
        self.clients: dict[int, NodeClient] = {}
        for node in sorted(nodes, key=lambda node: node.index):
            tls_name = node.tls_name or node_name(node.index)
            hop: Hop | httpx.AsyncBaseTransport = transport or AiohttpHop(
                tls_name=tls_name, ssl_context=ssl_context, timeouts=self.timeouts, limits=pool
            )
            self.clients[node.index] = NodeClient(
                node.index, node.url, hop, tls_name=tls_name, timeouts=self.timeouts
            )

    def __getitem__(self, index: int) -> NodeClient:
        return self.clients[index]

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        if self._transport is not None:
            await self._transport.aclose()

    async def __aenter__(self) -> NodeSet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
