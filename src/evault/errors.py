"""One exception tree for the whole package.

Everything the world can cause (bad input, lying nodes, missing slices, disk full) is an
``EvaultError`` carrying the facts as attributes; its ``str()`` is one clear sentence a user
can read.  A programming mistake (a wrong argument type or value) raises the builtin
``TypeError`` / ``ValueError`` naming the parameter instead.

::

    EvaultError
    ├── ConfigError                 a setting or a file on disk is unusable
    ├── CodecError                  dispersal / reconstruction
    │   ├── NotEnoughSlices         have < need usable slices (with the reason per slice)
    │   └── SliceCorrupt            a block does not match its fingerprint (names the slice)
    ├── FingerprintError            fingerprint vectors
    │   ├── NoFingerprintQuorum     no FV is agreed by t+1 sources
    │   └── FingerprintMismatch     an FV does not match the H(FV) a receipt signs
    ├── CryptoError                 threshold signatures, keys
    │   ├── NotEnoughShares         have < need valid signature shares (names the bad signers)
    │   ├── InvalidShare            one share fails its proof of correctness
    │   ├── InvalidSignature        a combined signature / receipt does not verify
    │   └── KeyFileError            a key file is missing, unreadable, or the passphrase is wrong
    ├── FormatError                 bytes that do not follow their spec (statements, messages)
    ├── StorageError                node-side storage (disk full, corrupt index, missing slice)
    ├── CatalogError                gateway-side database
    ├── ProtocolError               a peer answered something the protocol forbids
    └── TransportError              a peer could not be reached / timed out
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class EvaultError(Exception):
    """Base of every error the world can cause.

    ``code`` is a stable machine-readable identifier (used in JSON error bodies);
    ``details`` holds the facts (JSON-serialisable) behind the message.
    """

    code = "evault_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def __str__(self) -> str:
        return self.message


class ConfigError(EvaultError):
    code = "config_error"


class CodecError(EvaultError):
    code = "codec_error"


class NotEnoughSlices(CodecError):
    """Fewer usable slices than the codec needs.

    ``failed`` maps a slice index (or node name) to the reason it could not be used.
    """

    code = "not_enough_slices"

    def __init__(self, have: int, need: int, failed: Mapping[int | str, str] | None = None) -> None:
        self.have = have
        self.need = need
        self.failed: dict[int | str, str] = dict(failed or {})
        reasons = "; ".join(f"{k}: {v}" for k, v in sorted(self.failed.items(), key=str))
        message = f"need {need} good slices to rebuild, have {have}"
        if reasons:
            message += f" (failed: {reasons})"
        super().__init__(
            message, have=have, need=need, failed={str(k): v for k, v in self.failed.items()}
        )


class SliceCorrupt(CodecError):
    """A block of slice ``slice_index`` does not match its fingerprint."""

    code = "slice_corrupt"

    def __init__(self, slice_index: int, block_index: int | None = None, reason: str = "") -> None:
        self.slice_index = slice_index
        self.block_index = block_index
        where = f"slice {slice_index}"
        if block_index is not None:
            where += f", block {block_index}"
        message = f"{where} does not match its fingerprint"
        if reason:
            message += f": {reason}"
        super().__init__(message, slice_index=slice_index, block_index=block_index)


class FingerprintError(EvaultError):
    code = "fingerprint_error"


class NoFingerprintQuorum(FingerprintError):
    """No fingerprint vector is agreed on by at least ``need`` sources."""

    code = "no_fingerprint_quorum"

    def __init__(self, best: int, need: int, sources: int) -> None:
        self.best = best
        self.need = need
        self.sources = sources
        super().__init__(
            f"no fingerprint vector is agreed by {need} sources "
            f"(best agreement {best} of {sources})",
            best=best,
            need=need,
            sources=sources,
        )


class FingerprintMismatch(FingerprintError):
    code = "fingerprint_mismatch"


class CryptoError(EvaultError):
    code = "crypto_error"


class NotEnoughShares(CryptoError):
    """Fewer valid signature shares than the threshold; ``bad`` names rejected signers."""

    code = "not_enough_shares"

    def __init__(self, have: int, need: int, bad: Mapping[int, str] | None = None) -> None:
        self.have = have
        self.need = need
        self.bad: dict[int, str] = dict(bad or {})
        message = f"need {need} valid signature shares, have {have}"
        if self.bad:
            message += (
                " (rejected: "
                + "; ".join(f"signer {i}: {why}" for i, why in sorted(self.bad.items()))
                + ")"
            )
        super().__init__(
            message, have=have, need=need, bad={str(k): v for k, v in self.bad.items()}
        )


class InvalidShare(CryptoError):
    code = "invalid_share"

    def __init__(self, signer: int, reason: str) -> None:
        self.signer = signer
        self.reason = reason
        super().__init__(
            f"signature share from signer {signer} is invalid: {reason}",
            signer=signer,
            reason=reason,
        )


class InvalidSignature(CryptoError):
    code = "invalid_signature"


class KeyFileError(CryptoError):
    code = "key_file_error"


class FormatError(EvaultError):
    code = "format_error"


class StorageError(EvaultError):
    code = "storage_error"


class CatalogError(EvaultError):
    code = "catalog_error"


class ProtocolError(EvaultError):
    code = "protocol_error"


class TransportError(EvaultError):
    code = "transport_error"


# --- catalog ---
# CatalogError
# ├── UserExists       registration with a user id that is taken (case-insensitively)
# ├── AuthFailed       unknown user, wrong password, or an invalid/expired/revoked token
# ├── NotFound         no such user / document / version visible to the caller
# ├── BadName          a user id, document name or profile field breaks its rules
# ├── BadPassword      a new password breaks the length rules
# └── WrongState       a version is not in the state the operation needs (e.g. already stored)


class UserExists(CatalogError):
    code = "user_exists"

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        super().__init__(f"user id {user_id!r} is already taken", user_id=user_id)


class AuthFailed(CatalogError):
    """Deliberately vague: it never says whether the user id or the password was wrong."""

    code = "auth_failed"

    def __init__(self, message: str = "unknown user id or wrong password") -> None:
        super().__init__(message)


class NotFound(CatalogError):
    """``what`` is "user", "document" or "version"; the other facts say which one."""

    code = "not_found"

    def __init__(self, what: str, message: str, **facts: Any) -> None:
        self.what = what
        super().__init__(message, what=what, **facts)


class BadName(CatalogError):
    """``field`` names the rule set ("user_id", "document name", "name", "contact")."""

    code = "bad_name"

    def __init__(self, field: str, reason: str, value: str) -> None:
        self.field = field
        self.reason = reason
        # repr() escapes control characters, and the cap keeps a log line a line.
        shown = repr(value) if len(value) <= 80 else repr(value[:77]) + "..."
        super().__init__(f"bad {field} {shown}: {reason}", field=field, reason=reason)


class BadPassword(CatalogError):
    code = "bad_password"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"password not accepted: {reason}", reason=reason)


class WrongState(CatalogError):
    code = "wrong_state"

    def __init__(self, owner: str, name: str, version: int, state: str, expected: str) -> None:
        self.owner = owner
        self.name = name
        self.version = version
        self.state = state
        self.expected = expected
        super().__init__(
            f"version {version} of {name!r} is {state}, not {expected}",
            owner=owner,
            name=name,
            version=version,
            state=state,
            expected=expected,
        )


# --- profiles ---


class ProfileError(ConfigError):
    """A backup profile (TOML) is unusable.

    ``source`` names the profile (usually its file path); ``field`` is the dotted path of the
    offending key (``retention[2].keep_last``), or None when the whole file is at fault.
    """

    code = "profile_error"

    def __init__(self, source: str, problem: str, field: str | None = None) -> None:
        self.source = source
        self.problem = problem
        self.field = field
        where = f"{source}: {field}" if field else source
        super().__init__(
            f"backup profile {where}: {problem}", source=source, problem=problem, field=field
        )


# --- confidentiality (issue 6): unwrap keys, blinded unwrap, streaming AEAD, armor -------------
#
#   CryptoError
#   ├── InvalidElement          a received group element is not a valid prime-order point
#   ├── InvalidKeyShare         a dealt unwrap-key share fails its checks (names the node)
#   ├── InvalidPartialUnwrap    a node's partial unwrap fails its Chaum–Pedersen proof
#   ├── NotEnoughShares
#   │   └── NotEnoughPartialUnwraps   have < need valid partial unwraps (names the bad nodes)
#   ├── UnwrapRequestRejected   a node refuses an unwrap request (unsigned, stale, replayed, ...)
#   └── DecryptionError         ciphertext or wrapped key fails authentication / is truncated
#   FormatError
#   └── ArmorError              printable (base64 / hex) text that is not strictly well formed


class InvalidElement(CryptoError):
    """Bytes received as a group element are not a canonical point of prime order ℓ."""

    code = "invalid_element"

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what} is not a valid group element: {reason}", what=what, reason=reason)


class InvalidKeyShare(CryptoError):
    """A sealed unwrap-key share for ``node`` cannot be opened or fails its Feldman check."""

    code = "invalid_key_share"

    def __init__(self, node: int, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(
            f"unwrap-key share for node {node} is invalid: {reason}", node=node, reason=reason
        )


class InvalidPartialUnwrap(CryptoError):
    """The partial unwrap returned by ``node`` does not verify."""

    code = "invalid_partial_unwrap"

    def __init__(self, node: int, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(
            f"partial unwrap from node {node} is invalid: {reason}", node=node, reason=reason
        )


class NotEnoughPartialUnwraps(NotEnoughShares):
    """Fewer valid partial unwraps than the threshold; ``bad`` maps node index to reason."""

    code = "not_enough_partial_unwraps"

    def __init__(self, have: int, need: int, bad: Mapping[int, str] | None = None) -> None:
        self.have = have
        self.need = need
        self.bad = dict(bad or {})
        message = f"need {need} valid partial unwraps, have {have}"
        if self.bad:
            message += (
                " (rejected: "
                + "; ".join(f"node {i}: {why}" for i, why in sorted(self.bad.items()))
                + ")"
            )
        # Skip NotEnoughShares.__init__: its sentence speaks of signature shares.
        CryptoError.__init__(
            self, message, have=have, need=need, bad={str(k): v for k, v in self.bad.items()}
        )


class UnwrapRequestRejected(CryptoError):
    """A node refuses an unwrap request; ``reason`` is a stable word, ``detail`` a sentence."""

    code = "unwrap_request_rejected"

    def __init__(self, reason: str, detail: str, request_id: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.request_id = request_id
        super().__init__(
            f"unwrap request rejected ({reason}): {detail}",
            reason=reason,
            detail=detail,
            request_id=request_id,
        )


class DecryptionError(CryptoError):
    """Ciphertext or a wrapped key does not authenticate (tampered, truncated, wrong key)."""

    code = "decryption_failed"

    def __init__(self, reason: str, chunk_index: int | None = None) -> None:
        self.reason = reason
        self.chunk_index = chunk_index
        where = "" if chunk_index is None else f" at chunk {chunk_index}"
        super().__init__(
            f"decryption failed{where}: {reason}", reason=reason, chunk_index=chunk_index
        )


class ArmorError(FormatError):
    """Printable text that is not a strictly well-formed armored file (``line`` is 1-based)."""

    code = "armor_error"

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        where = "" if line is None else f" (line {line})"
        super().__init__(f"not a valid armored file{where}: {reason}", reason=reason, line=line)


# --- storage node (evault.store, evault.node) ---
# StorageError
# ├── InsufficientStorage   the disk (or SQLite) is full; nothing was committed
# ├── ObjectExists          a committed object with that id exists, or a deposit of it is running
# ├── ObjectMissing         no committed object with that id
# ├── ObjectDamaged         the index names an object whose slice file is missing or the wrong size
# └── StoreMismatch         the data directory belongs to another vault or node index
# ProtocolError
# └── RequestRefused        a gateway request breaks the node protocol; ``code`` is the spec's code
#     ├── BadRequest         malformed header, path parameter or body           400 bad_request
#     ├── BadProposal        proposal disagrees with node config, clock or id    409 bad_proposal
#     ├── DigestMismatch     the document does not hash to Evault-Sha256         409 digest_mismatch
#     ├── TooLarge           body over the node's limit                          413 too_large
#     ├── BadRange           from_segment beyond the slice                       416 bad_range
#     └── BadRequestLength   body shorter/longer than Content-Length          422 bad_request_length


class InsufficientStorage(StorageError):
    code = "insufficient_storage"

    def __init__(self, where: str, detail: str = "") -> None:
        self.where = where
        message = f"no space left on the node's disk while writing {where}"
        if detail:
            message += f" ({detail})"
        super().__init__(message + "; nothing was committed", where=where)


class ObjectExists(StorageError):
    code = "exists"

    def __init__(self, object_id: str, in_progress: bool = False) -> None:
        self.object_id = object_id
        self.in_progress = in_progress
        what = "a deposit of" if in_progress else "a committed"
        super().__init__(
            f"{what} object {object_id} {'is in progress' if in_progress else 'exists'}",
            object_id=object_id,
            in_progress=in_progress,
        )


class ObjectMissing(StorageError):
    code = "not_found"

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        super().__init__(f"this node holds no object {object_id}", object_id=object_id)


class ObjectDamaged(StorageError):
    code = "object_damaged"

    def __init__(self, object_id: str, reason: str) -> None:
        self.object_id = object_id
        self.reason = reason
        super().__init__(
            f"object {object_id} is damaged on this node: {reason}",
            object_id=object_id,
            reason=reason,
        )


class StoreMismatch(StorageError):
    code = "store_mismatch"

    def __init__(self, data_dir: str, field: str, stored: object, configured: object) -> None:
        self.field = field
        super().__init__(
            f"data directory {data_dir} was made for {field} {stored!r}, "
            f"but this node is configured with {configured!r}",
            data_dir=data_dir,
            field=field,
            stored=str(stored),
            configured=str(configured),
        )


class RequestRefused(ProtocolError):
    """A request to a node that breaks the node protocol; ``code`` is the spec's error code."""

    code = "bad_request"


