"""The gateway's public HTTPS API, ``/api/v1`` (spec: ``docs/spec/public-api.md``).

A thin adapter: it authenticates the caller, checks the request's shape, and hands the work
to the catalog (users, tokens, listings, receipts) and to the vault service (deposit,
retrieve, delete).  It holds no algorithm of its own.

Threads and the event loop
    The catalog is synchronous (SQLAlchemy Core on a pool of open connections); every call to
    it runs in the thread pool, so a slow query or an Argon2 hash never stalls other requests.
    Bodies are streamed in both directions: a deposit passes the request body to the service
    chunk by chunk, with the size limit and an idle time-out enforced as it flows; a retrieval
    streams what the service rebuilds.

Names with ``/``
    A document name may contain ``/`` (backups mirror paths), so the routes take the name as
    a path and the sub-resources ``/receipt`` and ``/versions`` are matched first.  To keep
    that unambiguous, a name whose last segment is ``receipt`` or ``versions`` is refused
    (``400 bad_name``) on every route: ``GET /api/v1/documents/a/receipt`` is always the
    receipt of ``a``, never the document ``a/receipt``.

Other users' documents
    Every catalog look-up is scoped to the authenticated owner, so another user's document is
    simply not there: ``404 not_found``, the same answer as for a name nobody uses.

Confidentiality (``/keys``, ``/unwrap``; DESIGN §7)
    The gateway relays sealed unwrap-key shares and signed unwrap requests between the client
    and the nodes (``evault.gateway.key_relay``); it can read or forge none of them, and the
    client verifies everything it gets back.  An encrypted deposit is an ordinary deposit with
    ``Evault-Encrypted: 1``: the statement then says ``encrypted: true``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Protocol, TypeVar

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor, register_url_convertor

from evault.catalog import canonical_user_id, validate_document_name
from evault.catalog.records import DocumentSummary, TokenLookup, VersionRecord
from evault.errors import (
    AuthFailed,
    BadName,
    BodyTimeout,
    DocumentTooLarge,
    FormatError,
    PublicRequestError,
)
from evault.gateway.download import document_response, first_chunk
from evault.gateway.key_relay import KeyListOutcome, KeyStoreOutcome, UnwrapOutcome
from evault.protocol.node_api import KeyCertificate

log = logging.getLogger("evault.gateway.api")

API_PREFIX: Final = "/api/v1"
#: Last path segments that name sub-resources of a document, hence never a document's own.
RESERVED_LAST_SEGMENTS: Final = ("receipt", "versions")
DEFAULT_TOKEN_TTL_S: Final = 24 * 3600
#: JSON request bodies are small (a log-in, a registration); bigger ones are refused unread.
MAX_JSON_BODY_BYTES: Final = 64 * 1024
#: A deposit whose client sends no byte for this long is abandoned (slow-loris defence).
BODY_IDLE_TIMEOUT_S: Final = 60.0
#: Version numbers are SQL INTEGERs in the catalog.
MAX_VERSION: Final = 2**31 - 1
#: Longest reason per faulty node repeated in a response header.
MAX_HEADER_REASON_CHARS: Final = 200

#: URL convertor for document names in route paths (registered below).
NAME_CONVERTOR: Final = "evault_document_name"

HEADER_SHA256: Final = "Evault-Sha256"
HEADER_VERSION: Final = "Evault-Version"
HEADER_FAULTY: Final = "Evault-Faulty-Nodes"
HEADER_FAILED: Final = "Evault-Failed-Nodes"
#: ``1`` on a deposit: the client encrypted the body (the statement says ``encrypted``).
HEADER_ENCRYPTED: Final = "Evault-Encrypted"
#: Set by the auth dependency for the access log (never the token itself).
SCOPE_USER_KEY: Final = "evault.user"

_SHA256_PATTERN: Final = r"^[0-9a-fA-F]{64}$"


T = TypeVar("T")


# --- the seams: what the API needs from the catalog and the vault service ------------------


class CatalogPort(Protocol):
    """The part of :class:`evault.catalog.Catalog` the API calls (all synchronous)."""

    def create_user(
        self,
        user_id: str,
        password: str,
        name: str,
        contact: str,
        *,
        identity_public_key: bytes | None = None,
    ) -> None: ...

    def authenticate(self, user_id: str, password: str) -> str: ...

    def set_password(self, user_id: str, password: str) -> int: ...

    def issue_token(self, user_id: str, ttl_s: float, kind: Any = "api") -> str: ...

    @property
    def point_reads_inline(self) -> bool: ...

    def resolve_token(self, token: str) -> str: ...

    def lookup_token(self, token: str) -> TokenLookup: ...

    def touch_token(self, token: str) -> None: ...

    def revoke_token(self, token: str) -> bool: ...

    def get_version(self, owner: str, name: str, version: int | None = None) -> VersionRecord: ...

    def list_versions(self, owner: str, name: str) -> list[VersionRecord]: ...

    def list_documents(self, owner: str) -> list[DocumentSummary]: ...


class DepositOutcomePort(Protocol):
    """What a finished deposit reports (``evault.gateway.service.DepositOutcome``)."""

    @property
    def version(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def statement(self) -> bytes: ...
    @property
    def signature(self) -> bytes: ...
    @property
    def faulty(self) -> Mapping[int, str]: ...
    @property
    def failed(self) -> Mapping[int, str]: ...


class RetrievalPort(Protocol):
    """A retrieval under way (``evault.gateway.service.Retrieval``): facts settled before the
    first byte, then the bytes.

    Iterating yields the document's bytes (in pieces: ``bytes``, or views of them, as the
    rebuild has them); the service verifies each segment before it yields it and raises (an
    ``EvaultError``) rather than deliver the end of a document whose SHA-256 does not match.
    ``faulty`` / ``failed`` name nodes (lying / not serving).
    """

    @property
    def record(self) -> VersionRecord: ...
    @property
    def size(self) -> int: ...
    @property
    def faulty(self) -> Mapping[int, str]: ...
    @property
    def failed(self) -> Mapping[int, str]: ...

    def __aiter__(self) -> AsyncIterator[bytes | memoryview]: ...

    async def aclose(self) -> None: ...


class VaultServicePort(Protocol):
    """The part of :class:`evault.gateway.service.VaultService` the API calls."""

    async def deposit(
        self,
        owner: str,
        name: str,
        body: AsyncIterator[bytes],
        *,
        size: int | None,
        sha256: str | None,
        encrypted: bool = False,
    ) -> DepositOutcomePort: ...

    async def retrieve(
        self, owner: str, name: str, version: int | None = None
    ) -> RetrievalPort: ...

    async def delete(self, owner: str, name: str, version: int) -> Any: ...

    async def put_unwrap_key(
        self, owner: str, sealed: Mapping[int, bytes], certificate: bytes
    ) -> KeyStoreOutcome: ...

    async def unwrap_keys(self, owner: str) -> KeyListOutcome: ...

    async def unwrap(self, owner: str, signed_request: bytes) -> UnwrapOutcome: ...


@dataclass(frozen=True)
class VaultInfo:
    """The vault's public facts, read once at start-up."""

    vault_id: str
    n: int
    m: int
    k: int
    t: int
    codec: str
    segment_bytes: int
    fingerprint_scheme: str
    public_key_pem: str


