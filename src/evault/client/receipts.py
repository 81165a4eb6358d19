"""Receipts on the client side: parse, verify, export.

A receipt is the exact statement bytes (``evault.protocol.statement``, canonical JSON) and an
RSASSA-PSS signature over them (SHA-256, MGF1-SHA-256, 32-byte salt; DESIGN §4), made by k
nodes together.  The client trusts only the vault public key it was given out of band (the
client bundle of ``evault init``, or the registration page through ``evault extractkey``); it
never takes a key from the gateway it is checking.

:func:`verify_receipt` raises :class:`~evault.errors.ReceiptRejected` unless the signature
verifies *and* every field the caller knows matches (owner, name, version, size, sha256): a
valid signature over someone else's statement is not a receipt for this deposit.

Exported receipt files (``evault receipts export``, read by ``evault verify RECEIPT``) are JSON::

    {"format": "evault-receipt/v1",
     "statement": "<base64 of the signed bytes>", "signature": "<base64>",
     "vault": ..., "owner": ..., "name": ..., "version": ..., "size": ..., "sha256": ...,
     "deposited_at": ...}

Only ``statement`` and ``signature`` count; the other fields are copies for a human reader and
are checked against the statement when read, so an edited copy cannot mislead.  A bundle of
several receipts is ``{"format": "evault-receipts/v1", "receipts": [<receipt>, ...]}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from evault.errors import ConfigError, FormatError, ReceiptRejected
from evault.protocol.statement import Statement

RECEIPT_FORMAT: Final = "evault-receipt/v1"
BUNDLE_FORMAT: Final = "evault-receipts/v1"
PSS_SALT_BYTES: Final = 32
_INFO_FIELDS: Final = ("vault", "owner", "name", "version", "size", "sha256", "deposited_at")


# --- the vault public key ---------------------------------------------------------------------


@dataclass(frozen=True)
class VaultKey:
    """The vault's RSA public key and a fingerprint a human can compare out of band."""

    key: rsa.RSAPublicKey
    pem: bytes
    source: str

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER SubjectPublicKeyInfo, hex (as ``openssl pkey -pubin -outform
        DER | sha256sum`` prints it)."""
        der = self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()

    def same_key(self, other: VaultKey) -> bool:
        return self.key.public_numbers() == other.key.public_numbers()


def parse_vault_key(pem: bytes, *, source: str) -> VaultKey:
    """A PEM RSA public key; FormatError naming ``source`` otherwise."""
    try:
        loaded = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise FormatError(f"{source} does not hold a PEM public key ({exc})") from None
    if not isinstance(loaded, rsa.RSAPublicKey):
        raise FormatError(f"{source} holds a public key that is not RSA")
    if loaded.key_size < 2048:
        raise FormatError(f"{source} holds a {loaded.key_size}-bit RSA key; evault uses >= 2048")
    return VaultKey(key=loaded, pem=pem, source=source)


def load_vault_key(path: Path) -> VaultKey:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the vault public key {path}: {exc.strerror}") from None
    return parse_vault_key(pem, source=str(path))


# --- receipts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """Signed statement bytes, the signature, and the parsed statement."""

    statement_bytes: bytes
    signature: bytes
    statement: Statement

    @classmethod
    def from_parts(cls, statement_bytes: bytes, signature: bytes) -> Receipt:
        """Parse the statement (FormatError if it breaks its spec); nothing is verified yet."""
        return cls(bytes(statement_bytes), bytes(signature), Statement.from_bytes(statement_bytes))

    @classmethod
    def from_base64(cls, statement_b64: object, signature_b64: object) -> Receipt:
        return cls.from_parts(
            _b64decode(statement_b64, "statement"), _b64decode(signature_b64, "signature")
        )

    @property
    def label(self) -> str:
        return f"{self.statement.name!r} version {self.statement.version}"

    def to_json_obj(self) -> dict[str, Any]:
        s = self.statement
        return {
            "format": RECEIPT_FORMAT,
            "statement": base64.b64encode(self.statement_bytes).decode("ascii"),
            "signature": base64.b64encode(self.signature).decode("ascii"),
            "vault": s.vault,
            "owner": s.owner,
            "name": s.name,
            "version": s.version,
            "size": s.size,
            "sha256": s.sha256,
            "deposited_at": s.deposited_at,
        }

    @classmethod
    def from_json_obj(cls, obj: object, *, where: str = "receipt") -> Receipt:
        if not isinstance(obj, dict):
            raise FormatError(f"{where} must be a JSON object with 'statement' and 'signature'")
        fmt = obj.get("format", RECEIPT_FORMAT)
        if fmt != RECEIPT_FORMAT:
            raise FormatError(f"{where} has format {fmt!r}, this evault reads {RECEIPT_FORMAT!r}")
        if "statement" not in obj or "signature" not in obj:
            raise FormatError(f"{where} must have 'statement' and 'signature' (base64)")
        receipt = cls.from_base64(obj["statement"], obj["signature"])
        # The copies must agree with the signed statement; otherwise someone edited the file.
        signed = receipt.statement.to_json_obj()
        for key in _INFO_FIELDS:
            if key in obj and obj[key] != signed[key]:
                raise FormatError(
                    f"{where}: field {key!r} says {obj[key]!r} but the signed statement says "
                    f"{signed[key]!r}"
                )
        return receipt


def _b64decode(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"the receipt's {what} must be a base64 string")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"the receipt's {what} is not valid base64 ({exc})") from None


def receipts_to_json(receipts: Sequence[Receipt]) -> str:
    """One receipt as a receipt object, several as a bundle (module docstring)."""
    if len(receipts) == 1:
        doc: dict[str, Any] = receipts[0].to_json_obj()
    else:
        doc = {"format": BUNDLE_FORMAT, "receipts": [r.to_json_obj() for r in receipts]}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def receipts_from_json(text: str | bytes, *, source: str) -> list[Receipt]:
    """Read an exported receipt or bundle; FormatError naming ``source`` if it is not one."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{source} is not JSON ({exc})") from None
    if isinstance(doc, dict) and doc.get("format") == BUNDLE_FORMAT:
        items = doc.get("receipts")
        if not isinstance(items, list) or not items:
            raise FormatError(f"{source}: a receipt bundle needs a non-empty 'receipts' list")
        return [
            Receipt.from_json_obj(item, where=f"{source} receipt {i}")
            for i, item in enumerate(items, start=1)
        ]
    return [Receipt.from_json_obj(doc, where=source)]