class BadRequest(RequestRefused):
    code = "bad_request"


class BadProposal(RequestRefused):
    code = "bad_proposal"


class DigestMismatch(RequestRefused):
    code = "digest_mismatch"

    def __init__(self, claimed: str, actual: str) -> None:
        super().__init__(
            f"the document hashes to {actual}, not to the claimed {claimed}",
            claimed=claimed,
            actual=actual,
        )


class TooLarge(RequestRefused):
    code = "too_large"

    def __init__(self, what: str, limit_bytes: int) -> None:
        super().__init__(f"{what} is over the limit of {limit_bytes} bytes", limit=limit_bytes)


class BadRange(RequestRefused):
    code = "bad_range"

    def __init__(self, from_segment: int, segment_count: int) -> None:
        super().__init__(
            f"from_segment {from_segment} is beyond the slice's {segment_count} segments",
            from_segment=from_segment,
            segment_count=segment_count,
        )


class BadRequestLength(RequestRefused):
    code = "bad_request_length"

    def __init__(self, declared: int, received: int) -> None:
        relation = "short of" if received < declared else "longer than"
        super().__init__(
            f"the body ({received} bytes so far) is {relation} its Content-Length of {declared}",
            declared=declared,
            received=received,
        )


# --- ida: dispersal and fingerprints (evault.ida) -----------------------------------------------