@dataclass(frozen=True)
class ApiSettings:
    """Everything the handlers need, kept on ``app.state.evault``."""

    info: VaultInfo
    catalog: CatalogPort
    service: VaultServicePort
    max_document_bytes: int
    token_ttl_s: int = DEFAULT_TOKEN_TTL_S
    body_idle_timeout_s: float = BODY_IDLE_TIMEOUT_S
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


def settings(request: Request) -> ApiSettings:
    """The app's settings (for code outside FastAPI's dependencies, e.g. the web pages)."""
    return app_settings(request.app)


def app_settings(app: Any) -> ApiSettings:
    """The settings ``create_app`` stored on ``app`` (an ASGI scope's ``"app"``)."""
    value = app.state.evault
    if not isinstance(value, ApiSettings):
        raise TypeError("app.state.evault: expected ApiSettings (use create_app)")
    return value


async def _settings_dependency(request: Request) -> ApiSettings:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, a hand-off that costs
    # more CPU than everything the function does.
    return settings(request)


Settings = Annotated[ApiSettings, Depends(_settings_dependency)]


# --- request and response bodies ----------------------------------------------------------


def _no_lone_surrogates(value: str) -> str:
    # JSON's \ud800 escapes decode to lone surrogates, which are not text and cannot be
    # stored or hashed as UTF-8; refuse them as a schema violation rather than crash later.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text (no unpaired surrogates)") from exc
    return value


