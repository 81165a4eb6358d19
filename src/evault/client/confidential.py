"""Confidential documents on the client: identity key, unwrap keys, encrypted deposit and
decrypting retrieval (DESIGN §7; paper §2.3.2 and §4.2; docs/security-model.md).

Identity key (no key material has to live at the client)
    The client's Ed25519 identity key signs its unwrap keys and every unwrap request.  It is
    *derived*, never stored: seed = Argon2id(key passphrase, salt = the first 16 bytes of a
    tagged hash of ``[vault, user]``), 32 bytes, with the fixed parameters
    :data:`IDENTITY_KDF`.  The key passphrase is **not** the log-in password: the gateway
    sees the log-in password at every log-in (and the web UI sends it in a form), so a key
    derived from it would be the gateway's too.  The key passphrase is never sent anywhere.

Unwrap key (``evault keys init``, :func:`init_unwrap_key`)
    Deal x k-of-n (Feldman), seal share i to node i's X25519 key from the client bundle (not
    from the gateway), sign a :class:`~evault.protocol.node_api.KeyCertificate` naming the
    commitments, relay everything through ``PUT /api/v1/keys``, require that every node
    stored its share, and keep the certificate (public) in a local file.  x is never written
    anywhere and goes out of scope when the function returns (Python cannot promise to wipe
    memory; the process ends soon after).

Encrypted deposit (:func:`deposit_encrypted`)
    A fresh random 256-bit file key, wrapped under Y (hashed ElGamal) bound to
    ``(vault, owner, name, version 0)``; the document is encrypted as it is read (evault
    STREAM v1, the wrapped key in its header) and streamed to the gateway with
    ``Evault-Encrypted: 1``.  Its exact size is known in advance, its SHA-256 only once sent:
    so the receipt is checked against the hash of the ciphertext computed while streaming.
    *Why version 0*: the version is assigned by the gateway when the deposit begins, after the
    ciphertext (and with it the wrap) is fixed; binding to a guessed version would race with
    other deposits.  The receipt binds (name, version) to the ciphertext's SHA-256, and the
    client checks the receipt, so a version swap is caught there; the wrap's binding to
    (vault, owner, name) stops a wrapped key from being replayed under another name.

Decrypting retrieval (:func:`retrieve_decrypted`)
    The ciphertext streams in, hashed as it comes; once its header is read, the wrapped key
    is unwrapped: blind c1 with a fresh ρ, sign the request with the identity key, relay it
    (``POST /api/v1/unwrap``), verify every node's Chaum–Pedersen proof against Y_i from the
    certificate, name and exclude bad ones, combine k, remove ρ·Y, open the wrap.  The
    plaintext is decrypted chunk by chunk into a temporary file next to the destination,
    which is renamed only once every chunk authenticated *and* the ciphertext matches its
    receipt; otherwise it is deleted and nothing appears at the destination.

Trust in the certificate (hence in Y and the Y_i)
    A certificate is used only if it verifies under the identity key derived here, or if it
    is in the local file (written by ``keys init`` or after such a check).  A gateway that
    served forged commitments could otherwise make the client wrap file keys under a key the
    gateway holds.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import nacl.signing
from argon2.low_level import Type as Argon2Type
from argon2.low_level import hash_secret_raw

from evault.client.gateway import GatewaySession
from evault.client.transfer import (
    ContentCheck,
    Deposited,
    DepositItem,
    Progress,
    Retrieved,
    RetrieveItem,
    VaultClient,
    deposit_receipt,
    document_chunks,
    file_chunks,
    hashed_as_sent,
    trusted_receipt,
    write_atomically,
)
from evault.crypto.feldman import deal_unwrap_key, seal_dealing
from evault.crypto.group import Element, RandomBytes
from evault.crypto.stream import (
    DEFAULT_CHUNK_BYTES,
    ciphertext_size,
    decrypt_stream_body,
    encrypt_stream,
    read_stream_header,
)
from evault.crypto.unwrap import (
    FILE_KEY_BYTES,
    WRAPPED_KEY_BYTES,
    PartialUnwrap,
    RecoveredKey,
    WrapContext,
    WrappedKey,
    blind,
    make_unwrap_request,
    recover_file_key,
    sign_unwrap_request,
    wrap_file_key,
)
from evault.encoding import TAGS, canonical_json, tagged_hash
from evault.errors import (
    BadGatewayAnswer,
    ConfigError,
    ContentMismatch,
    DecryptionError,
    EvaultError,
    FormatError,
    InvalidPartialUnwrap,
    InvalidSignature,
    KeySetupIncomplete,
    NotEnoughPartialUnwraps,
    NoUnwrapKey,
    ReceiptRejected,
)
from evault.protocol.node_api import KeyCertificate

#: The version of the wrap context's ``version`` field for every deposit (module docstring).
UNVERSIONED: Final = 0
KEY_FILE_FORMAT: Final = "evault-unwrap-keys/v1"


# --- the identity key --------------------------------------------------------------------------


@dataclass(frozen=True)
class Argon2idParams:
    """Argon2id cost parameters (RFC 9106 §4); part of the identity derivation's definition."""

    time_cost: int
    memory_cost_kib: int
    parallelism: int


