"""The web UI: the paper's minimal client (§2.3.1, DESIGN §9), served by the gateway.

Plain server-rendered pages (Jinja2, no framework) and one small script for the in-browser
verification with WebCrypto.  Like the JSON API beside it, it is a thin adapter: the catalog
and the vault service do the work.

Routes (none of them in the OpenAPI document, which describes ``/api/v1`` only)::

    GET  /                               landing page: what this vault is, its parameters
    GET  /register   POST /register      registration; shows the vault public key
    GET  /login      POST /login         log in: sets the session cookie
    GET  /logout     POST /logout        log out: revokes the session token
    GET  /documents                      the user's documents and versions, the upload form
    POST /documents                      upload (multipart/form-data, streamed) → result page
    GET  /documents/{name}/download      the bytes, as an attachment          (?version=N)
    GET  /documents/{name}/page          retrieval page, the bytes in base64  (?version=N)
    GET  /documents/{name}/receipt       receipt page, in-browser verification (?version=N)
    GET  /verify                         verify a pasted receipt with a pasted key
    GET  /vault-public.pem               the vault public key as a file
    GET  /static/...                     style sheet and script (served here, no CDN)

The machine-readable contract
    The minimal client's tools (``evault extractkey``, ``evault verify --page``, ``evault
    extractfile``; ``evault.client.pages``) read these elements, each present at most once on
    a page.  Keep the ids stable; ``tests/unit/test_web.py`` parses the pages with the client's
    own parser.

    =====================  ==========================  ====================================
    page                   element                     content
    =====================  ==========================  ====================================
    /register              ``pre#vault-public-key``    the vault public key, PEM (SPKI)
    deposit result,        ``pre#receipt-statement``   base64 of the exact signed bytes
    receipt page           ``pre#receipt-signature``   base64 of the RSASSA-PSS signature
                           ``span#receipt-sha256``     hex SHA-256 of the document
    retrieval page         ``pre#document-base64``     the document's bytes, base64
                           ``span#document-name``      its name
                           ``span#document-version``   its version
    receipt page, /verify  ``#verify-result``          ``data-result`` valid | invalid
                           ``#file-result``            ``data-result`` match | mismatch
    =====================  ==========================  ====================================

Sessions and forms
    Logging in issues a catalog token of kind ``"session"``; the browser keeps it in the
    cookie ``__Host-evault-session`` (HttpOnly, Secure, SameSite=Lax, Path=/; the ``__Host-``
    prefix makes the browser refuse it from any other origin, even a sibling sub-domain).
    Every POST form carries a CSRF token checked against the ``__Host-evault-csrf`` cookie
    (double submit; the cookie is HttpOnly, SameSite=Strict, and the page gets the value from
    the server) and, when the browser sends one, an ``Origin`` that must be this site's own.

Uploads
    The upload form puts its text fields before the file, so the body is parsed as it
    arrives: the CSRF token and the name are checked first, then the file's bytes flow into
    ``VaultService.deposit`` chunk by chunk, counted against ``max_document_bytes`` and the
    idle time-out; nothing is buffered whole, nothing is spooled to disk.

Errors
    Web routes answer errors with readable pages (the status from the gateway's one table,
    ``errors_http``), never JSON; a session that ended sends the browser to the log-in page.
    ``install`` also turns 404 and 405 for paths outside ``/api/`` into pages when the client
    asks for HTML (a browser does; API clients keep their JSON).

Trust
    The receipt page verifies in the browser with the key the user chooses: the one pinned in
    this browser at registration, one pasted from elsewhere, or (by default) the one this
    gateway serves.  The check's script is served by the gateway too; a user who trusts no
    part of the gateway uses ``evault verify`` or ``openssl`` instead.  The page says so.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, cast
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.staticfiles import StaticFiles

from evault import __version__
from evault.catalog.records import DocumentSummary, VersionRecord
from evault.errors import (
    AuthFailed,
    BadName,
    BadPassword,
    BodyTimeout,
    DocumentTooLarge,
    EvaultError,
    FormatError,
    NotFound,
    PublicRequestError,
    UserExists,
)
from evault.gateway.api import (
    API_PREFIX,
    MAX_VERSION,
    NAME_CONVERTOR,
    SCOPE_USER_KEY,
    ApiSettings,
    check_api_document_name,
    settings,
)
from evault.gateway.download import close_retrieval, document_response, first_chunk
from evault.gateway.errors_http import INTERNAL_MESSAGE, status_for
from evault.protocol.statement import Statement

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger("evault.gateway.web")

SESSION_COOKIE: Final = "__Host-evault-session"
CSRF_COOKIE: Final = "__Host-evault-csrf"
CSRF_FIELD: Final = "csrf_token"
#: A browser session lasts a working day; the token dies server-side after it.
SESSION_TTL_S: Final = 8 * 3600
#: The upload form's path; its POST body is streamed (``app._JsonBodyCap`` lets it through).
UPLOAD_PATH: Final = "/documents"
#: The retrieval page embeds the document in base64 (4/3 of its size) in the HTML.
MAX_PAGE_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
#: Versions listed per document on /documents (the newest ones).
MAX_LISTED_VERSIONS: Final = 50
#: Text fields of the upload form (CSRF token, name): a few hundred bytes at most.
MAX_FORM_FIELD_BYTES: Final = 4096
MAX_FORM_FIELDS: Final = 8
#: Multipart framing around the file (boundaries, part headers, small fields).
FORM_OVERHEAD_BYTES: Final = 64 * 1024

TEMPLATE_DIR: Final = Path(__file__).with_name("templates")
STATIC_DIR: Final = Path(__file__).with_name("static")

#: Sent with every page.  No inline script or style anywhere, so the policy can forbid them.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages carry receipts, documents and CSRF tokens: never from a cache.
    "Cache-Control": "no-store",
}

_LOGIN_MESSAGES: Final = {
    "registered": "Your account is ready. Log in with your user id and password.",
    "logged-out": "You are logged out.",
    "expired": "Your session has ended; please log in again.",
}


# --- templates ------------------------------------------------------------------------------


def human_size(size: int) -> str:
    """``1.5 MiB``-style size for people; exact byte counts are shown beside it where needed."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def url_path(name: str) -> str:
    """A document name as it goes into a URL path: '/' kept, everything else escaped."""
    return quote(name, safe="/")


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = human_size
    env.filters["urlpath"] = url_path
    env.filters["utc"] = _utc
    return env


