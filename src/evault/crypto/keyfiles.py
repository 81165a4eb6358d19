"""Threshold-RSA keys on disk: the public key (PEM and JSON) and each node's key share.

Files (all UTF-8; every read is size-capped and fully validated; failures are ``KeyFileError``
naming the file)::

    vault-public.pem     SubjectPublicKeyInfo PEM of (N, e): what ``openssl``/WebCrypto read.
    threshold.json       ThresholdPublicKey.to_json(): N, e, n, k, v, v_1..v_n (canonical JSON).
    signing-share.json   one node's key share, mode 0600, optionally encrypted (below).

Key share file, version 1 (a JSON object; big integers are lowercase hex)::

    {
      "format": "evault-threshold-rsa-key-share",
      "version": 1,
      "key_id": "<64 hex: ThresholdPublicKey.key_id>",
      "index": <signer index, 1..n>,
      "secret_bytes": <L: length of the secret encoding, a multiple of 128>,
      "protection": "none" | "scrypt-aes-256-gcm",
      // protection = "none":
      "secret": "<2L hex: s_i, big-endian, zero-padded to L bytes>"
      // protection = "scrypt-aes-256-gcm":
      "kdf": {"name": "scrypt", "log2_n": 17, "r": 8, "p": 1, "salt": "<32 hex>"},
      "nonce": "<24 hex>",
      "ciphertext": "<hex: AES-256-GCM(key, nonce, s_i as L bytes, aad) with its 16-byte tag>"
    }

With a passphrase, key = scrypt(passphrase, salt, N = 2^log2_n, r, p, 32 bytes) (RFC 7914;
2^17, 8, 1 is 128 MiB and about half a second, OWASP's recommendation), and the AEAD's
associated data is the canonical JSON (RFC 8785) of every field except ``ciphertext``, so the
index, key id and KDF parameters cannot be altered without the tag failing.  A reader accepts
log2_n in 10..22, r in 1..32 and p in 1..16.  Padding the secret to a multiple of 128 bytes keeps
the ciphertext length from saying anything about s_i.

Share files are written atomically (temporary file, fsync, rename, fsync of the directory) with
mode 0600 and are refused on reading if group or others may read them, as OpenSSH does.

Version history: 1 — first version.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from evault.crypto.numbers import DEFAULT_RNG, RandomSource, random_bits
from evault.crypto.threshold_rsa import KeyShare, ThresholdPublicKey
from evault.encoding.canonical import canonical_json
from evault.errors import FormatError, KeyFileError

__all__ = [
    "DEFAULT_SCRYPT_LOG2_N",
    "read_key_share",
    "read_public_key",
    "read_threshold_public",
    "write_key_share",
    "write_public_key",
    "write_threshold_public",
]

SHARE_FORMAT = "evault-threshold-rsa-key-share"
SHARE_VERSION = 1
DEFAULT_SCRYPT_LOG2_N = 17
_SCRYPT_R = 8
_SCRYPT_P = 1
_LOG2_N_RANGE = range(10, 23)
_R_RANGE = range(1, 33)
_P_RANGE = range(1, 17)
_MAX_FILE_BYTES = 256 * 1024
_PAD = 128


def _fail(path: Path, reason: str, **details: Any) -> KeyFileError:
    return KeyFileError(f"{path}: {reason}", path=str(path), **details)


def _read_capped(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _fail(path, f"{what} file does not exist") from None
    except OSError as exc:
        raise _fail(path, f"cannot read {what} file: {exc.strerror or exc}") from exc
    if len(data) > _MAX_FILE_BYTES:
        raise _fail(path, f"{what} file is larger than {_MAX_FILE_BYTES} bytes")
    return data


def _write_atomic(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    """Write ``data`` to ``path`` so a crash leaves either the old file or the new one."""
    path = Path(path)
    if not overwrite and path.exists():
        raise _fail(path, "already exists; refusing to overwrite a key file")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _fail(path, f"cannot write key file: {exc.strerror or exc}") from exc


# ----------------------------------------------------------------------------- public key


def write_public_key(path: Path, public: ThresholdPublicKey, *, overwrite: bool = False) -> None:
    """Write the SubjectPublicKeyInfo PEM of (N, e) (mode 0644)."""
    _write_atomic(Path(path), public.to_pem(), mode=0o644, overwrite=overwrite)


def read_public_key(path: Path) -> rsa.RSAPublicKey:
    """Read a PEM RSA public key (for ``verify_signature``)."""
    path = Path(path)
    data = _read_capped(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise _fail(path, f"not a PEM public key: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise _fail(path, "not an RSA public key")
    return key


def write_threshold_public(
    path: Path, public: ThresholdPublicKey, *, overwrite: bool = False
) -> None:
    """Write the full threshold public key (verification keys included) as canonical JSON."""
    _write_atomic(Path(path), public.to_json() + b"\n", mode=0o644, overwrite=overwrite)


def read_threshold_public(path: Path, *, pem_path: Path | None = None) -> ThresholdPublicKey:
    """Read ``threshold.json``; with ``pem_path``, also check that the PEM holds the same (N, e)."""
    path = Path(path)
    data = _read_capped(path, "threshold public key")
    try:
        public = ThresholdPublicKey.from_json(data)
    except FormatError as exc:
        raise _fail(path, f"not a valid threshold public key: {exc}") from exc
    if pem_path is not None:
        numbers = read_public_key(Path(pem_path)).public_numbers()
        if (numbers.n, numbers.e) != (public.n_modulus, public.e):
            raise _fail(Path(pem_path), f"holds a different RSA key than {path}", other=str(path))
    return public


# ----------------------------------------------------------------------------- key shares


def _scrypt_key(passphrase: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << log2_n, r=r, p=p).derive(passphrase)


def write_key_share(
    path: Path,
    share: KeyShare,
    passphrase: bytes | None,
    *,
    scrypt_log2_n: int = DEFAULT_SCRYPT_LOG2_N,
    rng: RandomSource | None = None,
    overwrite: bool = False,
) -> None:
    """Write a key share file readable only by its owner (mode 0600), encrypted at rest when a
    passphrase is given.  ``scrypt_log2_n`` lowers the KDF cost only for tests."""
    if not isinstance(share, KeyShare):
        raise TypeError("share: expected a KeyShare")
    if passphrase is not None and not isinstance(passphrase, bytes):
        raise TypeError("passphrase: expected bytes or None")
    if passphrase is not None and not passphrase:
        raise ValueError("passphrase: must not be empty (pass None for no encryption)")
    if scrypt_log2_n not in _LOG2_N_RANGE:
        raise ValueError(f"scrypt_log2_n: expected {_LOG2_N_RANGE.start}..{_LOG2_N_RANGE.stop - 1}")
    rng = DEFAULT_RNG if rng is None else rng
    secret_bytes = max(_PAD, -(-((share.secret.bit_length() + 7) // 8) // _PAD) * _PAD)
    secret = share.secret.to_bytes(secret_bytes, "big")
    doc: dict[str, Any] = {
        "format": SHARE_FORMAT,
        "version": SHARE_VERSION,
        "key_id": share.key_id.hex(),
        "index": share.index,
        "secret_bytes": secret_bytes,
    }
    if passphrase is None:
        doc["protection"] = "none"
        doc["secret"] = secret.hex()
    else:
        salt = random_bits(rng, 128).to_bytes(16, "big")
        nonce = random_bits(rng, 96).to_bytes(12, "big")
        doc["protection"] = "scrypt-aes-256-gcm"
        doc["kdf"] = {
            "name": "scrypt",
            "log2_n": scrypt_log2_n,
            "r": _SCRYPT_R,
            "p": _SCRYPT_P,
            "salt": salt.hex(),
        }
        doc["nonce"] = nonce.hex()
        key = _scrypt_key(passphrase, salt, scrypt_log2_n, _SCRYPT_R, _SCRYPT_P)
        doc["ciphertext"] = AESGCM(key).encrypt(nonce, secret, canonical_json(doc)).hex()
    _write_atomic(Path(path), canonical_json(doc) + b"\n", mode=0o600, overwrite=overwrite)


def _hex_field(doc: dict[str, Any], name: str, nbytes: int | None = None) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str):
        raise FormatError(f"{name}: expected a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise FormatError(f"{name}: not hexadecimal") from None
    if nbytes is not None and len(raw) != nbytes:
        raise FormatError(f"{name}: expected {nbytes} bytes, got {len(raw)}")
    return raw


def _int_field(doc: dict[str, Any], name: str, allowed: range) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
        raise FormatError(f"{name}: expected an integer in {allowed.start}..{allowed.stop - 1}")
    return value


def _parse_share_doc(doc: Any, passphrase: bytes | None) -> KeyShare:
    if not isinstance(doc, dict):
        raise FormatError("expected a JSON object")
    if doc.get("format") != SHARE_FORMAT:
        raise FormatError(f"not a key share file (format {doc.get('format')!r})")
    if doc.get("version") != SHARE_VERSION:
        raise FormatError(f"unsupported key share file version {doc.get('version')!r}")
    key_id = _hex_field(doc, "key_id", 32)
    index = _int_field(doc, "index", range(1, 256))
    secret_bytes = _int_field(doc, "secret_bytes", range(_PAD, 4 * 1024 + 1))
    if secret_bytes % _PAD:
        raise FormatError(f"secret_bytes: expected a multiple of {_PAD}")
    protection = doc.get("protection")
    common = {"format", "version", "key_id", "index", "secret_bytes", "protection"}
    if protection == "none":
        if set(doc) != common | {"secret"}:
            raise FormatError(f"unexpected fields {sorted(set(doc) - common - {'secret'})}")
        if passphrase is not None:
            raise KeyFileError("the key share is not encrypted, but a passphrase was given")
        secret = _hex_field(doc, "secret", secret_bytes)
    elif protection == "scrypt-aes-256-gcm":
        extra = {"kdf", "nonce", "ciphertext"}
        if set(doc) != common | extra:
            raise FormatError(f"unexpected fields {sorted(set(doc) ^ (common | extra))}")
        if passphrase is None:
            raise KeyFileError("the key share is encrypted; a passphrase is needed")
        kdf = doc["kdf"]
        if not isinstance(kdf, dict) or set(kdf) != {"name", "log2_n", "r", "p", "salt"}:
            raise FormatError("kdf: expected name, log2_n, r, p, salt")
        if kdf["name"] != "scrypt":
            raise FormatError(f"kdf: unsupported {kdf['name']!r}")
        log2_n = _int_field(kdf, "log2_n", _LOG2_N_RANGE)
        r = _int_field(kdf, "r", _R_RANGE)
        p = _int_field(kdf, "p", _P_RANGE)
        salt = _hex_field(kdf, "salt", 16)
        nonce = _hex_field(doc, "nonce", 12)
        ciphertext = _hex_field(doc, "ciphertext", secret_bytes + 16)
        aad = canonical_json({k: v for k, v in doc.items() if k != "ciphertext"})
        key = _scrypt_key(passphrase, salt, log2_n, r, p)
        try:
            secret = AESGCM(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise KeyFileError("wrong passphrase, or the key share file was altered") from None
    else:
        raise FormatError(f"protection: unsupported {protection!r}")
    return KeyShare(index=index, secret=int.from_bytes(secret, "big"), key_id=key_id)


def read_key_share(path: Path, passphrase: bytes | None) -> KeyShare:
    """Read a key share file; raises ``KeyFileError`` when it is missing, readable by others,
    malformed, or the passphrase is wrong (or missing for an encrypted file)."""
    path = Path(path)
    if passphrase is not None and not isinstance(passphrase, bytes):
        raise TypeError("passphrase: expected bytes or None")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise _fail(path, "key share file does not exist") from None
    except OSError as exc:
        raise _fail(path, f"cannot read key share file: {exc.strerror or exc}") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise _fail(
            path,
            f"key share file is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            "run chmod 600 on it",
        )
    data = _read_capped(path, "key share")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"not a valid key share file: {exc}") from exc
    try:
        return _parse_share_doc(doc, passphrase)
    except KeyFileError as exc:
        raise _fail(path, exc.message) from None
    except (FormatError, ValueError) as exc:
        raise _fail(path, f"not a valid key share file: {exc}") from exc