#: Identity derivation v1: RFC 9106's second recommended option (t=3, 64 MiB, p=4 there; p=1
#: here so that every client gets the same key whatever its core count allows).
IDENTITY_KDF: Final = Argon2idParams(time_cost=3, memory_cost_kib=64 * 1024, parallelism=1)
MIN_PASSPHRASE_CHARS: Final = 8


def identity_salt(vault: str, owner: str) -> bytes:
    """16 bytes (RFC 9106's salt length), unique per (vault, user): the same passphrase gives
    unrelated keys elsewhere.  16 is also what libsodium's Argon2id takes, so the derivation
    can be checked against an independent implementation."""
    return tagged_hash(TAGS["identity-salt"], canonical_json([vault, owner]))[:16]


def derive_identity(
    passphrase: str, *, vault: str, owner: str, params: Argon2idParams = IDENTITY_KDF
) -> nacl.signing.SigningKey:
    """The user's Ed25519 identity key, from the key passphrase (module docstring)."""
    if not isinstance(passphrase, str):
        raise TypeError("passphrase: expected str")
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise ConfigError(
            f"the key passphrase must have at least {MIN_PASSPHRASE_CHARS} characters"
        )
    if not vault or not owner:
        raise ValueError("vault, owner: expected non-empty strings")
    seed = hash_secret_raw(
        passphrase.encode("utf-8"),
        identity_salt(vault, owner),
        time_cost=params.time_cost,
        memory_cost=params.memory_cost_kib,
        parallelism=params.parallelism,
        hash_len=32,
        type=Argon2Type.ID,
    )
    return nacl.signing.SigningKey(seed)


class IdentitySource:
    """Derives the identity key once, on first use, from a passphrase asked for lazily
    (a retrieval batch needs it only if one of its documents is encrypted); thread-safe."""

    def __init__(
        self,
        ask_passphrase: Callable[[], str],
        *,
        vault: str,
        owner: str,
        params: Argon2idParams = IDENTITY_KDF,
    ) -> None:
        self._ask = ask_passphrase
        self.vault = vault
        self.owner = owner
        self._params = params
        self._lock = threading.Lock()
        self._key: nacl.signing.SigningKey | None = None

    def __call__(self) -> nacl.signing.SigningKey:
        with self._lock:
            if self._key is None:
                self._key = derive_identity(
                    self._ask(), vault=self.vault, owner=self.owner, params=self._params
                )
            return self._key


# --- the nodes' sealing keys and the local certificate file -------------------------------------