# --- small helpers ----------------------------------------------------------------------------


def _new_csrf() -> str:
    return secrets.token_urlsafe(32)


def _csrf_of(request: Request) -> tuple[str, bool]:
    """The request's CSRF token (from its cookie) or a fresh one; True when fresh."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if 32 <= len(current) <= 128 and current.isascii():
        return current, False
    return _new_csrf(), True


def _set_csrf_cookie(response: Response, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, path="/", secure=True, httponly=True, samesite="strict")


def _page(
    request: Request,
    template: str,
    *,
    status: int = 200,
    user: str | None = None,
    csrf: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` with the common context and the security headers.  ``csrf`` forces
    a new CSRF token (after log-in, or after a refused form)."""
    s = settings(request)
    token, fresh = (csrf, True) if csrf is not None else _csrf_of(request)
    html = (
        _environment()
        .get_template(template)
        .render(
            vault=s.info,
            user=user,
            csrf_token=token,
            csrf_field=CSRF_FIELD,
            asset_version=__version__,
            max_document_bytes=s.max_document_bytes,
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    if fresh:
        _set_csrf_cookie(response, token)
    return response


def _error_page(
    request: Request,
    status: int,
    title: str,
    message: str,
    *,
    user: str | None = None,
) -> HTMLResponse:
    return _page(request, "error.html", status=status, user=user, title=title, message=message)


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


def _to_login(reason: str = "expired") -> RedirectResponse:
    response = _see_other(f"/login?m={reason}")
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return response


_TITLES: Final = {
    400: "Bad request",
    401: "Not logged in",
    403: "Refused",
    404: "Not found",
    408: "Upload stalled",
    409: "Conflict",
    413: "Too large",
    502: "The storage nodes answered wrongly",
    503: "Not enough storage nodes available",
    504: "A storage node timed out",
}


def _evault_error_page(request: Request, exc: EvaultError, user: str | None) -> HTMLResponse:
    status = status_for(exc)
    if status >= 500 and status not in (502, 503, 504):
        log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        return _error_page(request, 500, "Something went wrong", INTERNAL_MESSAGE, user=user)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    message = str(exc)
    return _error_page(request, status, _TITLES.get(status, "Error"), message, user=user)


Handler = Callable[[Request], Awaitable[Response]]


def _html_errors(handler: Handler) -> Handler:
    """Every failure of a web route becomes a readable page, never JSON or a traceback."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except EvaultError as exc:
            return _evault_error_page(request, exc, request.scope.get(SCOPE_USER_KEY))
        except ClientDisconnect:
            raise  # nobody is left to read a page; the app's guard logs it
        except StarletteHTTPException as exc:
            # Starlette's own refusals, e.g. a form it cannot parse.
            if exc.status_code >= 500:
                raise
            return _error_page(
                request,
                exc.status_code,
                _TITLES.get(exc.status_code, "Error"),
                _sentence(str(exc.detail)),
                user=request.scope.get(SCOPE_USER_KEY),
            )
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.url.path)
            return _error_page(request, 500, "Something went wrong", INTERNAL_MESSAGE)

    return wrapped


class _SessionCatalog(Protocol):
    """The catalog as the web UI uses it: ``resolve_token`` restricted to session tokens
    (the API's ``CatalogPort`` does not name the ``kind`` argument)."""

    def resolve_token(self, token: str, *, kind: str | None = None) -> str: ...


async def _session_user(request: Request) -> str | None:
    """The logged-in user, or None (no cookie, or a token that is unknown, expired, revoked,
    or not a session token)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    catalog = cast(_SessionCatalog, settings(request).catalog)
    try:
        user = await run_in_threadpool(catalog.resolve_token, token, kind="session")
    except AuthFailed:
        return None
    request.scope[SCOPE_USER_KEY] = user
    return user


def _origin_ok(request: Request) -> bool:
    """A browser names the page a form came from in ``Origin``; it must be this site."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin == f"{request.url.scheme}://{host}"


def _csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not submitted or not _origin_ok(request):
        return False
    return hmac.compare_digest(cookie.encode("utf-8"), submitted.encode("utf-8"))


def _csrf_refused(request: Request, user: str | None = None) -> HTMLResponse:
    return _page(
        request,
        "error.html",
        status=403,
        user=user,
        csrf=_new_csrf(),
        title="Form refused",
        message="This form was stale or did not come from this site. Go back, reload the "
        "page and try again.",
    )


def _version_param(request: Request) -> int | None:
    raw = request.query_params.get("version")
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_VERSION:
        raise PublicRequestError(f"version {raw!r} is not a whole number from 1 to {MAX_VERSION}")
    return int(raw)


def _name_param(request: Request) -> str:
    name = request.path_params["name"]
    if not isinstance(name, str):  # pragma: no cover - the convertor yields str
        raise PublicRequestError("document name missing")
    return check_api_document_name(name)


async def _text_form(request: Request) -> dict[str, str]:
    """A small url-encoded form (its size is capped by the app before it gets here)."""
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    try:
        return {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
    finally:
        await form.close()


def attachment_disposition(name: str) -> str:
    """``Content-Disposition`` for a download named after the document's last segment:
    an ASCII fallback, and the exact name in RFC 6266 / RFC 8187 form."""
    filename = name.rsplit("/", 1)[-1]
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


# --- the router -------------------------------------------------------------------------------

router = APIRouter(include_in_schema=False)


def _get(path: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        wrapped = _html_errors(handler)
        router.add_api_route(path, wrapped, methods=["GET"], response_class=HTMLResponse)
        return wrapped

    return register


def _post(path: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        wrapped = _html_errors(handler)
        router.add_api_route(path, wrapped, methods=["POST"], response_class=HTMLResponse)
        return wrapped

    return register


@_get("/")
async def landing(request: Request) -> Response:
    return _page(request, "index.html", user=await _session_user(request))


@_get("/vault-public.pem")
async def vault_public_key(request: Request) -> Response:
    return Response(
        settings(request).info.public_key_pem,
        media_type="application/x-pem-file",
        headers={
            "Content-Disposition": 'attachment; filename="vault-public.pem"',
            "X-Content-Type-Options": "nosniff",
        },
    )


# -- registration, log-in, log-out ----------------------------------------------------------


@_get("/register")
async def register_form(request: Request) -> Response:
    return _page(request, "register.html", user=await _session_user(request), form={}, error=None)


@_post("/register")
async def register(request: Request) -> Response:
    fields = await _text_form(request)
    if not _csrf_ok(request, fields.get(CSRF_FIELD)):
        return _csrf_refused(request)
    kept = {k: fields.get(k, "") for k in ("user_id", "name", "contact")}
    password = fields.get("password", "")
    error: str | None = None
    status = 400
    if password != fields.get("password_repeat", ""):
        error = "The two passwords differ; type the same password twice."
    else:
        try:
            await run_in_threadpool(
                settings(request).catalog.create_user,
                kept["user_id"],
                password,
                kept["name"],
                kept["contact"],
            )
        except (BadName, BadPassword, UserExists) as exc:
            error = _sentence(str(exc))
            status = status_for(exc)
    if error is not None:
        return _page(request, "register.html", status=status, form=kept, error=error)
    return _see_other("/login?m=registered")


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


@_get("/login")
async def login_form(request: Request) -> Response:
    notice = _LOGIN_MESSAGES.get(request.query_params.get("m", ""))
    return _page(
        request,
        "login.html",
        user=await _session_user(request),
        notice=notice,
        error=None,
        user_id="",
    )


@_post("/login")
async def login(request: Request) -> Response:
    fields = await _text_form(request)
    if not _csrf_ok(request, fields.get(CSRF_FIELD)):
        return _csrf_refused(request)
    s = settings(request)
    user_id = fields.get("user_id", "")
    try:
        user = await run_in_threadpool(s.catalog.authenticate, user_id, fields.get("password", ""))
    except AuthFailed:
        return _page(
            request,
            "login.html",
            status=401,
            notice=None,
            error="Wrong user id or password.",
            user_id=user_id,
        )
    return await _new_session(s, user, "/documents")


async def _new_session(s: ApiSettings, user: str, location: str) -> Response:
    """A redirect to ``location`` that starts a new browser session for ``user``."""
    token = await run_in_threadpool(s.catalog.issue_token, user, SESSION_TTL_S, "session")
    response = _see_other(location)
    response.set_cookie(SESSION_COOKIE, token, path="/", secure=True, httponly=True, samesite="lax")
    # A fresh CSRF token for the new session: one planted before it is useless.
    _set_csrf_cookie(response, _new_csrf())
    return response


@_get("/logout")
async def logout_form(request: Request) -> Response:
    user = await _session_user(request)
    if user is None:
        return _see_other("/login")
    return _page(request, "logout.html", user=user)


@_post("/logout")
async def logout(request: Request) -> Response:
    fields = await _text_form(request)
    if not _csrf_ok(request, fields.get(CSRF_FIELD)):
        return _csrf_refused(request, await _session_user(request))
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await run_in_threadpool(settings(request).catalog.revoke_token, token)
    response = _to_login("logged-out")
    _set_csrf_cookie(response, _new_csrf())
    return response


# -- password --------------------------------------------------------------------------------

_PASSWORD_MESSAGES: Final = {
    "changed": "Your password is changed. Every other session and API token of yours has ended.",
}


@_get("/password")
async def password_form(request: Request) -> Response:
    user = await _session_user(request)
    if user is None:
        return _to_login()
    notice = _PASSWORD_MESSAGES.get(request.query_params.get("m", ""))
    return _page(request, "password.html", user=user, notice=notice, error=None)


@_post("/password")
async def change_password(request: Request) -> Response:
    """The current password too, not the session alone (as ``PUT /api/v1/password``); every
    token of the user ends, and this browser gets a new session."""
    user = await _session_user(request)
    if user is None:
        return _to_login()
    fields = await _text_form(request)
    if not _csrf_ok(request, fields.get(CSRF_FIELD)):
        return _csrf_refused(request, user)
    s = settings(request)
    new_password = fields.get("new_password", "")
    error: str | None = None
    status = 400
    if new_password != fields.get("new_password_repeat", ""):
        error = "The two new passwords differ; type the same password twice."
    else:
        try:
            await run_in_threadpool(s.catalog.authenticate, user, fields.get("password", ""))
            await run_in_threadpool(s.catalog.set_password, user, new_password)
        except AuthFailed:
            error, status = "The current password is wrong.", 401
        except BadPassword as exc:
            error = _sentence(str(exc))
    if error is not None:
        return _page(request, "password.html", status=status, user=user, notice=None, error=error)
    return await _new_session(s, user, "/password?m=changed")


# -- documents -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedDocument:
    summary: DocumentSummary
    versions: list[VersionRecord]  # newest first, at most MAX_LISTED_VERSIONS
    hidden: int  # older versions not listed


def _listing(s: ApiSettings, owner: str) -> list[ListedDocument]:
    out = []
    for summary in s.catalog.list_documents(owner):
        try:
            versions = s.catalog.list_versions(owner, summary.name)
        except NotFound:
            continue  # deleted between the two queries
        newest = list(reversed(versions))
        out.append(
            ListedDocument(
                summary,
                newest[:MAX_LISTED_VERSIONS],
                max(0, len(newest) - MAX_LISTED_VERSIONS),
            )
        )
    return out


@_get("/documents")
async def documents(request: Request) -> Response:
    user = await _session_user(request)
    if user is None:
        return _to_login()
    listed = await run_in_threadpool(_listing, settings(request), user)
    return _page(request, "documents.html", user=user, documents=listed)


@_post(UPLOAD_PATH)
async def upload(request: Request) -> Response:
    user = await _session_user(request)
    if user is None:
        return _to_login()
    s = settings(request)
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and int(declared) > s.max_document_bytes + FORM_OVERHEAD_BYTES
    ):
        raise DocumentTooLarge(s.max_document_bytes, int(declared), declared=True)
    form = _FormStream(request, s.body_idle_timeout_s)
    fields, filename = await form.fields_before_file()
    if not _csrf_ok(request, fields.get(CSRF_FIELD)):
        return _csrf_refused(request, user)
    if filename is None or filename == "":
        raise PublicRequestError("choose a file to upload")
    name = fields.get("name", "").strip() or _basename(filename)
    check_api_document_name(name)
    body = form.file_bytes(s.max_document_bytes)
    try:
        outcome = await s.service.deposit(user, name, body, size=None, sha256=None)
    except Exception:
        if form.error is not None:
            raise form.error from None
        raise
    await form.drain(FORM_OVERHEAD_BYTES)
    return _page(
        request,
        "deposited.html",
        status=201,
        user=user,
        name=name,
        version=outcome.version,
        size=outcome.size,
        sha256=outcome.sha256,
        statement_b64=base64.b64encode(outcome.statement).decode("ascii"),
        signature_b64=base64.b64encode(outcome.signature).decode("ascii"),
        faulty=dict(sorted(outcome.faulty.items())),
        failed=dict(sorted(outcome.failed.items())),
    )


def _basename(filename: str) -> str:
    # Browsers send the bare file name; some older ones sent a whole (Windows) path.
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


_DOCUMENT: Final = f"/documents/{{name:{NAME_CONVERTOR}}}"


@_get(f"{_DOCUMENT}/download")
async def download(request: Request) -> Response:
    user = await _session_user(request)
    if user is None:
        return _to_login()
    name = _name_param(request)
    version = _version_param(request)
    retrieval = await settings(request).service.retrieve(user, name, version)
    # The first verified chunk before any header: a failure up to here is still a page.
    first, chunks = await first_chunk(retrieval)
    record = retrieval.record
    headers = {
        "Content-Length": str(retrieval.size),
        "Content-Disposition": attachment_disposition(name),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "ETag": f'"{record.sha256.hex()}"',
    }
    return await document_response(retrieval, first, chunks, owner=user, name=name, headers=headers)


@_get(f"{_DOCUMENT}/page")
async def retrieval_page(request: Request) -> Response:
    user = await _session_user(request)
    if user is None:
        return _to_login()
    s = settings(request)
    name = _name_param(request)
    version = _version_param(request)
    record = await run_in_threadpool(s.catalog.get_version, user, name, version)
    if record.size > MAX_PAGE_DOCUMENT_BYTES:
        return _error_page(
            request,
            413,
            "Too large for a page",
            f"Version {record.version} of {name!r} has {record.size} bytes; pages embed "
            f"documents of up to {MAX_PAGE_DOCUMENT_BYTES} bytes. Use the download link "
            "instead.",
            user=user,
        )
    retrieval = await s.service.retrieve(user, name, record.version)
    chunks = aiter(retrieval)
    try:
        content = b"".join([chunk async for chunk in chunks])
    finally:
        await close_retrieval(retrieval, chunks)
    return _page(
        request,
        "retrieved.html",
        user=user,
        record=retrieval.record,
        content_b64=base64.b64encode(content).decode("ascii"),
    )


@dataclass(frozen=True)
class StatementRow:
    label: str
    value: str


_FIELD_LABELS: Final = (
    ("vault", "Vault id"),
    ("owner", "Owner"),
    ("name", "Document name"),
    ("version", "Version"),
    ("size", "Size (bytes)"),
    ("sha256", "SHA-256 of the document"),
    ("fv_hash", "Hash of the fingerprint vector"),
    ("fingerprint_scheme", "Fingerprint scheme"),
    ("n", "Slices written (n)"),
    ("m", "Slices needed (m)"),
    ("codec", "Codec"),
    ("segment_bytes", "Segment size (bytes)"),
    ("encrypted", "Encrypted by the client"),
    ("deposited_at", "Deposited at (UTC)"),
)


def statement_rows(statement: bytes) -> list[StatementRow]:
    """The statement's fields for the receipt page's table, in the spec's order."""
    parsed = Statement.from_bytes(statement).to_json_obj()
    rows = [StatementRow("Statement format", f"{parsed['type']} v{parsed['v']}")]
    for key, label in _FIELD_LABELS:
        value = parsed[key]
        shown = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        rows.append(StatementRow(label, shown))
    return rows


@_get(f"{_DOCUMENT}/receipt")
async def receipt_page(request: Request) -> Response:
    user = await _session_user(request)
    if user is None:
        return _to_login()
    name = _name_param(request)
    version = _version_param(request)
    record = await run_in_threadpool(settings(request).catalog.get_version, user, name, version)
    try:
        rows: list[StatementRow] | None = statement_rows(record.statement)
    except FormatError as exc:
        # Shown, not hidden: the page still offers the bytes for verification.
        log.warning("receipt of %r version %d does not parse: %s", name, record.version, exc)
        rows = None
    return _page(
        request,
        "receipt.html",
        user=user,
        record=record,
        rows=rows,
        statement_b64=base64.b64encode(record.statement).decode("ascii"),
        signature_b64=base64.b64encode(record.signature).decode("ascii"),
    )


@_get("/verify")
async def verify_page(request: Request) -> Response:
    return _page(request, "verify.html", user=await _session_user(request))


# --- streaming multipart ----------------------------------------------------------------------


@dataclass
class _Part:
    field: str
    filename: str | None


class _FormStream:
    """A ``multipart/form-data`` body parsed as it arrives (RFC 7578).

    Events come out in order: ``("part", _Part)``, ``("data", bytes)`` (consecutive pieces
    of one write joined), ``("end_part", None)``, ``("end", None)``.  The body's own failures
    (too large, stalled, malformed) are kept in ``error`` so the handler can report them even
    when the service wraps them.
    """

    def __init__(self, request: Request, idle_timeout_s: float) -> None:
        content_type, options = parse_options_header(request.headers.get("content-type"))
        boundary = options.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            raise PublicRequestError("the upload must be sent as multipart/form-data")
        self._stream = request.stream()
        self._idle_s = idle_timeout_s
        self._events: deque[tuple[str, Any]] = deque()
        self._data: list[bytes] = []
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._body_done = False
        self._parts = 0
        self.received = 0
        self.error: EvaultError | None = None
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda d, a, b: self._header_name.extend(d[a:b]),
            "on_header_value": lambda d, a, b: self._header_value.extend(d[a:b]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": lambda d, a, b: self._data.append(d[a:b]),
            "on_part_end": lambda: self._emit("end_part", None),
            "on_end": lambda: self._emit("end", None),
        }
        self._parser = MultipartParser(boundary, callbacks)

    # Parser callbacks (synchronous, called from inside ``write``).

    def _flush_data(self) -> None:
        if self._data:
            self._events.append(("data", b"".join(self._data)))
            self._data.clear()

    def _emit(self, kind: str, payload: Any) -> None:
        self._flush_data()
        self._events.append((kind, payload))

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._parts += 1

    def _on_header_end(self) -> None:
        key = self._header_name.decode("latin-1").lower()
        self._headers[key] = self._header_value.decode("utf-8", errors="replace")
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition"))
        field = options.get(b"name")
        if disposition != b"form-data" or field is None:
            raise MultipartParseError("a form part has no Content-Disposition: form-data name")
        filename = options.get(b"filename")
        self._emit(
            "part",
            _Part(
                field.decode("utf-8", errors="replace"),
                None if filename is None else filename.decode("utf-8", errors="replace"),
            ),
        )

    # Reading.

    def _fail(self, error: EvaultError) -> EvaultError:
        self.error = error
        return error

    async def _next(self) -> tuple[str, Any]:
        while not self._events:
            if self._body_done:
                raise self._fail(PublicRequestError("the upload ended before its form did"))
            try:
                async with asyncio.timeout(self._idle_s):
                    chunk = await anext(self._stream)
            except StopAsyncIteration:
                self._body_done = True
                chunk = b""
            except TimeoutError:
                raise self._fail(BodyTimeout(self._idle_s, self.received)) from None
            self.received += len(chunk)
            try:
                if chunk:
                    self._parser.write(chunk)
                else:
                    self._parser.finalize()
            except MultipartParseError as exc:
                raise self._fail(
                    PublicRequestError(f"the upload form is malformed: {exc}")
                ) from None
            if self._parts > MAX_FORM_FIELDS:
                raise self._fail(PublicRequestError("the upload form has too many fields"))
            self._flush_data()
        return self._events.popleft()

    async def fields_before_file(self) -> tuple[dict[str, str], str | None]:
        """Read the text fields up to the file part; return them and the file's name (None
        when the form has no file part at all)."""
        fields: dict[str, str] = {}
        while True:
            kind, payload = await self._next()
            if kind == "end":
                return fields, None
            if kind != "part":
                raise self._fail(PublicRequestError("the upload form is malformed"))
            part = cast(_Part, payload)
            if part.filename is not None:
                if part.field != "file":
                    raise self._fail(PublicRequestError(f"unexpected file field {part.field!r}"))
                return fields, part.filename
            fields[part.field] = await self._text_value(part.field)

    async def _text_value(self, field: str) -> str:
        value = bytearray()
        while True:
            kind, payload = await self._next()
            if kind == "end_part":
                break
            if kind != "data":
                raise self._fail(PublicRequestError("the upload form is malformed"))
            value += payload
            if len(value) > MAX_FORM_FIELD_BYTES:
                raise self._fail(PublicRequestError(f"the form field {field!r} is too long"))
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(
                PublicRequestError(f"the form field {field!r} is not UTF-8 text")
            ) from None

    async def file_bytes(self, limit_bytes: int) -> AsyncIterator[bytes]:
        """The file part's bytes, counted against ``limit_bytes``.  It ends only at the part's
        closing boundary: a body cut short fails instead of depositing a truncated file."""
        received = 0
        while True:
            kind, payload = await self._next()
            if kind == "end_part":
                return
            if kind != "data":
                raise self._fail(PublicRequestError("the upload form is malformed"))
            received += len(payload)
            if received > limit_bytes:
                raise self._fail(DocumentTooLarge(limit_bytes, received, declared=False))
            if payload:
                yield payload

    async def drain(self, limit_bytes: int) -> None:
        """Read what follows the file (the closing boundary, perhaps fields a client put
        after it, which are ignored) so the connection can serve the next request; give up
        quietly past ``limit_bytes``."""
        start = self.received
        try:
            while self.received - start <= limit_bytes:
                kind, _payload = await self._next()
                if kind == "end":
                    return
        except EvaultError:
            return


# --- mounting into the gateway app ------------------------------------------------------------


def _wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(API_PREFIX + "/") or path == API_PREFIX or path == "/openapi.json":
        return False
    return "text/html" in request.headers.get("accept", "")


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def install(app: FastAPI) -> None:
    """Add the web UI to the gateway ``app``: the pages, the static files, and HTML pages for
    unknown paths and wrong methods asked for by a browser.  Call it after the app's own
    exception handlers are registered (it wraps the one for HTTP errors)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    fallback = cast(ExceptionHandler | None, app.exception_handlers.get(StarletteHTTPException))

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        if (
            isinstance(exc, StarletteHTTPException)
            and exc.status_code in (404, 405)
            and _wants_html(request)
        ):
            if exc.status_code == 404:
                return _error_page(
                    request,
                    404,
                    "Page not found",
                    f"There is no page at {request.url.path}.",
                )
            return _error_page(
                request,
                405,
                "Not allowed",
                f"{request.method} is not allowed on {request.url.path}.",
            )
        if fallback is None:  # pragma: no cover - FastAPI always has one
            raise exc
        return await fallback(request, exc)

    app.add_exception_handler(StarletteHTTPException, on_http_exception)
