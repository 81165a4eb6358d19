"""The node's HTTP adapter: docs/spec/node-protocol.md over Starlette, in front of NodeService.

It parses and checks what arrives (headers, path and query parameters, sizes, an idle time-out on
every body read), calls the service, and renders answers.  Every error leaves as the spec's JSON
body with the status the spec pairs with its code; :func:`error_code` is the one place where
exceptions become codes.  Two pure-ASGI layers wrap the app:

* :class:`ClientCertGate` lets a request through only if the TLS client certificate (exposed by
  ``evault.node.server`` as the ASGI TLS extension, ``scope["extensions"]["tls"]``) has subject
  CN ``evault-gateway``; otherwise ``401 unauthenticated``.  Missing TLS information counts as
  no certificate: the gate fails closed.
* :class:`AccessLog` writes one line per request: method, path, status, error code, bytes in and
  out, duration.  Never document bytes, never headers (the proposal names the document).

The unwrap-key routes (spec: "Unwrap keys and partial unwraps") are served when the app is
given an :class:`~evault.node.unwrap.UnwrapService`.  :class:`TrafficRecorder` is test-only:
it writes every request and response body to files, so that tests can search everything the
gateway sent to and received from a node for bytes that must never be there.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import anyio
from cryptography import x509
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evault.errors import (
    BadRequest,
    FormatError,
    InsufficientStorage,
    InvalidElement,
    InvalidKeyShare,
    KeyConflict,
    NoUnwrapKey,
    ObjectDamaged,
    ObjectExists,
    ObjectMissing,
    RequestRefused,
    TooLarge,
    UnwrapRequestRejected,
)
from evault.node.service import NodeService, check_object_id, parse_sha256_header
from evault.node.unwrap import UnwrapService
from evault.protocol.node_api import (
    BODY_IDLE_TIMEOUT_S,
    ERRORS,
    GATEWAY_CERT_CN,
    HEADER_FV_HASH,
    HEADER_LEAVES_BYTES,
    HEADER_PROPOSAL,
    HEADER_SEGMENT_COUNT,
    HEADER_SHA256,
    HEADER_SIGN,
    HEADER_SLICE_INDEX,
    MAX_JSON_BODY_BYTES,
    MAX_LIST_LIMIT,
    PATH_HEALTH,
    PATH_OBJECT,
    PATH_OBJECTS,
    PATH_SHARE,
    PATH_SLICE,
    PATH_UNWRAP,
    PATH_UNWRAP_KEYS,
    KeyDeposit,
    ObjectListing,
    Proposal,
    UnwrapCall,
    error_body,
)
from evault.protocol.statement import Statement

log = logging.getLogger("evault.node")

_MAX_INT_DIGITS: Final = 18
_STATE_ERROR: Final = "evault_error_code"


# --- errors: the one place where exceptions become the spec's codes ------------------------


def error_code(exc: BaseException) -> str:
    """The spec's error code for an exception raised while serving a request."""
    if isinstance(exc, RequestRefused):
        return exc.code if exc.code in ERRORS else "bad_request"
    if isinstance(exc, ObjectExists):
        return "exists"
    if isinstance(exc, ObjectMissing | ObjectDamaged):
        # A damaged object is not served: the node holds no *usable* committed object.
        return "not_found"
    if isinstance(exc, InsufficientStorage):
        return "insufficient_storage"
    if isinstance(exc, UnwrapRequestRejected):
        return "unwrap_refused"
    if isinstance(exc, KeyConflict):
        return "key_conflict"
    if isinstance(exc, NoUnwrapKey):
        return "not_found"
    if isinstance(exc, FormatError | InvalidKeyShare | InvalidElement):
        return "bad_request"
    return "internal"


def error_response(code: str, message: str, scope: Scope | None = None) -> JSONResponse:
    headers = None
    if scope is not None:
        scope.setdefault("state", {})[_STATE_ERROR] = code
        if scope.get("method") == "PUT":
            # The rest of a refused upload is not worth reading: close instead of draining it.
            headers = {"Connection": "close"}
    return JSONResponse(error_body(code, message), status_code=ERRORS[code], headers=headers)


