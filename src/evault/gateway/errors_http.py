"""The public API's one table from errors to HTTP statuses, and the JSON error body.

Every error a client of the gateway sees is a JSON object of one shape::

    {"error": {"code": "<stable code>", "message": "<one sentence>", "details": {...}}}

``details`` is present only when the error carries facts worth a program's attention (which
nodes failed and why, the limit that was exceeded); it never echoes request input such as
passwords.

``STATUS_BY_ERROR`` maps every ``EvaultError`` subclass in ``evault.errors`` to a status;
a test keeps it complete (the httpx habit: map a lower layer's errors in exactly one place,
and prove none is left out).  At run time a class that is not listed (added since) falls
back to its nearest listed ancestor, so a new error is never a 500 by accident.  Errors that
do not come from ``EvaultError`` (HTTP-level failures: unknown path, malformed JSON, schema
validation, unexpected exceptions) have their codes in ``HTTP_LEVEL_CODES``.

Statuses follow one rule per family: the client's fault → 4xx; the nodes' fault (down, slow,
lying) → 502/503/504 with the facts; the gateway's own fault → 500 with its message kept in
the log, not sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from evault import errors as e

STATUS_BY_ERROR: Final[Mapping[type[e.EvaultError], int]] = {
    e.EvaultError: 500,
    # Configuration: the gateway's own files are broken.
    e.ConfigError: 500,
    e.ProfileError: 500,  # client-side backup profiles; never the gateway's input
    # Dispersal: a rebuild failed because of what nodes served.
    e.CodecError: 502,
    e.NotEnoughSlices: 503,
    e.SliceCorrupt: 502,
    e.UnknownCodec: 500,
    e.DocumentCorrupt: 502,
    # Fingerprints: nodes disagree.
    e.FingerprintError: 502,
    e.NoFingerprintQuorum: 503,
    e.ConflictingFingerprints: 502,
    e.FingerprintMismatch: 502,
    e.NoMatchingFingerprint: 502,  # every FV that nodes sent contradicts the receipt
    # Threshold cryptography.
    e.CryptoError: 500,
    e.NotEnoughShares: 503,
    e.InvalidShare: 502,
    e.InvalidSignature: 502,
    e.KeyFileError: 500,
    e.InvalidElement: 400,
    e.InvalidKeyShare: 400,
    e.InvalidPartialUnwrap: 502,
    e.NotEnoughPartialUnwraps: 503,
    e.UnwrapRequestRejected: 403,
    e.DecryptionError: 400,
    e.NoUnwrapKey: 404,
    e.KeySetupIncomplete: 503,  # client-side: `evault keys init` reached too few nodes
    # Bytes that break their spec (a statement, an armored file sent by the client).
    e.FormatError: 400,
    e.ArmorError: 400,
    # Node-side storage; raised in node processes, mapped here for completeness.
    e.StorageError: 503,
    e.InsufficientStorage: 507,
    e.ObjectExists: 409,
    e.ObjectMissing: 404,
    e.DepositCancelled: 404,
    e.ObjectDamaged: 502,
    e.StoreMismatch: 500,
    e.KeyConflict: 409,
    # Catalog: users, tokens, names.
    e.CatalogError: 500,
    e.UserExists: 409,
    e.AuthFailed: 401,
    e.NotFound: 404,
    e.BadName: 400,
    e.BadPassword: 400,
    e.WrongState: 409,
    # Node protocol refusals (the node's own table, docs/spec/node-protocol.md).
    e.ProtocolError: 502,
    e.RequestRefused: 400,
    e.BadRequest: 400,
    e.BadProposal: 409,
    e.DigestMismatch: 409,
    e.TooLarge: 413,
    e.BadRange: 416,
    e.BadRequestLength: 422,
    # Gateway → nodes.
    e.TransportError: 503,
    e.NodeUnreachable: 503,
    e.NodeTimeout: 504,
    e.NodeRejected: 502,
    e.BadNodeAnswer: 502,
    e.DepositFailed: 503,
    # The public API's own request checks.
    e.PublicRequestError: 400,
    e.DocumentTooLarge: 413,
    e.BodyTimeout: 408,
    # The CLI's own errors: raised in clients, never by the gateway; if one ever were, it
    # would mean what its family means here.
    e.NotLoggedIn: 500,
    e.GatewayUnreachable: 503,
    e.BadGatewayAnswer: 502,
    e.ReceiptRejected: 502,
    e.PageFormatError: 400,
    e.GatewayRefused: 502,
    e.ContentMismatch: 502,
    e.BatchFailed: 500,
    e.NoLocalReceipt: 500,
    e.LocalFileError: 500,
    # The benchmark's own errors (evault bench vault): never raised by the gateway.
    e.BenchError: 500,
    e.LoadGenFailed: 500,
    e.BenchChecksFailed: 500,
}

#: Codes for failures that are not ``EvaultError``s, with their statuses.
HTTP_LEVEL_CODES: Final[Mapping[str, int]] = {
    "malformed_json": 400,  # the body is not JSON at all
    "invalid_request": 422,  # JSON / query / header that breaks the operation's schema
    "unknown_path": 404,
    "method_not_allowed": 405,
    "internal_error": 500,  # an unexpected exception; its traceback is logged, not sent
}

#: Sent instead of the message of a 500, whose text may name files or SQL.
INTERNAL_MESSAGE: Final = "the gateway could not complete the request; the details are in its log"


def status_for(exc: e.EvaultError) -> int:
    """The HTTP status of ``exc``: its class's entry, else its nearest listed ancestor's."""
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500


def all_codes() -> dict[str, int]:
    """Every code a client can see, with its status (EvaultError codes and HTTP-level ones)."""
    codes = {cls.code: status for cls, status in STATUS_BY_ERROR.items()}
    codes.update(HTTP_LEVEL_CODES)
    return codes


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON error object; ``details`` is dropped when empty."""
    inner: dict[str, Any] = {"code": code, "message": message}
    if details:
        inner["details"] = dict(details)
    return {"error": inner}


def evault_error_body(exc: e.EvaultError, status: int) -> dict[str, Any]:
    """The JSON body for ``exc``.  A 500 hides its message: it is the gateway's business."""
    if status == 500:
        return error_body(exc.code, INTERNAL_MESSAGE)
    return error_body(exc.code, exc.message, _json_safe(exc.details))


def _json_safe(details: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only the facts JSON can carry as they are (str, int, float, bool, None, and
    lists / string-keyed dicts of those); anything else would need a decision we do not
    want to make in an error path."""
    return {k: v for k, v in details.items() if isinstance(k, str) and _plain(v)}


def _plain(value: Any, depth: int = 0) -> bool:
    if depth > 4:
        return False
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False