Text = Annotated[str, AfterValidator(_no_lone_surrogates)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(_Strict):
    user_id: Text = Field(max_length=256, description="3–64 of a-z 0-9 . _ -, case-insensitive.")
    password: Text = Field(max_length=4096, description="8–1024 characters.")
    name: Text = Field(max_length=1024, description="Full name, 1–200 characters.")
    contact: Text = Field(
        max_length=1024, description="How to reach the user (e-mail, phone); may be empty."
    )
    identity_public_key: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Optional: the user's Ed25519 identity public key (lowercase hex), which "
        "signs the user's unwrap keys and unwrap requests (DESIGN §7).",
    )


class UserCreated(BaseModel):
    user_id: str = Field(description="The stored (lower-case) user id.")


class TokenCreate(_Strict):
    user_id: Text = Field(max_length=256)
    password: Text = Field(max_length=4096)


class PasswordChange(_Strict):
    password: Text = Field(max_length=4096, description="The current password.")
    new_password: Text = Field(max_length=4096, description="8–1024 characters.")


class TokenIssued(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`; shown only once.")
    token_type: str = Field(default="bearer")
    expires_at: str = Field(description="RFC 3339 UTC.")


class VaultOut(BaseModel):
    vault_id: str
    n: int
    m: int
    k: int
    t: int
    codec: str
    segment_bytes: int
    fingerprint_scheme: str
    public_key_pem: str = Field(description="RSA public key (PEM) that verifies every receipt.")


class ReceiptBytes(BaseModel):
    statement: str = Field(description="Base64 of the exact signed statement bytes.")
    signature: str = Field(description="Base64 of the RSASSA-PSS signature over `statement`.")


class DepositOut(BaseModel):
    name: str
    version: int
    size: int
    sha256: str = Field(description="Lower-case hex SHA-256 of the document.")
    receipt: ReceiptBytes
    faulty_nodes: dict[str, str] = Field(
        description="Nodes caught misbehaving during this deposit (node index → reason)."
    )
    failed_nodes: dict[str, str] = Field(
        description="Nodes that did not take part (down, slow, refused): node index → reason."
    )


class ReceiptOut(BaseModel):
    name: str
    version: int
    size: int
    sha256: str
    statement: str = Field(description="Base64 of the exact signed statement bytes.")
    signature: str = Field(description="Base64 of the RSASSA-PSS signature over `statement`.")


class DocumentOut(BaseModel):
    name: str
    latest_version: int
    size: int = Field(description="Size of the latest version in bytes.")
    sha256: str
    deposited_at: str
    version_count: int


class DocumentList(BaseModel):
    documents: list[DocumentOut]


class VersionOut(BaseModel):
    version: int
    size: int
    sha256: str
    deposited_at: str
    encrypted: bool


class VersionList(BaseModel):
    name: str
    versions: list[VersionOut]


_B64_PATTERN: Final = r"^[A-Za-z0-9+/]*={0,2}$"
_NODE_KEY_PATTERN: Final = r"^[1-9][0-9]{0,2}$"
B64 = Annotated[str, Field(pattern=_B64_PATTERN, max_length=48 * 1024)]


class KeysPut(_Strict):
    sealed: dict[Annotated[str, Field(pattern=_NODE_KEY_PATTERN)], B64] = Field(
        description="Node index → base64 of that node's unwrap-key share, sealed to the node's "
        "X25519 key (the gateway cannot open it). One entry per node of the vault."
    )
    certificate: B64 = Field(
        description="Base64 of the key certificate (public, signed by the identity key)."
    )


class KeysStored(BaseModel):
    key: str | None = Field(description="Hex of the public unwrap key Y the nodes stored.")
    stored: dict[str, bool] = Field(
        description="Node index → true if the key is new there, false if it already had it."
    )
    failed: dict[str, str] = Field(description="Node index → why it did not store its share.")


class KeysOut(BaseModel):
    certificates: dict[str, list[str]] = Field(
        description="Node index → base64 key certificates it holds for the caller, oldest first "
        "(unverified here: the client checks each signature against its own identity key)."
    )
    failed: dict[str, str] = Field(description="Node index → why it listed none.")


class UnwrapIn(_Strict):
    request: B64 = Field(
        description="Base64 of the unwrap request signed with the caller's identity key."
    )


class UnwrapOut(BaseModel):
    partials: dict[str, str] = Field(
        description="Node index → base64 partial unwrap with its Chaum–Pedersen proof "
        "(unverified here: the client checks every proof)."
    )
    refused: dict[str, str] = Field(description="Node index → why that node refused.")
    failed: dict[str, str] = Field(description="Node index → why it could not be asked.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code (see the error table).")
    message: str = Field(description="One sentence for a human.")
    details: dict[str, Any] | None = Field(default=None, description="Facts, when there are any.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Bad input (`bad_name`, `bad_password`, `malformed_json`, `bad_request`).",
        401: "Missing, invalid, expired or revoked bearer token, or wrong password.",
        403: "The unwrap request does not name the caller (`unwrap_request_rejected`).",
        404: "No such document or version for this user.",
        408: "The request body stalled (`body_timeout`).",
        409: "Conflict (`user_exists`, `digest_mismatch`).",
        413: "Body over the limit (`too_large`).",
        422: "The request breaks the operation's schema (`invalid_request`).",
        502: "Nodes answered wrongly (named in `details`).",
        503: "Too few nodes available (named in `details`).",
        504: "A node timed out.",
    }
    return {
        s: {"model": ErrorResponse, "description": descriptions.get(s, "Error.")} for s in statuses
    }


# --- authentication ---------------------------------------------------------------------------

_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="opaque token from POST /api/v1/tokens",
    description="`Authorization: Bearer <token>`; tokens come from `POST /api/v1/tokens`.",
)


@dataclass(frozen=True)
class Caller:
    user_id: str
    token: str = field(repr=False)  # never in a log line by accident


async def current_caller(
    request: Request,
    s: Settings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None:
        raise AuthFailed("this request needs a bearer token: Authorization: Bearer <token>")
    return await authenticate(s, credentials.credentials, request.scope)


async def authenticate(s: ApiSettings, token: str, scope: MutableMapping[str, Any]) -> Caller:
    """The caller a bearer token stands for (``AuthFailed`` otherwise); the user id goes into
    the ASGI scope for the access log."""
    found = await catalog_point_read(s, s.catalog.lookup_token, token)
    if found.stale:  # at most once a minute per token: the write goes to a worker thread
        await run_in_threadpool(s.catalog.touch_token, token)
    scope[SCOPE_USER_KEY] = found.user_id
    return Caller(user_id=found.user_id, token=token)


async def catalog_point_read(s: ApiSettings, fn: Callable[..., T], *args: Any) -> T:
    """A catalog point read: on the event loop when the catalog says it is cheap enough
    (``point_reads_inline``), else in a worker thread."""
    if s.catalog.point_reads_inline:
        return fn(*args)
    return await run_in_threadpool(fn, *args)


CurrentCaller = Annotated[Caller, Depends(current_caller)]


# --- names ------------------------------------------------------------------------------------


def check_api_document_name(name: str) -> str:
    """The catalog's name rules, plus the reserved last segments (module docstring)."""
    validate_document_name(name)
    last = name.rsplit("/", 1)[-1]
    if last in RESERVED_LAST_SEGMENTS:
        raise BadName(
            "document name",
            f"its last segment {last!r} is reserved for the API's sub-resources "
            f"({', '.join(RESERVED_LAST_SEGMENTS)})",
            name,
        )
    return name


NAME_DESCRIPTION: Final = (
    "Document name: 1–255 characters, `/` allowed between non-empty segments (no `.` or `..`), "
    "no control characters, last segment not `receipt` or `versions`. Percent-encode as usual."
)
DocName = Annotated[str, Path(description=NAME_DESCRIPTION)]
VersionQuery = Annotated[
    int | None,
    Query(ge=1, le=MAX_VERSION, description="Version number; the latest when omitted."),
]


# --- formatting -------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _nodes(reasons: Mapping[int, str]) -> dict[str, str]:
    return {str(node): str(why) for node, why in sorted(reasons.items())}


def nodes_header(reasons: Mapping[int, str]) -> str:
    """Compact JSON, ASCII only: ``json.dumps`` escapes control characters and non-ASCII, so
    a reason can never break the header (no CR/LF injection)."""
    short = {
        str(node): (why if len(why) <= MAX_HEADER_REASON_CHARS else why[:199] + "…")
        for node, why in sorted(reasons.items())
    }
    return json.dumps(short, ensure_ascii=True, separators=(",", ":"))


def _receipt_out(record: VersionRecord) -> ReceiptOut:
    return ReceiptOut(
        name=record.name,
        version=record.version,
        size=record.size,
        sha256=record.sha256.hex(),
        statement=_b64(record.statement),
        signature=_b64(record.signature),
    )


# --- streaming the deposit body ---------------------------------------------------------------


def declared_length(request: Request) -> int | None:
    """The request's Content-Length, or None for a chunked body."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise PublicRequestError(f"Content-Length {raw!r} is not a whole number of bytes")
    return int(raw)


class _LimitedBody:
    """The request body as an async iterator of chunks, with the size cap and the idle
    time-out applied as it flows.  It remembers the error it raised so that the handler can
    report it even if the service wraps it in an error of its own."""

    def __init__(self, request: Request, limit_bytes: int, idle_timeout_s: float) -> None:
        self._stream = request.stream()
        self._limit = limit_bytes
        self._idle_s = idle_timeout_s
        self.received = 0
        self.error: PublicRequestError | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self._idle_s):
                    chunk = await anext(self._stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                self.error = BodyTimeout(self._idle_s, self.received)
                raise self.error from None
            self.received += len(chunk)
            if self.received > self._limit:
                self.error = DocumentTooLarge(self._limit, self.received, declared=False)
                raise self.error
            if chunk:
                yield chunk


# --- the routes -------------------------------------------------------------------------------


class _DocumentNameConvertor(PathConvertor):
    """Like Starlette's ``path``, but matching every character: ``.*`` stops at a newline, so
    a name with one would fall through to "unknown path" instead of being refused by the
    name rules with a clear ``400 bad_name``."""

    regex = r"[\s\S]*"


register_url_convertor(NAME_CONVERTOR, _DocumentNameConvertor())

router = APIRouter(prefix=API_PREFIX)

_RAW_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "description": "The document's bytes, streamed as they are (any size up to the "
        "gateway's `max_document_bytes`; chunked transfer encoding is accepted).",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

_BYTES_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "The document's bytes, verified segment by segment as they stream. If a "
        "failure is found after the headers went out, the connection is aborted: a response "
        "that completes is always the right bytes.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            HEADER_VERSION: {"description": "Version served.", "schema": {"type": "integer"}},
            HEADER_SHA256: {
                "description": "Hex SHA-256 the receipt signs.",
                "schema": {"type": "string"},
            },
            HEADER_FAULTY: {
                "description": "JSON object node index → reason, for nodes found faulty "
                "(lying) before the first byte.",
                "schema": {"type": "string"},
            },
            HEADER_FAILED: {
                "description": "JSON object node index → reason, for nodes that could not "
                "serve (down, slow) before the first byte.",
                "schema": {"type": "string"},
            },
            "ETag": {"description": "The quoted SHA-256.", "schema": {"type": "string"}},
        },
    }
}


@router.get("/vault", response_model=VaultOut, tags=["vault"], summary="The vault's public facts")
async def get_vault(s: Settings) -> VaultOut:
    i = s.info
    return VaultOut(
        vault_id=i.vault_id,
        n=i.n,
        m=i.m,
        k=i.k,
        t=i.t,
        codec=i.codec,
        segment_bytes=i.segment_bytes,
        fingerprint_scheme=i.fingerprint_scheme,
        public_key_pem=i.public_key_pem,
    )


@router.post(
    "/users",
    status_code=201,
    response_model=UserCreated,
    responses=_errors(400, 408, 409, 413, 422),
    tags=["users"],
    summary="Register a user",
)
async def register(body: UserCreate, s: Settings) -> UserCreated:
    identity = (
        bytes.fromhex(body.identity_public_key) if body.identity_public_key is not None else None
    )
    await run_in_threadpool(
        lambda: s.catalog.create_user(
            body.user_id,
            body.password,
            body.name,
            body.contact,
            identity_public_key=identity,
        )
    )
    # The catalog stores ids in lower case; echo the stored form.
    return UserCreated(user_id=canonical_user_id(body.user_id))


@router.post(
    "/tokens",
    status_code=201,
    response_model=TokenIssued,
    responses=_errors(400, 401, 408, 413, 422),
    tags=["users"],
    summary="Log in: exchange a user id and password for a bearer token",
)
async def log_in(body: TokenCreate, s: Settings) -> TokenIssued:
    user_id = await run_in_threadpool(s.catalog.authenticate, body.user_id, body.password)
    return await _issue_token(s, user_id)


async def _issue_token(s: ApiSettings, user_id: str) -> TokenIssued:
    """A new API token for ``user_id``, as the answer says it."""
    token = await run_in_threadpool(s.catalog.issue_token, user_id, s.token_ttl_s, "api")
    expires = s.clock() + timedelta(seconds=s.token_ttl_s)
    return TokenIssued(token=token, expires_at=_time(expires))


@router.put(
    "/password",
    response_model=TokenIssued,
    responses=_errors(400, 401, 408, 413, 422),
    tags=["users"],
    summary="Change the caller's password: every token is revoked, a new one is issued",
)
async def change_password(body: PasswordChange, caller: CurrentCaller, s: Settings) -> TokenIssued:
    # The current password too, not the token alone: a stolen token must not take the account.
    await run_in_threadpool(s.catalog.authenticate, caller.user_id, body.password)
    await run_in_threadpool(s.catalog.set_password, caller.user_id, body.new_password)
    return await _issue_token(s, caller.user_id)


@router.delete(
    "/tokens/current",
    status_code=204,
    responses=_errors(401),
    tags=["users"],
    summary="Log out: revoke the token this request carries",
)
async def log_out(caller: CurrentCaller, s: Settings) -> Response:
    await run_in_threadpool(s.catalog.revoke_token, caller.token)
    return Response(status_code=204)


@router.get(
    "/documents",
    response_model=DocumentList,
    responses=_errors(401),
    tags=["documents"],
    summary="List the caller's documents",
)
async def list_documents(caller: CurrentCaller, s: Settings) -> DocumentList:
    summaries = await run_in_threadpool(s.catalog.list_documents, caller.user_id)
    return DocumentList(
        documents=[
            DocumentOut(
                name=d.name,
                latest_version=d.latest_version,
                size=d.size,
                sha256=d.sha256.hex(),
                deposited_at=_time(d.deposited_at),
                version_count=d.version_count,
            )
            for d in summaries
        ]
    )


# The two sub-resource routes come before the bare document routes: a name pattern would
# otherwise swallow the "/receipt" or "/versions" suffix into the name.


@router.get(
    "/documents/{name:evault_document_name}/receipt",
    response_model=ReceiptOut,
    responses=_errors(400, 401, 404, 422),
    tags=["documents"],
    summary="The receipt of a version (the latest by default)",
)
async def get_receipt(
    name: DocName, caller: CurrentCaller, s: Settings, version: VersionQuery = None
) -> ReceiptOut:
    check_api_document_name(name)
    record = await run_in_threadpool(s.catalog.get_version, caller.user_id, name, version)
    return _receipt_out(record)


@router.get(
    "/documents/{name:evault_document_name}/versions",
    response_model=VersionList,
    responses=_errors(400, 401, 404, 422),
    tags=["documents"],
    summary="The stored versions of a document, oldest first",
)
async def list_versions(name: DocName, caller: CurrentCaller, s: Settings) -> VersionList:
    check_api_document_name(name)
    records = await run_in_threadpool(s.catalog.list_versions, caller.user_id, name)
    return VersionList(
        name=name,
        versions=[
            VersionOut(
                version=r.version,
                size=r.size,
                sha256=r.sha256.hex(),
                deposited_at=_time(r.deposited_at),
                encrypted=r.encrypted,
            )
            for r in records
        ],
    )


@router.put(
    "/documents/{name:evault_document_name}",
    status_code=201,
    response_model=DepositOut,
    responses=_errors(400, 401, 408, 409, 413, 422, 502, 503, 504),
    openapi_extra=_RAW_BODY,
    tags=["documents"],
    summary="Deposit a new version of a document; answers with its receipt",
)
async def deposit(
    request: Request,
    name: DocName,
    caller: CurrentCaller,
    s: Settings,
    evault_sha256: Annotated[
        str | None,
        Header(
            alias=HEADER_SHA256,
            pattern=_SHA256_PATTERN,
            description="The client's hex SHA-256 of the body; the deposit is refused "
            "(409 digest_mismatch) if the body hashes differently.",
        ),
    ] = None,
    evault_encrypted: Annotated[
        str | None,
        Header(
            alias=HEADER_ENCRYPTED,
            pattern=r"^[01]$",
            description="`1` if the client encrypted the body (evault STREAM format); the "
            "receipt's statement then says `encrypted: true`. Default `0`.",
        ),
    ] = None,
) -> DepositOut:
    check_api_document_name(name)
    size = declared_length(request)
    if size is not None and size > s.max_document_bytes:
        raise DocumentTooLarge(s.max_document_bytes, size, declared=True)
    body = _LimitedBody(request, s.max_document_bytes, s.body_idle_timeout_s)
    try:
        outcome = await s.service.deposit(
            caller.user_id,
            name,
            aiter(body),
            size=size,
            sha256=evault_sha256.lower() if evault_sha256 is not None else None,
            encrypted=evault_encrypted == "1",
        )
    except Exception:
        if body.error is not None:
            # The body's own failure is what the client must hear, whatever the service made
            # of it on its way out.
            raise body.error from None
        raise
    return DepositOut(
        name=name,
        version=outcome.version,
        size=outcome.size,
        sha256=outcome.sha256,
        receipt=ReceiptBytes(statement=_b64(outcome.statement), signature=_b64(outcome.signature)),
        faulty_nodes=_nodes(outcome.faulty),
        failed_nodes=_nodes(outcome.failed),
    )


@router.get(
    "/documents/{name:evault_document_name}",
    response_class=StreamingResponse,
    responses={**_BYTES_RESPONSE, **_errors(400, 401, 404, 422, 502, 503, 504)},
    tags=["documents"],
    summary="Retrieve a version's bytes (the latest by default)",
)
async def retrieve(
    name: DocName, caller: CurrentCaller, s: Settings, version: VersionQuery = None
) -> Response:
    return await retrieval_response(s, caller, name, version)


async def retrieval_response(
    s: ApiSettings, caller: Caller, name: str, version: int | None
) -> Response:
    """GET /documents/{name}: the route's whole work once the caller is known (also run
    by the gateway's fast path for plain retrievals, ``evault.gateway.app``)."""
    check_api_document_name(name)
    retrieval = await s.service.retrieve(caller.user_id, name, version)
    # The first (verified) chunk before any header goes out: a failure up to here is still a
    # proper JSON error, and the faulty nodes found so far make it into the headers.
    first, chunks = await first_chunk(retrieval)
    record = retrieval.record
    headers = {
        "Content-Length": str(retrieval.size),
        HEADER_VERSION: str(record.version),
        HEADER_SHA256: record.sha256.hex(),
        HEADER_FAULTY: nodes_header(retrieval.faulty),
        HEADER_FAILED: nodes_header(retrieval.failed),
        "ETag": f'"{record.sha256.hex()}"',
    }
    return await document_response(
        retrieval, first, chunks, owner=caller.user_id, name=name, headers=headers
    )


@router.delete(
    "/documents/{name:evault_document_name}",
    status_code=204,
    responses={
        204: {
            "description": "Deleted: the version is no longer listed or served.",
            "headers": {
                HEADER_FAILED: {
                    "description": "Present when some nodes could not be reached: JSON "
                    "object node index → reason (their slices go at the next sweep).",
                    "schema": {"type": "string"},
                }
            },
        },
        **_errors(400, 401, 404, 422, 502, 503, 504),
    },
    tags=["documents"],
    summary="Delete one version of a document",
)
async def delete_version(
    name: DocName,
    caller: CurrentCaller,
    s: Settings,
    version: Annotated[int, Query(ge=1, le=MAX_VERSION, description="The version to delete.")],
) -> Response:
    check_api_document_name(name)
    outcome = await s.service.delete(caller.user_id, name, version)
    failed = getattr(outcome, "failed", None) or {}
    # The version is gone from the catalog either way; nodes that still hold a slice are
    # named so that an operator can look (the gateway's next sweep removes it).
    headers = {HEADER_FAILED: nodes_header(failed)} if failed else None
    return Response(status_code=204, headers=headers)


# --- confidentiality: unwrap keys and blinded unwraps (DESIGN §7) ------------------------------


def _b64_field(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise PublicRequestError(f"{what} is not base64: {exc}") from None


@router.put(
    "/keys",
    response_model=KeysStored,
    responses=_errors(400, 401, 408, 413, 422),
    tags=["keys"],
    summary="Register an unwrap key: relay each node its sealed share",
)
async def put_keys(body: KeysPut, caller: CurrentCaller, s: Settings) -> KeysStored:
    certificate = _b64_field(body.certificate, "certificate")
    try:
        cert = KeyCertificate.from_bytes(certificate)
    except FormatError as exc:
        raise PublicRequestError(f"certificate: {exc.message}") from None
    if cert.owner != caller.user_id or cert.vault != s.info.vault_id or cert.nodes != s.info.n:
        raise PublicRequestError(
            f"the key certificate must name this vault, its {s.info.n} nodes and the caller"
        )
    sealed = {
        int(node): _b64_field(text, f"sealed share {node}") for node, text in body.sealed.items()
    }
    if set(sealed) != set(range(1, s.info.n + 1)):
        raise PublicRequestError(f"expected one sealed share for each node 1..{s.info.n}")
    outcome = await s.service.put_unwrap_key(caller.user_id, sealed, certificate)
    return KeysStored(
        key=outcome.key,
        stored={str(node): created for node, created in sorted(outcome.stored.items())},
        failed=_nodes(outcome.failed),
    )


@router.get(
    "/keys",
    response_model=KeysOut,
    responses=_errors(401),
    tags=["keys"],
    summary="The certificates of the caller's unwrap keys, as each node holds them",
)
async def get_keys(caller: CurrentCaller, s: Settings) -> KeysOut:
    outcome = await s.service.unwrap_keys(caller.user_id)
    return KeysOut(
        certificates={
            str(node): [_b64(c) for c in certs]
            for node, certs in sorted(outcome.certificates.items())
        },
        failed=_nodes(outcome.failed),
    )


@router.post(
    "/unwrap",
    response_model=UnwrapOut,
    responses=_errors(400, 401, 403, 408, 413, 422),
    tags=["keys"],
    summary="Relay a signed, blinded unwrap request to the nodes; their partial unwraps",
)
async def post_unwrap(body: UnwrapIn, caller: CurrentCaller, s: Settings) -> UnwrapOut:
    signed = _b64_field(body.request, "request")
    outcome = await s.service.unwrap(caller.user_id, signed)
    return UnwrapOut(
        partials={str(node): _b64(p) for node, p in sorted(outcome.partials.items())},
        refused=_nodes(outcome.refused),
        failed=_nodes(outcome.failed),
    )