def load_seal_keys(path: Path) -> dict[int, bytes]:
    """``{node index: X25519 public key}`` from the client bundle's ``seal-keys.json``."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"the nodes' sealing keys {path} do not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read the nodes' sealing keys {path}: {exc}") from None
    keys: dict[int, bytes] = {}
    if isinstance(doc, dict):
        for index, value in doc.items():
            try:
                raw = bytes.fromhex(value) if isinstance(value, str) else b""
                node = int(index)
            except ValueError:
                raw, node = b"", 0
            if len(raw) != 32 or node < 1:
                raise ConfigError(f"{path}: entry {index!r} is not a node index and 32-byte key")
            keys[node] = raw
    if not keys or sorted(keys) != list(range(1, len(keys) + 1)):
        raise ConfigError(f"{path}: expected one sealing key for each node 1..n")
    return keys


class CertificateFile:
    """The local list of the user's key certificates (public data; JSON, written atomically).

    ``{"format": "evault-unwrap-keys/v1", "certificates": ["<base64>", ...]}``.  A
    certificate is added only after its signature was checked against the identity key.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> list[KeyCertificate]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"cannot read the key certificates {self.path}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
            raise ConfigError(f"{self.path} is not an {KEY_FILE_FORMAT} file")
        out = []
        for text in doc.get("certificates", []):
            try:
                cert = KeyCertificate.from_bytes(base64.b64decode(text, validate=True))
                cert.verify()
            except (binascii.Error, ValueError, TypeError, EvaultError) as exc:
                raise ConfigError(f"{self.path}: a certificate is damaged ({exc})") from None
            out.append(cert)
        return out

    def add(self, cert: KeyCertificate) -> None:
        with self._lock:
            certs = self.load()
            if any(c.to_bytes() == cert.to_bytes() for c in certs):
                return
            certs.append(cert)
            doc = {
                "format": KEY_FILE_FORMAT,
                "certificates": [base64.b64encode(c.to_bytes()).decode() for c in certs],
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)

    def find(self, vault: str, owner: str, key_id: Element | None = None) -> KeyCertificate | None:
        """The newest certificate of (vault, owner), or the one of ``key_id``."""
        matching = [
            (c.issued_at, position, c)
            for position, c in enumerate(self.load())
            if c.vault == vault and c.owner == owner and (key_id is None or c.key_id == key_id)
        ]
        # Newest by issue time; of two issued in the same second, the one added last.
        return max(matching, key=lambda m: m[:2])[2] if matching else None


# --- keys init ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySetup:
    certificate: KeyCertificate
    created: dict[int, bool]


def check_threshold(threshold: int, nodes: int) -> None:
    """A minority of nodes must not be able to unwrap (paper §4.2): n/2 < k ≤ n."""
    if not nodes // 2 < threshold <= nodes:
        raise ConfigError(
            f"an unwrap key needs a threshold k with {nodes // 2} < k <= {nodes} "
            f"(got {threshold}): a minority of the {nodes} nodes must not be able to unwrap"
        )


