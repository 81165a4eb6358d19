"""Threshold-RSA key files (evault.crypto.keyfiles): formats, permissions, passphrases, errors."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import pytest

from evault.crypto import keyfiles
from evault.crypto.keyfiles import (
    read_key_share,
    read_public_key,
    read_threshold_public,
    write_key_share,
    write_public_key,
    write_threshold_public,
)
from evault.crypto.threshold_rsa import KeyShare, combine, sign_share, verify_signature
from evault.crypto.threshold_testing import InsecureTestKey
from evault.encoding import canonical_json
from evault.errors import KeyFileError
from tests.crypto_fixtures import VaultKey

FAST_KDF = 10  # scrypt N = 2^10 keeps the tests fast; the default is 2^17


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_public_key_files_round_trip(tmp_path: Path, vault_key_2048: VaultKey) -> None:
    public = vault_key_2048.public
    write_public_key(tmp_path / "vault-public.pem", public)
    write_threshold_public(tmp_path / "threshold.json", public)
    pem_key = read_public_key(tmp_path / "vault-public.pem")
    assert pem_key.public_numbers().n == public.n_modulus
    assert read_threshold_public(tmp_path / "threshold.json") == public
    assert (
        read_threshold_public(tmp_path / "threshold.json", pem_path=tmp_path / "vault-public.pem")
        == public
    )


def test_public_key_files_mismatch_and_damage_are_key_file_errors(
    tmp_path: Path,
    vault_key_2048: VaultKey,
    paper_key_2048: VaultKey,
    vault_key_1024: InsecureTestKey,
) -> None:
    write_threshold_public(tmp_path / "threshold.json", vault_key_2048.public)
    # Same modulus, other players: the PEM matches; a different modulus does not.
    write_public_key(tmp_path / "same.pem", paper_key_2048.public)
    assert read_threshold_public(tmp_path / "threshold.json", pem_path=tmp_path / "same.pem")
    write_public_key(tmp_path / "other.pem", vault_key_1024.public)
    with pytest.raises(KeyFileError, match="different RSA key"):
        read_threshold_public(tmp_path / "threshold.json", pem_path=tmp_path / "other.pem")
    (tmp_path / "junk.pem").write_bytes(
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    )
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        read_public_key(tmp_path / "junk.pem")
    (tmp_path / "bad.json").write_text('{"format": "nope"}')
    with pytest.raises(KeyFileError, match=r"bad\.json"):
        read_threshold_public(tmp_path / "bad.json")
    with pytest.raises(KeyFileError, match="does not exist"):
        read_public_key(tmp_path / "missing.pem")
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_threshold_public(tmp_path / "threshold.json", vault_key_2048.public)


def test_plain_key_share_round_trip_with_mode_0600(
    tmp_path: Path, vault_key_2048: VaultKey
) -> None:
    share = vault_key_2048.shares[3]
    path = tmp_path / "signing-share.json"
    old_umask = os.umask(0)  # even a permissive umask must not widen the file's mode
    try:
        write_key_share(path, share, passphrase=None)
    finally:
        os.umask(old_umask)
    assert _mode(path) == 0o600
    assert read_key_share(path, None) == share
    doc = json.loads(path.read_bytes())
    assert doc["protection"] == "none" and doc["index"] == 4
    assert doc["secret_bytes"] == 256 and len(doc["secret"]) == 512
    assert path.read_bytes() == canonical_json(doc) + b"\n"
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_encrypted_key_share_round_trip(tmp_path: Path, vault_key_2048: VaultKey) -> None:
    share = vault_key_2048.shares[0]
    path = tmp_path / "share.json"
    write_key_share(path, share, b"correct horse", scrypt_log2_n=FAST_KDF, rng=random.Random(1))
    raw = path.read_text()
    assert format(share.secret, "x")[:32] not in raw
    doc = json.loads(raw)
    assert doc["protection"] == "scrypt-aes-256-gcm"
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["log2_n"] == FAST_KDF
    assert len(bytes.fromhex(doc["ciphertext"])) == 256 + 16
    assert read_key_share(path, b"correct horse") == share
    # The share still signs after the round trip.
    public = vault_key_2048.public
    loaded = read_key_share(path, b"correct horse")
    shares = [sign_share(s, public, b"m") for s in (loaded, *vault_key_2048.shares[1:4])]
    verify_signature(public, b"m", combine(public, b"m", shares).signature)


def test_wrong_or_missing_passphrase_is_a_key_file_error(
    tmp_path: Path, vault_key_2048: VaultKey
) -> None:
    path = tmp_path / "share.json"
    write_key_share(path, vault_key_2048.shares[0], b"secret", scrypt_log2_n=FAST_KDF)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        read_key_share(path, b"Secret")
    with pytest.raises(KeyFileError, match="passphrase is needed"):
        read_key_share(path, None)
    plain = tmp_path / "plain.json"
    write_key_share(plain, vault_key_2048.shares[0], None)
    with pytest.raises(KeyFileError, match="not encrypted"):
        read_key_share(plain, b"secret")


def test_altered_header_fails_the_tag(tmp_path: Path, vault_key_2048: VaultKey) -> None:
    # The index and KDF parameters are associated data: changing them breaks decryption.
    path = tmp_path / "share.json"
    write_key_share(path, vault_key_2048.shares[0], b"pw", scrypt_log2_n=FAST_KDF)
    doc = json.loads(path.read_bytes())
    doc["index"] = 2
    path.write_bytes(canonical_json(doc))
    with pytest.raises(KeyFileError, match="altered"):
        read_key_share(path, b"pw")


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d | {"version": 2},
        lambda d: d | {"format": "x"},
        lambda d: d | {"index": 0},
        lambda d: d | {"key_id": "00"},
        lambda d: d | {"secret": "zz" * 256},
        lambda d: d | {"secret_bytes": 200},
        lambda d: d | {"protection": "rot13"},
        lambda d: d | {"surprise": 1},
        lambda d: [d],
    ],
)
def test_malformed_share_files_are_key_file_errors(
    tmp_path: Path, vault_key_2048: VaultKey, damage: object
) -> None:
    path = tmp_path / "share.json"
    write_key_share(path, vault_key_2048.shares[0], None)
    doc = json.loads(path.read_bytes())
    path.write_text(json.dumps(damage(doc)))  # type: ignore[operator]
    with pytest.raises(KeyFileError, match=r"share\.json"):
        read_key_share(path, None)


def test_unreadable_or_exposed_share_files(tmp_path: Path, vault_key_2048: VaultKey) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key_share(tmp_path / "missing.json", None)
    path = tmp_path / "share.json"
    write_key_share(path, vault_key_2048.shares[0], None)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_key_share(path, None)
    os.chmod(path, 0o600)
    path.write_bytes(b"\xff not json")
    with pytest.raises(KeyFileError, match="not a valid key share"):
        read_key_share(path, None)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_key_share(path, vault_key_2048.shares[0], None)
    write_key_share(path, vault_key_2048.shares[1], None, overwrite=True)
    assert read_key_share(path, None).index == 2


def test_kdf_parameters_are_bounded(tmp_path: Path, vault_key_2048: VaultKey) -> None:
    share: KeyShare = vault_key_2048.shares[0]
    with pytest.raises(ValueError, match="scrypt_log2_n"):
        write_key_share(tmp_path / "a.json", share, b"pw", scrypt_log2_n=30)
    with pytest.raises(ValueError, match="passphrase"):
        write_key_share(tmp_path / "a.json", share, b"")
    path = tmp_path / "b.json"
    write_key_share(path, share, b"pw", scrypt_log2_n=FAST_KDF)
    doc = json.loads(path.read_bytes())
    doc["kdf"]["log2_n"] = 40  # a file must not make the reader allocate 2^40 · 1 KiB
    path.write_bytes(canonical_json(doc))
    with pytest.raises(KeyFileError, match="log2_n"):
        read_key_share(path, b"pw")


def test_default_kdf_cost_is_owasp_scrypt() -> None:
    assert keyfiles.DEFAULT_SCRYPT_LOG2_N == 17