def _response_for(exc: BaseException, request: Request) -> Response:
    code = error_code(exc)
    if code == "internal":
        log.exception("internal error serving %s %s", request.method, request.url.path)
        message = "internal error"
    else:
        message = str(exc)
    return error_response(code, message, request.scope)


Endpoint = Callable[[Request], Awaitable[Response]]


def _guarded(endpoint: Endpoint) -> Endpoint:
    @functools.wraps(endpoint)
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ClientDisconnect:
            # Nobody will read this answer; the deposit was discarded.
            return error_response(
                "bad_request", "the client went away before the body ended", request.scope
            )
        except Exception as exc:
            return _response_for(exc, request)

    return run


# --- request parsing -----------------------------------------------------------------------


def _int_param(text: str | None, what: str, default: int | None = None) -> int | None:
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_INT_DIGITS:
        raise BadRequest(f"{what} must be a non-negative decimal integer")
    return int(text)


async def _body(request: Request, idle_timeout_s: float) -> AsyncIterator[bytes]:
    """The request body, chunk by chunk, with a time-out on every read (spec: Limits)."""
    chunks = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(idle_timeout_s):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise BadRequest(
                f"no byte of the body arrived for {idle_timeout_s:.0f} s; deposit discarded"
            ) from None
        if chunk:
            yield chunk


async def _json_body(request: Request, idle_timeout_s: float) -> Any:
    """A small JSON request body, read whole with the spec's cap (413 too_large)."""
    data = bytearray()
    async for chunk in _body(request, idle_timeout_s):
        data += chunk
        if len(data) > MAX_JSON_BODY_BYTES:
            raise TooLarge("the JSON body", MAX_JSON_BODY_BYTES)
    try:
        return json.loads(bytes(data))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None


@functools.lru_cache(maxsize=1024)
def _statement_fv_hash(statement: bytes) -> str:
    """The ``fv_hash`` of stored statement bytes (parsed once per object, not per request)."""
    return Statement.from_bytes(statement).fv_hash


# --- the app -------------------------------------------------------------------------------