def init_unwrap_key(
    session: GatewaySession,
    *,
    vault: str,
    owner: str,
    threshold: int,
    seal_keys: Mapping[int, bytes],
    identity: nacl.signing.SigningKey,
    issued_at: int,
    rng: RandomBytes = os.urandom,
) -> KeySetup:
    """Deal, seal, certify and register a fresh unwrap key (module docstring).

    Raises ``KeySetupIncomplete`` unless every node stored its share.
    """
    nodes = len(seal_keys)
    check_threshold(threshold, nodes)
    dealing = deal_unwrap_key(threshold=threshold, nodes=nodes, rng=rng)
    sealed = seal_dealing(
        dealing, vault=vault, owner=owner, node_public_keys=seal_keys, identity=identity
    )
    certificate = KeyCertificate.sign(
        vault=vault,
        owner=owner,
        nodes=nodes,
        commitments=dealing.commitments,
        issued_at=issued_at,
        identity=identity,
    )
    del dealing  # the shares (and so x) go no further than the sealed boxes
    answer = session.put_keys(sealed, certificate.to_bytes())
    stored = answer.get("stored")
    failed = answer.get("failed")
    if not isinstance(stored, dict) or not isinstance(failed, dict):
        raise BadGatewayAnswer("the gateway", "the key registration answer is malformed")
    created = {int(k): bool(v) for k, v in stored.items() if str(k).isdigit()}
    problems = {int(k): str(v) for k, v in failed.items() if str(k).isdigit()}
    for node in range(1, nodes + 1):
        if node not in created and node not in problems:
            problems[node] = "not reported by the gateway"
    if problems:
        if any("key_conflict" in why or "another identity" in why for why in problems.values()):
            raise KeySetupIncomplete(
                len(created),
                nodes,
                problems,
                "some nodes hold your keys under another identity key: use the key passphrase "
                "you used the first time",
            )
        raise KeySetupIncomplete(len(created), nodes, problems)
    if answer.get("key") != certificate.key_id.hex():
        raise BadGatewayAnswer("the gateway", "the nodes report another key than the one dealt")
    return KeySetup(certificate, created)


def fetch_certificates(
    session: GatewaySession, *, vault: str, owner: str, identity_public_key: bytes
) -> list[tuple[KeyCertificate, int]]:
    """The user's certificates the nodes hold that verify under the identity key, each with
    the number of nodes that listed it; newest first.  Anything else is ignored."""
    answer = session.keys()
    per_node = answer.get("certificates")
    if not isinstance(per_node, dict):
        raise BadGatewayAnswer("the gateway", "the key listing is malformed")
    count: dict[bytes, int] = {}
    found: dict[bytes, KeyCertificate] = {}
    for texts in per_node.values():
        if not isinstance(texts, list):
            continue
        for raw_text in set(t for t in texts if isinstance(t, str)):
            try:
                cert = KeyCertificate.from_bytes(base64.b64decode(raw_text, validate=True))
                cert.verify(identity_public_key)
            except (binascii.Error, ValueError, FormatError, InvalidSignature):
                continue
            if cert.vault != vault or cert.owner != owner:
                continue
            found[cert.to_bytes()] = cert
            count[cert.to_bytes()] = count.get(cert.to_bytes(), 0) + 1
    ordered = sorted(found.values(), key=lambda c: c.issued_at, reverse=True)
    return [(c, count[c.to_bytes()]) for c in ordered]


@dataclass
class KeyResolver:
    """Finds the certificate to wrap under (deposit) or of a given key (retrieval): the local
    file first, else the nodes' listing checked against the identity key (then kept)."""

    session: GatewaySession
    vault: str
    owner: str
    local: CertificateFile
    identity: Callable[[], nacl.signing.SigningKey]

    def _from_nodes(self, key_id: Element | None) -> KeyCertificate | None:
        identity = self.identity()
        for cert, nodes in fetch_certificates(
            self.session,
            vault=self.vault,
            owner=self.owner,
            identity_public_key=bytes(identity.verify_key),
        ):
            if (key_id is None or cert.key_id == key_id) and nodes >= cert.threshold:
                self.local.add(cert)
                return cert
        return None

    def current(self) -> KeyCertificate:
        cert = self.local.find(self.vault, self.owner) or self._from_nodes(None)
        if cert is None:
            raise NoUnwrapKey(self.owner, "at the vault", "; run `evault keys init` first")
        return cert

    def for_key(self, key_id: Element) -> KeyCertificate:
        cert = self.local.find(self.vault, self.owner, key_id) or self._from_nodes(key_id)
        if cert is None:
            raise NoUnwrapKey(
                self.owner,
                f"under the key {key_id.hex()[:16]}… that this document was encrypted to",
                " (or no certificate of it verifies under your identity key: check the key "
                "passphrase)",
            )
        return cert


# --- encrypted deposit ----------------------------------------------------------------------------


