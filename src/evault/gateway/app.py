"""The gateway's ASGI application: the public API router plus the error discipline around it.

Layers, outermost first::

    _Guard            access log (no secrets), and the last resort: an unexpected exception
                      before the response started becomes a 500 JSON error (traceback logged,
                      not sent); after it started, the exception propagates and the server
                      aborts the connection, so a broken download never looks complete
    _JsonBodyCap      JSON request bodies are read whole by FastAPI, so they are capped first
                      (413 too_large, 408 body_timeout); document uploads stream past it
    _RetrievalFastPath  plain retrievals (GET a document with a bearer token) run the route's
                      code without FastAPI's routing and dependency machinery
    FastAPI           exception handlers: EvaultError via the table in ``errors_http``;
                      validation errors, unknown paths and wrong methods in the same JSON shape
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evault import __version__
from evault.errors import AuthFailed, BodyTimeout, EvaultError
from evault.gateway import web
from evault.gateway.api import (
    API_PREFIX,
    MAX_JSON_BODY_BYTES,
    MAX_VERSION,
    RESERVED_LAST_SEGMENTS,
    SCOPE_USER_KEY,
    ApiSettings,
    app_settings,
    authenticate,
    retrieval_response,
    router,
)
from evault.gateway.errors_http import (
    HTTP_LEVEL_CODES,
    INTERNAL_MESSAGE,
    error_body,
    evault_error_body,
    status_for,
)

log = logging.getLogger("evault.gateway")
access_log = logging.getLogger("evault.gateway.access")

WWW_AUTHENTICATE: Final = 'Bearer realm="evault"'
_DOCUMENTS_PREFIX: Final = f"{API_PREFIX}/documents/"
_VERSION_QUERY: Final = b"version="

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    settings: ApiSettings, *, lifespan: Lifespan | None = None, fast_path: bool = True
) -> FastAPI:
    """The gateway application serving ``settings``; ``lifespan`` runs around serving (the
    process entry point uses it to clean up interrupted deposits and close pools).
    ``fast_path=False`` leaves every retrieval to FastAPI (tests compare the two)."""
    if not isinstance(settings, ApiSettings):
        raise TypeError(f"settings: expected ApiSettings, got {type(settings).__name__}")
    if settings.max_document_bytes < 0:
        raise ValueError("settings.max_document_bytes: must be >= 0")
    app = FastAPI(
        title="evault gateway",
        version=__version__,
        summary="Public HTTPS API of an evault: deposit documents, get threshold-signed "
        "receipts, retrieve verified bytes.",
        openapi_url="/openapi.json",
        # The interactive docs pages load scripts from a CDN; the spec is in docs/spec.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.evault = settings
    app.include_router(router)
    app.add_exception_handler(EvaultError, _on_evault_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    web.install(app)  # web UI: pages, static files, HTML 404s for browsers (gateway/web.py)
    # Added last = outermost.
    if fast_path:
        app.add_middleware(_RetrievalFastPath)
    app.add_middleware(
        _JsonBodyCap, limit_bytes=MAX_JSON_BODY_BYTES, idle_timeout_s=settings.body_idle_timeout_s
    )
    app.add_middleware(_Guard)
    return app


# --- exception handlers -----------------------------------------------------------------------


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


async def _on_evault_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, EvaultError):  # pragma: no cover - registered for EvaultError only
        raise exc
    return _evault_error_response(
        exc, request.method, request.url.path, token_sent="authorization" in request.headers
    )


def _evault_error_response(
    exc: EvaultError, method: str, path: str, *, token_sent: bool
) -> JSONResponse:
    status = status_for(exc)
    if status == 500:
        log.error("%s %s failed: %s", method, path, exc, exc_info=exc)
    elif status >= 500:
        log.warning("%s %s: %s", method, path, exc)
    headers = None
    if isinstance(exc, AuthFailed) or status == 401:
        challenge = WWW_AUTHENTICATE
        if token_sent:
            challenge += ', error="invalid_token"'  # RFC 6750 §3.1
        headers = {"WWW-Authenticate": challenge}
    return _json(status, evault_error_body(exc, status), headers)


def _location(loc: Any) -> str:
    parts = [str(p) for p in loc] if isinstance(loc, list | tuple) else [str(loc)]
    return ".".join(parts)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover
        raise exc
    problems = list(exc.errors())
    if any(p.get("type") == "json_invalid" for p in problems):
        code = "malformed_json"
        message = "the request body is not valid JSON"
        details: dict[str, Any] = {}
    else:
        code = "invalid_request"
        # Never echo "input": it may be a password.
        listed = [
            {
                "loc": _location(p.get("loc", ())),
                "msg": str(p.get("msg", "")),
                "type": p.get("type"),
            }
            for p in problems
        ]
        first = listed[0] if listed else {"loc": "request", "msg": "is invalid"}
        message = f"{first['loc']}: {first['msg']}"
        if len(listed) > 1:
            message += f" (and {len(listed) - 1} more problem{'s' if len(listed) > 2 else ''})"
        details = {"errors": listed}
    return _json(HTTP_LEVEL_CODES[code], error_body(code, message, details))


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
        raise exc
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        return _json(
            404, error_body("unknown_path", f"no such path: {request.url.path}"), headers or None
        )
    if exc.status_code == 405:
        return _json(
            405,
            error_body(
                "method_not_allowed", f"{request.method} is not allowed on {request.url.path}"
            ),
            headers or None,
        )
    if exc.status_code >= 500:
        return _json(500, error_body("internal_error", INTERNAL_MESSAGE))
    # What else Starlette/FastAPI raise is about the request's framing (an unreadable body).
    detail = exc.detail if isinstance(exc.detail, str) else "the request could not be read"
    return _json(400, error_body("bad_request", detail.rstrip(".")), headers or None)


# --- middleware -------------------------------------------------------------------------------


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})


class _Guard:
    """Access log and last-resort error handling (module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        status = 0
        sent_bytes = 0
        outcome = "ok"
        t0 = time.monotonic()

        async def watching_send(message: Message) -> None:
            nonlocal started, status, sent_bytes
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except ClientDisconnect:
            # Nobody is left to answer; not an error of ours.
            outcome = "client disconnected"
            if started:
                raise
        except Exception:
            if started:
                outcome = "aborted"
                raise
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            status = 500
            await _send_json(send, 500, error_body("internal_error", INTERNAL_MESSAGE))
        finally:
            _log_access(scope, status, sent_bytes, time.monotonic() - t0, outcome)


def _log_access(scope: Scope, status: int, sent_bytes: int, elapsed_s: float, outcome: str) -> None:
    """One line per request.  Headers are never logged (they carry tokens), nor bodies
    (passwords); secrets never travel in URLs, so path and query are safe to show."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "-"
    query = scope.get("query_string", b"").decode("latin-1")
    target = scope.get("path", "") + (f"?{query}" if query else "")
    access_log.info(
        '%s %s "%s %s" %d %d %.1fms%s',
        peer,
        scope.get(SCOPE_USER_KEY, "-"),
        scope.get("method", "-"),
        target,
        status,
        sent_bytes,
        elapsed_s * 1000,
        "" if outcome == "ok" else f" {outcome}",
    )


class _RetrievalFastPath:
    """``GET /api/v1/documents/{name}`` with a bearer token and at most ``?version=N``: the
    request a busy vault serves most, answered here with the route's own code
    (``api.authenticate``, ``api.retrieval_response``) and error handler, but without
    FastAPI's routing, dependency solving and parameter validation, which took about a sixth
    of the gateway's CPU on a small retrieval.  A request in any other form (another query,
    no plain bearer header, a reserved last segment, an empty name) goes on to FastAPI, which
    then answers it, errors included; tests/unit/test_api_fast_path.py checks that both give
    the same answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        plain = _plain_retrieval(scope) if scope["type"] == "http" else None
        if plain is None:
            await self.app(scope, receive, send)
            return
        name, version, token = plain
        s = app_settings(scope["app"])
        response: Response
        try:
            caller = await authenticate(s, token, scope)
            response = await retrieval_response(s, caller, name, version)
        except EvaultError as exc:
            response = _evault_error_response(exc, "GET", scope["path"], token_sent=True)
        await response(scope, receive, send)