class UnknownCodec(CodecError):
    """A stored document names a codec id this version of evault does not know."""

    code = "unknown_codec"

    def __init__(self, codec_id: str, known: tuple[str, ...]) -> None:
        self.codec_id = codec_id
        super().__init__(
            f"unknown codec {codec_id!r} (this evault knows {', '.join(known)})",
            codec_id=codec_id,
            known=list(known),
        )


class ConflictingFingerprints(NoFingerprintQuorum):
    """Two different fingerprint vectors are each agreed by t+1 sources: more than t sources lie."""

    code = "conflicting_fingerprints"

    def __init__(self, best: int, need: int, sources: int, groups: int) -> None:
        super().__init__(best, need, sources)
        self.groups = groups
        self.message = (
            f"{groups} different fingerprint vectors are each agreed by at least {need} of "
            f"{sources} sources, so more sources lie than the vault tolerates"
        )
        self.args = (self.message,)
        self.details["groups"] = groups


# --- gateway ↔ nodes (evault.transport.nodes, evault.gateway.service) ---
# TransportError
# └── NodeUnreachable       a node could not be reached, or the connection broke
#     └── NodeTimeout       a node did not answer (or send a byte) within its time-out
# ProtocolError
# ├── NodeRejected          a node answered a JSON error; ``node_code`` is the spec's code
# └── BadNodeAnswer         a node answered something the node protocol forbids
# CodecError
# └── DocumentCorrupt       rebuilt bytes do not hash to the SHA-256 the receipt signs
# EvaultError
# └── DepositFailed         too few nodes stored and signed: no receipt, nothing listed