# --- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What the caller knows the receipt must say; None means "not known, not checked"."""

    owner: str | None = None
    name: str | None = None
    version: int | None = None
    size: int | None = None
    sha256: str | None = None


def verify_signature(key: VaultKey, receipt: Receipt, *, what: str | None = None) -> None:
    """Raise ReceiptRejected unless the signature verifies under the vault key (RSA-PSS)."""
    try:
        key.key.verify(
            receipt.signature,
            receipt.statement_bytes,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_BYTES),
            hashes.SHA256(),
        )
    except _CryptoInvalidSignature:
        raise ReceiptRejected(
            what or receipt.label,
            f"its signature does not verify with the vault public key {key.source} "
            f"(fingerprint {key.fingerprint[:16]}...)",
        ) from None


def verify_receipt(
    key: VaultKey, receipt: Receipt, expected: Expected, *, what: str | None = None
) -> None:
    """Signature first, then every known field; the first problem raises ReceiptRejected."""
    label = what or receipt.label
    verify_signature(key, receipt, what=label)
    s = receipt.statement
    checks: list[tuple[str, object, object]] = [
        ("owner", expected.owner, s.owner),
        ("name", expected.name, s.name),
        ("version", expected.version, s.version),
        ("size", expected.size, s.size),
        ("sha256", expected.sha256.lower() if expected.sha256 else None, s.sha256),
    ]
    for field, want, got in checks:
        if want is not None and want != got:
            raise ReceiptRejected(label, f"it signs {field} {got!r}, expected {want!r}")