def _plain_retrieval(scope: Scope) -> tuple[str, int | None, str] | None:
    """(name, version, token) of a retrieval in the fast path's plain form, else None."""
    if scope["method"] != "GET":
        return None
    path: str = scope["path"]
    if not path.startswith(_DOCUMENTS_PREFIX):
        return None
    name = path[len(_DOCUMENTS_PREFIX) :]
    if not name or name.rsplit("/", 1)[-1] in RESERVED_LAST_SEGMENTS:
        return None  # sub-resources (receipt, versions) and the errors FastAPI words
    query: bytes = scope["query_string"]
    version: int | None = None
    if query:
        if not query.startswith(_VERSION_QUERY):
            return None
        digits = query[len(_VERSION_QUERY) :]
        if (
            not (digits.isascii() and digits.isdigit())
            or digits.startswith(b"0")
            or len(digits) > len(str(MAX_VERSION))
            or int(digits) > MAX_VERSION
        ):
            return None
        version = int(digits)
    token: str | None = None
    for key, value in scope["headers"]:
        if key == b"authorization":
            if token is not None:
                return None  # two of them: let FastAPI decide which counts
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() != b"bearer" or not credentials.isascii():
                return None
            token = credentials.decode("ascii").strip()
    if not token:
        return None
    return name, version, token


class _JsonBodyCap:
    """Read small request bodies whole, up to ``limit_bytes``, before the app sees them;
    refuse bigger ones with 413, and bodies that stall for ``idle_timeout_s`` with 408.
    Document uploads (PUT under /documents/) are streamed by their handler with their own
    limit, so they pass through untouched."""

    def __init__(self, app: ASGIApp, limit_bytes: int, idle_timeout_s: float) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") not in ("POST", "PUT", "PATCH", "DELETE")
            or (
                scope.get("method") == "PUT" and scope.get("path", "").startswith(_DOCUMENTS_PREFIX)
            )
            # The web UI's upload form streams its multipart body too (gateway/web.py).
            or (scope.get("method") == "POST" and scope.get("path") == web.UPLOAD_PATH)
        ):
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.isdigit() and int(value) > self.limit_bytes:
                await self._too_large(send, int(value))
                return
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    message = await receive()
            except TimeoutError:
                timeout = BodyTimeout(self.idle_timeout_s, total)
                await _send_json(send, 408, evault_error_body(timeout, 408))
                return
            if message["type"] == "http.disconnect":
                return  # nobody to answer
            body = message.get("body", b"")
            total += len(body)
            if total > self.limit_bytes:
                await self._too_large(send, total)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _too_large(self, send: Send, received: int) -> None:
        message = (
            f"the request body has at least {received} bytes, over the limit of "
            f"{self.limit_bytes} bytes for JSON requests"
        )
        await _send_json(send, 413, error_body("too_large", message, {"limit": self.limit_bytes}))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that first hands over the buffered body, then defers to the real one
    (which then reports the disconnect, as the ASGI spec expects)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
