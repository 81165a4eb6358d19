"""Talking to the gateway's public API (``/api/v1``, issue 4) with fail-over between gateways.

Every HTTP call the client makes goes through :class:`GatewaySession`, and every ``httpx``
failure is mapped in one place (:func:`classify`), with a test that none is left out.

Fail-over (DESIGN §8: "clients are configured with several gateway URLs and fail over on
time-out").  Gateways are tried in the configured order, starting with the last one that
answered.  A gateway that cannot be reached is skipped for the next one, and the user is told
once per gateway on stderr.  What counts as "cannot be reached" depends on whether the request
may be repeated:

==================  ========================================  ==================================
failure             examples                                  fail over?
==================  ========================================  ==================================
``not-reached``     connection refused, connect time-out,     always: the request never left
                    TLS handshake failure, no free connection
``broke``           read time-out, connection reset, closed   only for requests that may be
                    before the answer                         repeated (GET, log-in); a deposit
                                                              or delete may have happened, so
                                                              the user is told to look
``local``           the body did not match its length         never: a client-side problem
==================  ========================================  ==================================

An HTTP error answer is never failed over: another gateway shares the same catalog and nodes and
would say the same.  It becomes :class:`~evault.errors.GatewayRefused` carrying the API's code
and sentence.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx

from evault.errors import (
    BadGatewayAnswer,
    ConfigError,
    GatewayRefused,
    GatewayUnreachable,
    TransportError,
)

API: Final = "/api/v1"
HEADER_SHA256: Final = "Evault-Sha256"
HEADER_VERSION: Final = "Evault-Version"
HEADER_FAULTY: Final = "Evault-Faulty-Nodes"
HEADER_ENCRYPTED: Final = "Evault-Encrypted"
#: JSON answers are small; a bigger one is a gateway fault, not something to buffer.
MAX_JSON_ANSWER_BYTES: Final = 16 * 1024 * 1024

Failure = Literal["not-reached", "broke", "local", "bad-answer", "config"]

_CLASSES: Final[Mapping[type[BaseException], Failure]] = {
    httpx.ConnectError: "not-reached",
    httpx.ConnectTimeout: "not-reached",
    httpx.PoolTimeout: "not-reached",
    httpx.UnsupportedProtocol: "not-reached",
    httpx.ProxyError: "not-reached",
    httpx.ReadTimeout: "broke",
    httpx.WriteTimeout: "broke",
    httpx.ReadError: "broke",
    httpx.WriteError: "broke",
    httpx.CloseError: "broke",
    httpx.RemoteProtocolError: "broke",
    httpx.LocalProtocolError: "local",
    httpx.DecodingError: "bad-answer",
    httpx.TooManyRedirects: "bad-answer",
    httpx.InvalidURL: "config",
    # Bases, so that a subclass added to httpx later still falls in a safe kind.
    httpx.TimeoutException: "broke",
    httpx.NetworkError: "broke",
    httpx.ProtocolError: "broke",
    httpx.TransportError: "broke",
    httpx.RequestError: "broke",
}


def classify(exc: BaseException) -> Failure | None:
    """The failure kind of an ``httpx`` exception (by its nearest listed class), else None."""
    for cls in type(exc).__mro__:
        kind = _CLASSES.get(cls)
        if kind is not None:
            return kind
    return None


def describe(exc: BaseException) -> str:
    """A short reason for a human: the exception's text, or its class name if it has none."""
    text = str(exc).strip()
    kind = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({kind})"
    if not text:
        return kind
    return text if len(text) <= 200 else text[:197] + "..."


def document_path(name: str, suffix: str = "") -> str:
    """``/api/v1/documents/<name>`` with the name percent-encoded, ``/`` kept as a separator."""
    return f"{API}/documents/{quote(name, safe='/')}{suffix}"