class NodeUnreachable(TransportError):
    """Node ``node`` could not be reached for ``op`` (connect refused, reset, TLS failure)."""

    code = "node_unreachable"

    def __init__(self, node: int, op: str, reason: str) -> None:
        self.node = node
        self.op = op
        self.reason = reason
        super().__init__(f"node {node} ({op}): {reason}", node=node, op=op, reason=reason)


class NodeTimeout(NodeUnreachable):
    code = "node_timeout"


class NodeRejected(ProtocolError):
    """Node ``node`` refused ``op`` with HTTP ``status`` and the spec's error ``node_code``."""

    code = "node_rejected"

    def __init__(self, node: int, op: str, status: int, node_code: str, node_message: str) -> None:
        self.node = node
        self.op = op
        self.status = status
        self.node_code = node_code
        self.node_message = node_message
        super().__init__(
            f"node {node} ({op}) refused with {status} {node_code}: {node_message}",
            node=node,
            op=op,
            status=status,
            node_code=node_code,
            node_message=node_message,
        )


class BadNodeAnswer(ProtocolError):
    """Node ``node`` answered ``op`` with something the node protocol forbids."""

    code = "bad_node_answer"

    def __init__(self, node: int, op: str, reason: str) -> None:
        self.node = node
        self.op = op
        self.reason = reason
        super().__init__(
            f"node {node} ({op}) answered badly: {reason}", node=node, op=op, reason=reason
        )