def deposit_encrypted(
    client: VaultClient,
    item: DepositItem,
    progress: Progress,
    *,
    certificate: KeyCertificate,
    rng: RandomBytes = os.urandom,
) -> Deposited:
    """Encrypt ``item`` as it is read and deposit the ciphertext (module docstring)."""
    if certificate.owner != client.owner:
        raise ValueError("certificate: belongs to another owner")
    size = item.path.stat().st_size
    progress.file_started(item.name, size)
    total = ciphertext_size(
        size, chunk_bytes=DEFAULT_CHUNK_BYTES, key_material_bytes=WRAPPED_KEY_BYTES
    )
    file_key = rng(FILE_KEY_BYTES)
    wrapped = wrap_file_key(
        file_key,
        certificate.key_id,
        WrapContext(certificate.vault, client.owner, item.name, UNVERSIONED),
        rng=rng,
    )
    seen: dict[str, Any] = {}

    def body() -> Iterator[bytes]:
        # The receipt will sign the ciphertext, so it is the ciphertext that is hashed; a
        # generator, so that nothing (not even the stream's random salt) is drawn before use.
        ciphertext = encrypt_stream(
            file_chunks(item.path, size, progress),
            file_key,
            rng=rng,
            key_material=wrapped.to_bytes(),
        )
        yield from hashed_as_sent(ciphertext, seen)

    answer, gateway = client.session.deposit(
        item.name, body, size=total, sha256=None, encrypted=True
    )
    if seen.get("size") != total:
        raise ContentMismatch(
            f"file {item.path} (it changed while it was encrypted and deposited)",
            "",
            seen.get("sha256"),
            total,
            seen.get("size", 0),
        )
    receipt = deposit_receipt(client, item.name, answer, gateway, size=total, sha256=seen["sha256"])
    if not receipt.statement.encrypted:
        raise ReceiptRejected(f"{item.name!r}", "the statement does not say it is encrypted")
    client.receipts.put(receipt, "deposit")
    return Deposited.from_answer(item, receipt, gateway, answer)


# --- the blinded unwrap -------------------------------------------------------------------------


@dataclass(frozen=True)
class Unwrapped:
    """The file key and what the nodes did: ``used`` for the combination, ``bad`` caught by
    their proofs, ``refused`` / ``failed`` as the gateway reported them."""

    key: RecoveredKey = field(repr=False)
    refused: dict[int, str]
    failed: dict[int, str]

    @property
    def bad(self) -> Mapping[int, str]:
        return self.key.bad


def _node_map(value: object) -> dict[int, str]:
    if not isinstance(value, dict):
        return {}
    return {int(k): str(v) for k, v in value.items() if str(k).isdigit()}


def unwrap_file_key(
    session: GatewaySession,
    wrapped: WrappedKey,
    context: WrapContext,
    *,
    certificate: KeyCertificate,
    identity: nacl.signing.SigningKey,
    now: float,
    rng: RandomBytes = os.urandom,
) -> Unwrapped:
    """Blind, sign, relay, verify every proof, combine k, unblind, open (module docstring).

    Raises ``NotEnoughPartialUnwraps`` naming every node that lied, refused or failed, or
    ``DecryptionError`` if the wrap does not open (wrong name, or a tampered header).
    """
    if certificate.key_id != wrapped.key_id:
        raise ValueError("certificate: is for another key than the wrapped key")
    blinding = blind(wrapped, rng=rng)
    request = make_unwrap_request(
        blinding, vault=certificate.vault, owner=certificate.owner, issued_at=int(now), rng=rng
    )
    answer = session.unwrap(sign_unwrap_request(request, identity))
    partials: list[PartialUnwrap] = []
    garbled: dict[int, str] = {}
    raw = answer.get("partials")
    for node_text, text in raw.items() if isinstance(raw, dict) else []:
        if not str(node_text).isdigit():
            continue
        node = int(node_text)
        try:
            data = base64.b64decode(str(text), validate=True)
            partials.append(PartialUnwrap.from_bytes(data, node=node))
        except (binascii.Error, ValueError) as exc:
            garbled[node] = f"not base64: {exc}"
        except InvalidPartialUnwrap as exc:
            garbled[node] = exc.reason
    refused, failed = _node_map(answer.get("refused")), _node_map(answer.get("failed"))
    try:
        key = recover_file_key(
            wrapped,
            context,
            blinding=blinding,
            request=request,
            commitments=certificate.commitments,
            partials=partials,
        )
    except NotEnoughPartialUnwraps as exc:
        reasons = {**failed, **refused, **garbled, **exc.bad}
        raise NotEnoughPartialUnwraps(exc.have, exc.need, reasons) from None
    if garbled:
        key = RecoveredKey(key.file_key, key.used, {**garbled, **key.bad})
    return Unwrapped(key, refused, failed)