def create_app(
    service: NodeService,
    *,
    require_client_cn: str | None = GATEWAY_CERT_CN,
    idle_timeout_s: float = BODY_IDLE_TIMEOUT_S,
    unwrap: UnwrapService | None = None,
    traffic_dir: Path | None = None,
    fast_path: bool = True,
) -> ASGIApp:
    """The node's ASGI app.  ``require_client_cn=None`` turns the certificate gate off, which
    only in-process tests do (they have no TLS connection); ``evault node`` never does.
    ``unwrap`` serves the unwrap-key routes; ``traffic_dir`` (tests only) records every body
    (:class:`TrafficRecorder`); ``fast_path=False`` routes slice reads through Starlette's
    router like every other request (tests compare the two, :class:`SliceFastPath`)."""

    @_guarded
    async def health(request: Request) -> Response:
        return JSONResponse(await service.health())

    @_guarded
    async def list_objects(request: Request) -> Response:
        limit = _int_param(request.query_params.get("limit"), "limit", MAX_LIST_LIMIT)
        after = request.query_params.get("after")
        page = await service.list_objects(after, limit or 0)
        return JSONResponse(ObjectListing(page.objects, page.next_after).to_json_obj())

    @_guarded
    async def put_object(request: Request) -> Response:
        object_id = check_object_id(request.path_params["object_id"])
        header = request.headers.get(HEADER_PROPOSAL)
        if header is None:
            raise BadRequest(f"the {HEADER_PROPOSAL} header is missing")
        try:
            proposal = Proposal.from_header(header)
        except FormatError as exc:
            raise BadRequest(f"{HEADER_PROPOSAL}: {exc}") from exc
        content_length = _int_param(request.headers.get("content-length"), "Content-Length")
        claimed = parse_sha256_header(request.headers.get(HEADER_SHA256))
        sign = request.headers.get(HEADER_SIGN, "1")
        if sign not in ("0", "1"):
            raise BadRequest(f"{HEADER_SIGN}: expected 0 or 1, got {sign[:20]!r}")
        result = await service.deposit(
            object_id,
            proposal,
            _body(request, idle_timeout_s),
            content_length=content_length,
            claimed_sha256=claimed,
            sign=sign == "1",
        )
        return JSONResponse(result.to_json_obj(), status_code=201)

    @_guarded
    async def get_object(request: Request) -> Response:
        meta = await service.meta(request.path_params["object_id"])
        return JSONResponse(meta.to_json_obj())

    @_guarded
    async def get_share(request: Request) -> Response:
        answer = await service.share(request.path_params["object_id"])
        return JSONResponse(answer.to_json_obj())

    @_guarded
    async def delete_object(request: Request) -> Response:
        await service.delete(request.path_params["object_id"])
        return Response(status_code=204)

    @_guarded
    async def get_slice(request: Request) -> Response:
        from_segment = _int_param(request.query_params.get("from_segment"), "from_segment", 0)
        reader = await service.open_slice(request.path_params["object_id"], from_segment or 0)
        record = reader.record
        start = record.segment_offset(from_segment or 0)
        headers = {
            HEADER_SLICE_INDEX: str(record.slice_index),
            HEADER_LEAVES_BYTES: str(len(record.leaves)),
            HEADER_FV_HASH: _statement_fv_hash(record.statement),
            HEADER_SEGMENT_COUNT: str(record.segment_count),
            "Content-Length": str(len(record.leaves) + record.slice_bytes - start),
        }
        body = service.small_slice_body(reader, from_segment or 0)
        if body is not None:
            # One send, no streaming machinery (a task group per answer) for a small slice.
            return Response(body, media_type="application/octet-stream", headers=headers)
        return StreamingResponse(
            service.slice_body(reader, from_segment or 0),
            media_type="application/octet-stream",
            headers=headers,
        )

    @_guarded
    async def put_unwrap_key(request: Request) -> Response:
        if unwrap is None:  # pragma: no cover - the route exists only with a service
            raise BadRequest("this node serves no unwrap keys")
        deposit = KeyDeposit.from_json_obj(await _json_body(request, idle_timeout_s))
        result = await anyio.to_thread.run_sync(
            unwrap.put_key, request.path_params["owner_id"], deposit
        )
        return JSONResponse(result.to_json_obj(), status_code=201 if result.created else 200)

    @_guarded
    async def get_unwrap_keys(request: Request) -> Response:
        if unwrap is None:  # pragma: no cover
            raise BadRequest("this node serves no unwrap keys")
        listing = await anyio.to_thread.run_sync(unwrap.list_keys, request.path_params["owner_id"])
        return JSONResponse(listing.to_json_obj())

    @_guarded
    async def post_unwrap(request: Request) -> Response:
        if unwrap is None:  # pragma: no cover
            raise BadRequest("this node serves no unwrap keys")
        call = UnwrapCall.from_json_obj(await _json_body(request, idle_timeout_s))
        answer = await anyio.to_thread.run_sync(unwrap.unwrap, call.request)
        return JSONResponse(answer.to_json_obj())

    async def unknown(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            message = f"{request.method} is not defined on {request.url.path}"
        else:
            message = f"unknown path {request.url.path} (this node speaks protocol /v1/)"
        return error_response("unknown_path", message, request.scope)

    app = Starlette(
        routes=[
            Route(PATH_HEALTH, health, methods=["GET"]),
            Route(PATH_OBJECTS, list_objects, methods=["GET"]),
            Route(PATH_OBJECT, put_object, methods=["PUT"]),
            Route(PATH_OBJECT, get_object, methods=["GET"]),
            Route(PATH_OBJECT, delete_object, methods=["DELETE"]),
            Route(PATH_SLICE, get_slice, methods=["GET"]),
            Route(PATH_SHARE, get_share, methods=["GET"]),
            *(
                [
                    Route(PATH_UNWRAP_KEYS, put_unwrap_key, methods=["PUT"]),
                    Route(PATH_UNWRAP_KEYS, get_unwrap_keys, methods=["GET"]),
                    Route(PATH_UNWRAP, post_unwrap, methods=["POST"]),
                ]
                if unwrap is not None
                else []
            ),
        ],
        exception_handlers={HTTPException: unknown},
    )
    gated: ASGIApp = SliceFastPath(app, get_slice) if fast_path else app
    if require_client_cn is not None:
        gated = ClientCertGate(gated, require_client_cn)
    if traffic_dir is not None:
        gated = TrafficRecorder(gated, traffic_dir, node=service.settings.index)
    return AccessLog(gated, node=service.settings.index)


# --- slice reads straight to their endpoint -------------------------------------------------

_OBJECTS_PREFIX: Final = PATH_OBJECTS + "/"
_SLICE_SUFFIX: Final = PATH_SLICE.rsplit("}", 1)[1]


class SliceFastPath:
    """``GET /v1/objects/{object_id}/slice``, the request every retrieval sends to m nodes,
    goes straight to its (guarded) endpoint, past Starlette's router and its two exception
    middlewares; every other request goes to ``app``.  The endpoint sees the same request
    (path parameter included) and answers, errors and all, as it does behind the router."""

    def __init__(self, app: ASGIApp, endpoint: Endpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            object_id = _slice_object_id(scope["path"])
            if object_id is not None:
                scope["path_params"] = {"object_id": object_id}
                response = await self.endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _slice_object_id(path: str) -> str | None:
    """The ``{object_id}`` of a slice path (as the router would match it), else None."""
    if not (path.startswith(_OBJECTS_PREFIX) and path.endswith(_SLICE_SUFFIX)):
        return None
    object_id = path[len(_OBJECTS_PREFIX) : -len(_SLICE_SUFFIX)]
    return object_id if object_id and "/" not in object_id else None


# --- test-only: every body the gateway sends and receives, written to files -----------------


class TrafficRecorder:
    """Tests only (``evault node`` enables it only with ``EVAULT_ALLOW_FAULTS=1``): each
    request's body goes to ``DIR/node-<i>-<seq>.request`` and its answer's body to
    ``DIR/node-<i>-<seq>.response``, byte for byte, so a test can search everything that
    crossed the wire (in plaintext, after TLS) for bytes that must never be there."""

    def __init__(self, app: ASGIApp, directory: Path, *, node: int) -> None:
        self.app = app
        self.directory = directory
        self.node = node
        self._seq = itertools.count()
        directory.mkdir(parents=True, exist_ok=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stem = self.directory / f"node-{self.node}-{next(self._seq):06d}"
        request_file = stem.with_suffix(".request").open("ab")
        response_file = stem.with_suffix(".response").open("ab")
        request_file.write(f"{scope.get('method')} {scope.get('path')}\n".encode())

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                request_file.write(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                response_file.write(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, recording_receive, recording_send)
        finally:
            request_file.close()
            response_file.close()


# --- the client-certificate gate -----------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _common_names(pem: str) -> tuple[str, ...]:
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    return tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))


def client_common_names(scope: Scope) -> tuple[str, ...] | None:
    """The CNs of the TLS client certificate of this request, or None if there is none."""
    tls = (scope.get("extensions") or {}).get("tls")
    if not isinstance(tls, dict):
        return None
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    try:
        return _common_names(str(chain[0]))
    except ValueError:
        return None


class ClientCertGate:
    """401 unless the client certificate's subject CN is exactly ``common_name``."""

    def __init__(self, app: ASGIApp, common_name: str) -> None:
        self.app = app
        self.common_name = common_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names = client_common_names(scope)
        if names != (self.common_name,):
            shown = "no client certificate" if names is None else f"CN {', '.join(names)}"
            response = error_response(
                "unauthenticated",
                f"this node serves only the cluster gateway ({shown} presented)",
                scope,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


# --- one log line per request --------------------------------------------------------------


class AccessLog:
    def __init__(self, app: ASGIApp, *, node: int) -> None:
        self.app = app
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        started = time.monotonic()
        counts = {"in": 0, "out": 0, "status": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counts["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                counts["status"] = message["status"]
            elif message["type"] == "http.response.body":
                counts["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            _log_request(scope, self.node, counts, time.monotonic() - started)


def _log_request(scope: Scope, node: int, counts: dict[str, int], elapsed_s: float) -> None:
    client: Any = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "-"
    query = scope.get("query_string", b"").decode("latin-1")
    path = scope.get("path", "") + (f"?{query}" if query else "")
    code = scope.get("state", {}).get(_STATE_ERROR)
    log.info(
        "node-%d %s %s %s %d%s in=%d out=%d %.3fs",
        node,
        peer,
        scope.get("method", "-"),
        path,
        counts["status"],
        f" {code}" if code else "",
        counts["in"],
        counts["out"],
        elapsed_s,
    )