class DocumentCorrupt(CodecError):
    """The rebuilt document does not hash to what the receipt signs; no bytes are vouched for."""

    code = "document_corrupt"

    def __init__(self, expected_sha256: str, actual_sha256: str) -> None:
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256
        super().__init__(
            f"the rebuilt document hashes to {actual_sha256}, not to the receipt's "
            f"{expected_sha256}",
            expected_sha256=expected_sha256,
            actual_sha256=actual_sha256,
        )


class DepositFailed(EvaultError):
    """A deposit got no receipt; ``failed`` maps node index to why that node did not count."""

    code = "deposit_failed"

    def __init__(self, reason: str, failed: Mapping[int, str] | None = None) -> None:
        self.reason = reason
        self.failed: dict[int, str] = dict(failed or {})
        message = f"deposit failed: {reason}"
        if self.failed:
            message += " (" + "; ".join(
                f"node {i}: {why}" for i, why in sorted(self.failed.items())
            )
            message += ")"
        super().__init__(message, reason=reason, failed={str(k): v for k, v in self.failed.items()})


# --- gateway public HTTPS API (evault.gateway.api) ---
# EvaultError
# └── PublicRequestError    a public-API request the gateway cannot accept     400 bad_request
#     ├── DocumentTooLarge  a body over max_document_bytes (declared or counted) 413 too_large
#     └── BodyTimeout       the client stopped sending a request body           408 body_timeout


class PublicRequestError(EvaultError):
    """A request to the public API that is malformed in a way no field schema catches."""

    code = "bad_request"


class DocumentTooLarge(PublicRequestError):
    """A request body is over the gateway's limit; ``received`` is how far it got (or declared)."""

    code = "too_large"

    def __init__(self, limit_bytes: int, received: int, declared: bool) -> None:
        self.limit_bytes = limit_bytes
        self.received = received
        self.declared = declared
        how = "declares" if declared else "sent at least"
        super().__init__(
            f"the request body {how} {received} bytes, over this gateway's limit of "
            f"{limit_bytes} bytes",
            limit_bytes=limit_bytes,
            received=received,
        )


class BodyTimeout(PublicRequestError):
    """No byte of the request body arrived for ``idle_s`` seconds."""

    code = "body_timeout"

    def __init__(self, idle_s: float, received: int) -> None:
        self.idle_s = idle_s
        self.received = received
        super().__init__(
            f"no byte of the request body arrived for {idle_s:g} s "
            f"(after {received} bytes); the request was abandoned",
            idle_s=idle_s,
            received=received,
        )


class DepositCancelled(ObjectMissing):
    """A delete of the same object arrived while its deposit ran; the deposit was discarded."""

    def __init__(self, object_id: str) -> None:
        super().__init__(object_id)
        self.message = f"the deposit of object {object_id} was cancelled by a delete"
        self.args = (self.message,)