# --- decrypting retrieval -----------------------------------------------------------------------


@dataclass(frozen=True)
class Decrypted:
    retrieved: Retrieved
    plaintext_bytes: int
    unwrap_used: tuple[int, ...]
    unwrap_bad: dict[int, str]


def retrieve_decrypted(
    client: VaultClient,
    item: RetrieveItem,
    progress: Progress,
    *,
    keys: KeyResolver,
    clock: Callable[[], float],
    rng: RandomBytes = os.urandom,
) -> Decrypted:
    """Retrieve an encrypted version, check it against its receipt and decrypt it into
    ``item.dest`` atomically (module docstring)."""
    receipt, source = trusted_receipt(client, item.name, item.version)
    s = receipt.statement
    if not s.encrypted:
        raise ValueError("item: the receipt says this version is not encrypted")
    progress.file_started(item.name, s.size)
    what = f"the retrieved document {s.name!r} version {s.version}"
    with client.session.document(s.name, s.version) as answer:
        received = document_chunks(answer, s.name, s.version)
        # The receipt signs the ciphertext: it is checked as it arrives, the plaintext written.
        check = ContentCheck(what, s.size, s.sha256)
        plain_bytes = 0

        def ciphertext() -> Iterator[bytes]:
            for chunk in received:
                check.update(chunk)
                progress.advance(len(chunk))
                yield chunk

        header, body = read_stream_header(ciphertext())
        try:
            wrapped = WrappedKey.from_bytes(header.key_material)
        except (FormatError, EvaultError) as exc:
            raise DecryptionError(
                f"the stream header holds no usable wrapped key ({exc})"
            ) from None
        certificate = keys.for_key(wrapped.key_id)
        unwrapped = unwrap_file_key(
            client.session,
            wrapped,
            WrapContext(certificate.vault, client.owner, s.name, UNVERSIONED),
            certificate=certificate,
            identity=keys.identity(),
            now=clock(),
            rng=rng,
        )

        def plaintext() -> Iterator[bytes]:
            nonlocal plain_bytes
            for piece in decrypt_stream_body(header, body, unwrapped.key.file_key):
                plain_bytes += len(piece)
                yield piece

        write_atomically(item.dest, plaintext(), finish=check.verify)
        return Decrypted(
            Retrieved(item, receipt, source, answer.url),
            plain_bytes,
            unwrapped.key.used,
            {**unwrapped.failed, **unwrapped.refused, **dict(unwrapped.bad)},
        )


__all__ = [
    "IDENTITY_KDF",
    "UNVERSIONED",
    "Argon2idParams",
    "CertificateFile",
    "Decrypted",
    "IdentitySource",
    "KeyResolver",
    "KeySetup",
    "Unwrapped",
    "check_threshold",
    "deposit_encrypted",
    "derive_identity",
    "fetch_certificates",
    "identity_salt",
    "init_unwrap_key",
    "load_seal_keys",
    "retrieve_decrypted",
    "unwrap_file_key",
]