def make_http_client(
    ca_cert: str | None,
    *,
    connect_timeout_s: float,
    timeout_s: float,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """One pooled client for every gateway; TLS trust is the vault's CA (the client bundle)."""
    verify: ssl.SSLContext | bool = True
    if transport is None and ca_cert is not None:
        try:
            verify = ssl.create_default_context(cafile=ca_cert)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot use the CA certificate {ca_cert}: {exc}") from None
    return httpx.Client(
        verify=verify,
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        transport=transport,
        follow_redirects=False,
    )


@dataclass
class Answer:
    """A response and the gateway that gave it."""

    url: str
    response: httpx.Response

    def json(self) -> Any:
        return _json_body(self.url, self.response)


def _json_body(url: str, response: httpx.Response) -> Any:
    raw = response.read()
    if len(raw) > MAX_JSON_ANSWER_BYTES:
        raise BadGatewayAnswer(url, f"a JSON answer of {len(raw)} bytes is over the limit")
    try:
        return json.loads(raw)
    except ValueError:
        raise BadGatewayAnswer(
            url, f"HTTP {response.status_code} with a body that is not JSON"
        ) from None


def _refusal(url: str, response: httpx.Response, *, authenticated: bool) -> GatewayRefused:
    try:
        raw = response.read()
        body = json.loads(raw[:MAX_JSON_ANSWER_BYTES]) if raw else None
    except (ValueError, httpx.HTTPError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code = error["code"]
        message = str(error.get("message") or code)
        details = error.get("details") if isinstance(error.get("details"), dict) else None
    else:
        code = "no_error_body"
        message = f"{url} answered HTTP {response.status_code} {response.reason_phrase}"
        details = None
    challenge = response.headers.get("www-authenticate", "")
    if response.status_code == 401 and authenticated and 'error="invalid_token"' in challenge:
        # The token was refused (expired, revoked): not a wrong password (a change of password
        # asks for the current one too, and is refused without this challenge).
        message = message.rstrip(".") + "; log in again with `evault login`"
    return GatewayRefused(response.status_code, code, message, details)


def _issued_token(answer: Answer) -> tuple[str, str | None, str]:
    """(token, expires_at, gateway URL) of an answer that issued a token."""
    body = _object(answer, ("token",))
    expires = body.get("expires_at")
    return str(body["token"]), expires if isinstance(expires, str) else None, answer.url


class GatewaySession:
    """Requests to the first gateway that answers (module docstring); thread-safe."""

    def __init__(
        self,
        urls: Sequence[str],
        http: httpx.Client,
        *,
        token: str | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        if not urls:
            raise ValueError("urls: at least one gateway URL is needed")
        self.urls = tuple(u.rstrip("/") for u in urls)
        self.http = http
        self.token = token
        self._warn = warn or (lambda message: None)
        self._lock = threading.Lock()
        self._preferred = 0
        self._warned: set[str] = set()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> GatewaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _order(self) -> list[int]:
        with self._lock:
            first = self._preferred
        return [first] + [i for i in range(len(self.urls)) if i != first]

    def _skip(self, index: int, reason: str) -> None:
        url = self.urls[index]
        with self._lock:
            if self._preferred == index:
                self._preferred = (index + 1) % len(self.urls)
            first_time = url not in self._warned
            self._warned.add(url)
        if first_time and len(self.urls) > 1:
            self._warn(f"gateway {url} did not answer ({reason}); using the next one")

    def _answered(self, index: int) -> None:
        with self._lock:
            self._preferred = index

    def _send(
        self,
        method: str,
        path: str,
        *,
        repeatable: bool,
        authenticated: bool,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content: Callable[[], Iterable[bytes]] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> Answer:
        all_headers = dict(headers or {})
        if authenticated:
            if self.token is None:
                raise ValueError("token: this request needs a token (log in first)")
            all_headers["Authorization"] = f"Bearer {self.token}"
        attempts: dict[str, str] = {}
        for index in self._order():
            url = self.urls[index]
            request = self.http.build_request(
                method,
                url + path,
                params=params,
                json=json_body,
                content=content() if content is not None else None,
                headers=all_headers,
            )
            try:
                response = self.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                kind = classify(exc)
                reason = describe(exc)
                if kind == "not-reached" or (kind == "broke" and repeatable):
                    attempts[url] = reason
                    self._skip(index, reason)
                    continue
                raise _final_error(url, method, kind, reason) from None
            self._answered(index)
            if response.status_code >= 400:
                try:
                    raise _refusal(url, response, authenticated=authenticated)
                finally:
                    response.close()
            if not stream:
                try:
                    response.read()
                except httpx.HTTPError as exc:
                    response.close()
                    kind = classify(exc)
                    raise _final_error(url, method, kind, describe(exc)) from None
            return Answer(url, response)
        raise GatewayUnreachable(attempts)

    # --- the public API, one method per route -------------------------------------------------

    def vault_info(self) -> dict[str, Any]:
        answer = self._send("GET", f"{API}/vault", repeatable=True, authenticated=False)
        return _object(answer, ("vault_id", "public_key_pem"))

    def register(
        self,
        user_id: str,
        password: str,
        name: str,
        contact: str,
        *,
        identity_public_key: str | None = None,
    ) -> str:
        body = {"user_id": user_id, "password": password, "name": name, "contact": contact}
        if identity_public_key is not None:
            body["identity_public_key"] = identity_public_key
        answer = self._send(
            "POST",
            f"{API}/users",
            repeatable=False,
            authenticated=False,
            json_body=body,
        )
        body = _object(answer, ("user_id",))
        return str(body["user_id"])

    def login(self, user_id: str, password: str) -> tuple[str, str | None, str]:
        """(token, expires_at, gateway URL).  Repeatable: a second token does no harm."""
        answer = self._send(
            "POST",
            f"{API}/tokens",
            repeatable=True,
            authenticated=False,
            json_body={"user_id": user_id, "password": password},
        )
        return _issued_token(answer)

    def change_password(self, password: str, new_password: str) -> tuple[str, str | None, str]:
        """Change the caller's password (the current one too, not the token alone); every
        token of the user is revoked and the answer's is returned, like :meth:`login`.  Not
        repeatable: once it took effect, the same request fails (the old password is gone)."""
        answer = self._send(
            "PUT",
            f"{API}/password",
            repeatable=False,
            authenticated=True,
            json_body={"password": password, "new_password": new_password},
        )
        return _issued_token(answer)

    def logout(self) -> None:
        self._send("DELETE", f"{API}/tokens/current", repeatable=True, authenticated=True)

    def deposit(
        self,
        name: str,
        body: Callable[[], Iterable[bytes]],
        *,
        size: int,
        sha256: str | None,
        encrypted: bool = False,
    ) -> tuple[dict[str, Any], str]:
        """PUT the bytes ``body()`` yields (``size`` of them); (the answer, the gateway URL).

        ``sha256`` may be None when it is only known once the body was sent (an encrypted
        deposit); ``encrypted`` sends ``Evault-Encrypted: 1``."""
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        if sha256 is not None:
            headers[HEADER_SHA256] = sha256
        if encrypted:
            headers[HEADER_ENCRYPTED] = "1"
        answer = self._send(
            "PUT",
            document_path(name),
            repeatable=False,
            authenticated=True,
            content=body,
            headers=headers,
        )
        return _object(answer, ("version", "receipt")), answer.url

    def receipt(self, name: str, version: int | None = None) -> dict[str, Any]:
        params = {"version": version} if version is not None else None
        answer = self._send(
            "GET",
            document_path(name, "/receipt"),
            repeatable=True,
            authenticated=True,
            params=params,
        )
        return _object(answer, ("statement", "signature"))

    def documents(self) -> list[dict[str, Any]]:
        answer = self._send("GET", f"{API}/documents", repeatable=True, authenticated=True)
        return _list_of_objects(answer, "documents", ("name", "latest_version"))

    def versions(self, name: str) -> list[dict[str, Any]]:
        answer = self._send(
            "GET", document_path(name, "/versions"), repeatable=True, authenticated=True
        )
        return _list_of_objects(answer, "versions", ("version", "deposited_at", "size"))

    def delete(self, name: str, version: int) -> None:
        self._send(
            "DELETE",
            document_path(name),
            repeatable=False,
            authenticated=True,
            params={"version": version},
        )

    @contextmanager
    def document(self, name: str, version: int) -> Iterator[Answer]:
        """The document's bytes as a streamed answer; the caller reads ``iter_bytes()``."""
        answer = self._send(
            "GET",
            document_path(name),
            repeatable=True,
            authenticated=True,
            params={"version": version},
            stream=True,
        )
        try:
            yield answer
        finally:
            answer.response.close()

    # --- confidentiality (issue 6) ---------------------------------------------------------

    def put_keys(self, sealed: Mapping[int, bytes], certificate: bytes) -> dict[str, Any]:
        """``PUT /api/v1/keys``: relay sealed unwrap-key shares.  Repeatable: a node that
        already stored the key answers so."""
        answer = self._send(
            "PUT",
            f"{API}/keys",
            repeatable=True,
            authenticated=True,
            json_body={
                "sealed": {str(node): _b64(box) for node, box in sorted(sealed.items())},
                "certificate": _b64(certificate),
            },
        )
        return _object(answer, ("stored", "failed"))

    def keys(self) -> dict[str, Any]:
        """``GET /api/v1/keys``: the nodes' certificates of the caller's unwrap keys."""
        answer = self._send("GET", f"{API}/keys", repeatable=True, authenticated=True)
        return _object(answer, ("certificates", "failed"))

    def unwrap(self, signed_request: bytes) -> dict[str, Any]:
        """``POST /api/v1/unwrap``.  Not repeated on another gateway: the nodes that served
        the request would refuse it as a replay (the caller makes a fresh one instead)."""
        answer = self._send(
            "POST",
            f"{API}/unwrap",
            repeatable=False,
            authenticated=True,
            json_body={"request": _b64(signed_request)},
        )
        return _object(answer, ("partials", "refused", "failed"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _final_error(url: str, method: str, kind: Failure | None, reason: str) -> Exception:
    if kind == "broke":
        return TransportError(
            f"the gateway {url} stopped answering during a {method} request ({reason}); "
            f"it may or may not have been carried out",
            url=url,
            reason=reason,
        )
    if kind == "bad-answer":
        return BadGatewayAnswer(url, reason)
    if kind == "config":
        return ConfigError(f"gateway URL {url!r} is not usable: {reason}")
    return TransportError(f"the request to {url} failed: {reason}", url=url, reason=reason)


def _object(answer: Answer, required: Sequence[str]) -> dict[str, Any]:
    body = answer.json()
    if not isinstance(body, dict):
        raise BadGatewayAnswer(answer.url, "expected a JSON object")
    missing = [k for k in required if k not in body]
    if missing:
        raise BadGatewayAnswer(answer.url, f"the answer lacks {', '.join(missing)}")
    return body


def _list_of_objects(answer: Answer, key: str, required: Sequence[str]) -> list[dict[str, Any]]:
    body = _object(answer, (key,))
    items = body[key]
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and all(k in i for k in required) for i in items
    ):
        raise BadGatewayAnswer(
            answer.url, f"{key!r} must be a list of objects with {', '.join(required)}"
        )
    return items