# --- client: the evault CLI (evault.client, evault.cli_client) ---
# ConfigError
# └── NotLoggedIn           no token stored for this client configuration
# TransportError
# └── GatewayUnreachable    no configured gateway answered (each URL with its reason)
# ProtocolError
# └── BadGatewayAnswer      a gateway answered something the public API forbids
# CryptoError
# └── ReceiptRejected       a receipt does not vouch for what the client holds
# FormatError
# └── PageFormatError       an HTML page breaks the minimal-client contract (docs/cli.md)
# EvaultError
# ├── GatewayRefused        a gateway answered a JSON error: HTTP status, its code, its sentence
# ├── ContentMismatch       bytes do not hash to (or are not as long as) what a receipt signs
# ├── BatchFailed           some items of a batch failed; each was reported on its own
# ├── NoLocalReceipt        the local receipt store holds no receipt for a document
# └── LocalFileError        a local file cannot be read or written (path, reason)


class NotLoggedIn(ConfigError):
    code = "not_logged_in"

    def __init__(self, token_file: str) -> None:
        self.token_file = token_file
        super().__init__(
            f"not logged in (no token in {token_file}): run `evault login` first",
            token_file=token_file,
        )


class GatewayUnreachable(TransportError):
    """Every configured gateway failed; ``attempts`` maps each URL to why."""

    code = "gateway_unreachable"

    def __init__(self, attempts: Mapping[str, str]) -> None:
        self.attempts = dict(attempts)
        tried = "; ".join(f"{url}: {why}" for url, why in self.attempts.items())
        super().__init__(
            f"no gateway answered ({tried})" if tried else "no gateway is configured",
            attempts=self.attempts,
        )


class BadGatewayAnswer(ProtocolError):
    code = "bad_gateway_answer"

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"the gateway {url} answered badly: {reason}", url=url, reason=reason)


class ReceiptRejected(CryptoError):
    """A receipt for ``what`` (a document and version, or a file) is not accepted: ``reason``."""

    code = "receipt_rejected"

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"the receipt for {what} is rejected: {reason}", what=what, reason=reason)


class PageFormatError(FormatError):
    code = "page_format_error"

    def __init__(self, page: str, reason: str) -> None:
        self.page = page
        self.reason = reason
        super().__init__(f"page {page}: {reason}", page=page, reason=reason)


class GatewayRefused(EvaultError):
    """The gateway answered ``status`` with the public API's error ``api_code`` and sentence."""

    code = "gateway_refused"

    def __init__(
        self, status: int, api_code: str, api_message: str, details: Mapping[str, Any] | None
    ) -> None:
        self.status = status
        self.api_code = api_code
        self.api_message = api_message
        super().__init__(
            f"the gateway refused: {api_message} (HTTP {status} {api_code})",
            status=status,
            api_code=api_code,
            api_message=api_message,
            api_details=dict(details or {}),
        )


class ContentMismatch(EvaultError):
    """``what`` does not match its receipt; sizes and hex SHA-256 digests as found."""

    code = "content_mismatch"

    def __init__(
        self,
        what: str,
        expected_sha256: str,
        actual_sha256: str | None,
        expected_size: int,
        actual_size: int,
    ) -> None:
        self.what = what
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256
        self.expected_size = expected_size
        self.actual_size = actual_size
        if actual_size != expected_size:
            problem = f"{actual_size} bytes instead of the {expected_size} its receipt signs"
        else:
            problem = f"SHA-256 {actual_sha256} instead of the receipt's {expected_sha256}"
        super().__init__(
            f"{what} does not match its receipt: {problem}",
            what=what,
            expected_sha256=expected_sha256,
            actual_sha256=actual_sha256,
            expected_size=expected_size,
            actual_size=actual_size,
        )


class BatchFailed(EvaultError):
    code = "batch_failed"

    def __init__(self, operation: str, failed: int, total: int, first: str) -> None:
        self.operation = operation
        self.failed = failed
        self.total = total
        message = (
            f"{operation} failed: {first}"
            if total == 1
            else f"{operation}: {failed} of {total} failed (first: {first})"
        )
        super().__init__(
            message,
            operation=operation,
            failed=failed,
            total=total,
            first=first,
        )


# --- ida: dispersal and fingerprints (evault.ida), continued ------------------------------------


class NoMatchingFingerprint(NoFingerprintQuorum, FingerprintMismatch):
    """No source holds the fingerprint vector whose hash the receipt signs.

    Both a ``NoFingerprintQuorum`` (no usable FV: retrieval cannot go on) and a
    ``FingerprintMismatch`` (every FV received contradicts the receipt).
    """

    code = "no_matching_fingerprint"

    def __init__(self, sources: int, distinct: int, expected_hex: str) -> None:
        super().__init__(best=0, need=1, sources=sources)
        self.message = (
            f"none of the {sources} sources holds the fingerprint vector the receipt signs "
            f"({distinct} different vectors received)"
        )
        self.args = (self.message,)
        self.details.update(expected=expected_hex, distinct=distinct)


class NoLocalReceipt(EvaultError):
    """The local receipt store holds no receipt for ``name`` (and ``version`` if given)."""

    code = "no_local_receipt"

    def __init__(self, name: str, version: int | None, store: str, hint: str = "") -> None:
        self.name = name
        self.version = version
        which = f"{name!r}" if version is None else f"{name!r} version {version}"
        super().__init__(
            f"no receipt for {which} in the receipt store {store}{hint}",
            name=name,
            version=version,
            store=store,
        )


class LocalFileError(EvaultError):
    """A local file or directory cannot be read or written: ``path`` and the system's reason."""

    code = "local_file_error"

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}", path=path, reason=reason)


# --- benchmarks: `evault bench vault` (src/evault/bench) ------------------------------------


class BenchError(EvaultError):
    """A benchmark could not run, or could not trust what it measured."""

    code = "bench_error"


class LoadGenFailed(BenchError):
    """A load-generator worker process failed, died, or did not answer in time."""

    code = "loadgen_failed"


class BenchChecksFailed(BenchError):
    """Simulated clients received answers that failed their checks (wrong hash, bad receipt,
    HTTP errors): the figures are written, but they are not figures of a working vault."""

    code = "bench_checks_failed"

    def __init__(self, failed: int, points: int, first: str) -> None:
        self.failed = failed
        self.points = points
        super().__init__(
            f"{failed} operation(s) in {points} benchmark point(s) failed their checks "
            f"(first: {first})",
            failed=failed,
            points=points,
            first=first,
        )


# --- confidentiality in the running system (issue 6): node key store, relays, client --------
# StorageError
# └── KeyConflict          a node refuses an unwrap key signed by another identity than the
#                          owner's registered one (first registration is trust on first use)
# CryptoError
# ├── NoUnwrapKey          no (usable) unwrap key is registered for this owner / key id
# └── KeySetupIncomplete   `evault keys init` reached fewer nodes than it needs


class KeyConflict(StorageError):
    """A node already holds unwrap keys of ``owner`` under another identity key."""

    code = "key_conflict"

    def __init__(self, owner: str, detail: str) -> None:
        self.owner = owner
        self.detail = detail
        super().__init__(
            f"the unwrap key of {owner!r} is refused: {detail}", owner=owner, detail=detail
        )


class NoUnwrapKey(CryptoError):
    """No unwrap key usable for this request is registered (``where`` says at whom)."""

    code = "no_unwrap_key"

    def __init__(self, owner: str, where: str, hint: str = "") -> None:
        self.owner = owner
        self.where = where
        super().__init__(
            f"no unwrap key of {owner!r} is registered {where}{hint}", owner=owner, where=where
        )


class KeySetupIncomplete(CryptoError):
    """Dealt unwrap-key shares did not reach every node; ``failed`` maps node to reason."""

    code = "key_setup_incomplete"

    def __init__(
        self,
        stored: int,
        nodes: int,
        failed: Mapping[int, str],
        hint: str = "run `evault keys init` again when they are back",
    ) -> None:
        self.stored = stored
        self.nodes = nodes
        self.failed = dict(failed)
        reasons = "; ".join(f"node {i}: {why}" for i, why in sorted(self.failed.items()))
        super().__init__(
            f"only {stored} of {nodes} nodes stored their unwrap-key share ({reasons}); {hint}",
            stored=stored,
            nodes=nodes,
            failed={str(k): v for k, v in self.failed.items()},
        )
