"""Shoup threshold RSA (evault.crypto.threshold_rsa): signing, combining, robustness, validation."""

from __future__ import annotations

import dataclasses
import itertools
import random
import subprocess
from pathlib import Path

import gmpy2
import pytest

from evault.crypto import threshold_rsa as trsa
from evault.crypto.numbers import is_safe_prime, lagrange_coefficients_at_zero
from evault.crypto.threshold_rsa import (
    CHALLENGE_BITS,
    KeyShare,
    SignatureShare,
    ThresholdPublicKey,
    combine,
    deal,
    deal_from_primes,
    sign_share,
    verify_key_share,
    verify_share,
    verify_signature,
)
from evault.crypto.threshold_testing import InsecureTestKey, deal_insecure_test_key
from evault.encoding import canonical_json
from evault.errors import (
    CryptoError,
    FormatError,
    InvalidShare,
    InvalidSignature,
    NotEnoughShares,
)
from tests.crypto_fixtures import VaultKey

OPENSSL = "/usr/bin/openssl"

#: A statement shaped like a receipt (DESIGN §4): what the vault signs, as RFC 8785 bytes.
STATEMENT = canonical_json(
    {
        "version": 1,
        "vault": "6f1c2a9e0d3b4c5a",
        "owner": "alice",
        "name": "will.pdf",
        "document_version": 3,
        "size": 123456,
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "fv_hash": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
        "n": 5,
        "m": 3,
        "segment_bytes": 1048576,
        "codec": "rs-isal-cauchy/v1",
        "deposited_at": "2024-05-01T12:00:00Z",
    }
)
OTHER_STATEMENT = STATEMENT.replace(b'"size":123456', b'"size":123457')


def _sign_all(
    key: VaultKey | InsecureTestKey, message: bytes, seed: int = 7
) -> list[SignatureShare]:
    rng = random.Random(seed)
    return [sign_share(s, key.public, message, rng=rng) for s in key.shares]


@pytest.fixture(scope="module")
def shares_2048(vault_key_2048: VaultKey) -> list[SignatureShare]:
    return _sign_all(vault_key_2048, STATEMENT)


@pytest.fixture(scope="module")
def signature_2048(vault_key_2048: VaultKey, shares_2048: list[SignatureShare]) -> bytes:
    return combine(vault_key_2048.public, STATEMENT, shares_2048[:4]).signature


def _replace(share: SignatureShare, **changes: int) -> SignatureShare:
    return dataclasses.replace(share, **changes)


# ----------------------------------------------------------------------------- stock verifiers


def test_combined_signature_verifies_with_cryptography(
    vault_key_2048: VaultKey, signature_2048: bytes
) -> None:
    public = vault_key_2048.public
    assert len(signature_2048) == public.modulus_bytes == 256
    verify_signature(public, STATEMENT, signature_2048)
    verify_signature(public.to_pem(), STATEMENT, signature_2048)
    verify_signature(public.to_cryptography(), STATEMENT, signature_2048)
    with pytest.raises(InvalidSignature):
        verify_signature(public, OTHER_STATEMENT, signature_2048)
    tampered = bytearray(signature_2048)
    tampered[100] ^= 1
    with pytest.raises(InvalidSignature):
        verify_signature(public, STATEMENT, bytes(tampered))


def _openssl_verify(
    tmp_path: Path, pem: bytes, signature: bytes, statement: bytes
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pub.pem").write_bytes(pem)
    (tmp_path / "sig.bin").write_bytes(signature)
    (tmp_path / "statement.bin").write_bytes(statement)
    return subprocess.run(
        [
            OPENSSL,
            "dgst",
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
            "-verify",
            "pub.pem",
            "-signature",
            "sig.bin",
            "statement.bin",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_combined_signature_verifies_with_openssl(
    tmp_path: Path, vault_key_2048: VaultKey, signature_2048: bytes
) -> None:
    pem = vault_key_2048.public.to_pem()
    ok = _openssl_verify(tmp_path, pem, signature_2048, STATEMENT)
    assert ok.returncode == 0, ok.stderr
    assert "Verified OK" in ok.stdout
    bad = _openssl_verify(tmp_path, pem, signature_2048, OTHER_STATEMENT)
    assert bad.returncode != 0
    assert "Verified OK" not in bad.stdout


# ----------------------------------------------------------------------------- combining


def test_every_k_subset_gives_the_identical_signature(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare], signature_2048: bytes
) -> None:
    public = vault_key_2048.public
    subsets = list(itertools.combinations(shares_2048, 4))
    assert len(subsets) == 5
    for subset in subsets:
        result = combine(public, STATEMENT, list(reversed(subset)))
        assert result.signature == signature_2048
        assert result.bad_signers == {}
        assert sorted(result.signers) == sorted(s.index for s in subset)


def test_extra_shares_beyond_k_are_not_needed(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare], signature_2048: bytes
) -> None:
    result = combine(vault_key_2048.public, STATEMENT, shares_2048)
    assert result.signature == signature_2048
    assert len(result.signers) == 4


def test_k_minus_one_shares_raise_not_enough_shares(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare]
) -> None:
    with pytest.raises(NotEnoughShares) as info:
        combine(vault_key_2048.public, STATEMENT, shares_2048[:3])
    assert (info.value.have, info.value.need, info.value.bad) == (3, 4, {})
    assert info.value.details == {"have": 3, "need": 4, "bad": {}}
    assert "need 4" in str(info.value)


def test_a_wrong_share_is_named_and_the_honest_shares_still_combine(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare], signature_2048: bytes
) -> None:
    public = vault_key_2048.public
    wrong = _replace(shares_2048[1], value=shares_2048[1].value * 2 % public.n_modulus)
    result = combine(public, STATEMENT, [shares_2048[0], wrong, *shares_2048[2:]])
    assert result.signature == signature_2048
    assert set(result.bad_signers) == {2}
    assert "proof" in result.bad_signers[2]
    assert 2 not in result.signers


def test_a_wrong_share_among_exactly_k_names_the_culprit(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare]
) -> None:
    public = vault_key_2048.public
    wrong = _replace(shares_2048[3], value=shares_2048[3].value * 3 % public.n_modulus)
    with pytest.raises(NotEnoughShares) as info:
        combine(public, STATEMENT, [*shares_2048[:3], wrong])
    assert (info.value.have, info.value.need) == (3, 4)
    assert set(info.value.bad) == {4}
    assert "signer 4" in str(info.value)


def test_a_negated_share_has_a_valid_proof_and_still_combines(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare], signature_2048: bytes
) -> None:
    # The proof binds only x_i², so N − x_i verifies; the exponent 2λ makes it combine.
    public = vault_key_2048.public
    negated = _replace(shares_2048[0], value=public.n_modulus - shares_2048[0].value)
    verify_share(public, STATEMENT, negated)
    result = combine(public, STATEMENT, [negated, *shares_2048[1:4]])
    assert result.signature == signature_2048
    assert result.bad_signers == {}


def test_a_share_times_a_nontrivial_root_of_unity_still_combines(
    vault_key_1024: InsecureTestKey,
) -> None:
    # u ≡ 1 (mod p), u ≡ −1 (mod q): u² = 1 but u ≠ ±1.  Such a share also passes its proof.
    key = vault_key_1024
    n_mod = key.public.n_modulus
    u = (1 + key.p * ((-2 * pow(key.p, -1, key.q)) % key.q)) % n_mod
    assert u * u % n_mod == 1 and u not in (1, n_mod - 1)
    shares = _sign_all(key, STATEMENT)
    honest = combine(key.public, STATEMENT, shares[:3]).signature
    twisted = _replace(shares[0], value=shares[0].value * u % n_mod)
    verify_share(key.public, STATEMENT, twisted)
    assert combine(key.public, STATEMENT, [twisted, *shares[1:3]]).signature == honest


def test_a_share_for_another_statement_is_named(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare], signature_2048: bytes
) -> None:
    public = vault_key_2048.public
    other = sign_share(vault_key_2048.shares[2], public, OTHER_STATEMENT, rng=random.Random(9))
    with pytest.raises(InvalidShare) as info:
        verify_share(public, STATEMENT, other)
    assert info.value.signer == 3
    result = combine(public, STATEMENT, [shares_2048[0], shares_2048[1], other, *shares_2048[3:]])
    assert result.signature == signature_2048
    assert set(result.bad_signers) == {3}


def test_garbage_shares_are_named_and_honest_shares_still_combine(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare], signature_2048: bytes
) -> None:
    public = vault_key_2048.public
    rng = random.Random(5)
    n_mod = public.n_modulus
    garbage = [
        SignatureShare(1, rng.randrange(1, n_mod), rng.getrandbits(128), rng.getrandbits(2300)),
        SignatureShare(2, 0, 0, 0),  # value out of range
        SignatureShare(3, n_mod, 1, 1),  # value out of range
        SignatureShare(0, 5, 1, 1),  # index out of range
        SignatureShare(99, 5, 1, 1),  # index out of range
        SignatureShare(3, 5, 1 << CHALLENGE_BITS, 1),  # challenge too long
        SignatureShare(3, 5, 1, 1 << public.z_bits),  # response too long
        SignatureShare(1, shares_2048[0].value, 0, 0),  # the right value with a forged proof
    ]
    for g in garbage:
        with pytest.raises(InvalidShare):
            verify_share(public, STATEMENT, g)
    # Garbage first, so the optimistic combination fails and every share is checked.
    result = combine(public, STATEMENT, [garbage[0], garbage[1], *shares_2048[2:], shares_2048[1]])
    assert result.signature == signature_2048
    assert set(result.bad_signers) == {1}  # signer 2's garbage is superseded by its good share
    # A signer that sent a broken share and then a good one is not named if its share is used.
    result = combine(public, STATEMENT, [garbage[1], *shares_2048[:4]])
    assert result.signature == signature_2048 and result.bad_signers == {}
    result = combine(public, STATEMENT, [*garbage, *shares_2048[1:]])
    assert result.signature == signature_2048
    assert {0, 1, 99} <= set(result.bad_signers)


def test_garbage_alone_is_not_enough(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare]
) -> None:
    public = vault_key_2048.public
    garbage = [SignatureShare(i, 1234567 + i, 1, 1) for i in (1, 2)]
    with pytest.raises(NotEnoughShares) as info:
        combine(public, STATEMENT, [*garbage, *shares_2048[2:4]])
    assert (info.value.have, info.value.need) == (2, 4)
    assert set(info.value.bad) == {1, 2}


def test_duplicate_signer_counts_once(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare]
) -> None:
    with pytest.raises(NotEnoughShares) as info:
        combine(vault_key_2048.public, STATEMENT, [shares_2048[0]] * 4)
    assert (info.value.have, info.value.need) == (1, 4)


def test_combine_rejects_non_shares(vault_key_2048: VaultKey) -> None:
    with pytest.raises(TypeError, match="shares"):
        combine(vault_key_2048.public, STATEMENT, [b"not a share"])  # type: ignore[list-item]


# ----------------------------------------------------------------------------- n-of-n, k = 1


def test_paper_n_of_n_mode(paper_key_2048: VaultKey) -> None:
    key = paper_key_2048
    assert (key.public.players, key.public.threshold) == (3, 3)
    shares = _sign_all(key, STATEMENT)
    result = combine(key.public, STATEMENT, shares)
    verify_signature(key.public, STATEMENT, result.signature)
    assert result.signers == (1, 2, 3)
    with pytest.raises(NotEnoughShares) as info:
        combine(key.public, STATEMENT, shares[:2])
    assert (info.value.have, info.value.need) == (2, 3)


def test_threshold_one_every_signer_alone_signs(test_primes_1024: tuple[int, int]) -> None:
    key = deal_insecure_test_key(3, 1, primes=test_primes_1024, rng=random.Random(11))
    shares = _sign_all(key, STATEMENT)
    signatures = {combine(key.public, STATEMENT, [s]).signature for s in shares}
    assert len(signatures) == 1
    verify_signature(key.public, STATEMENT, signatures.pop())


# ----------------------------------------------------------------------------- shares and proofs


def test_verify_share_accepts_honest_shares_and_rejects_tampering(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare]
) -> None:
    public = vault_key_2048.public
    for share in shares_2048:
        verify_share(public, STATEMENT, share)
    s = shares_2048[0]
    for tampered in (
        _replace(s, proof_c=s.proof_c ^ 1),
        _replace(s, proof_z=s.proof_z + 1),
        _replace(s, index=2),
        _replace(s, value=s.value + 1),
    ):
        with pytest.raises(InvalidShare) as info:
            verify_share(public, STATEMENT, tampered)
        assert info.value.signer == tampered.index


def test_share_bytes_round_trip_and_validation(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare]
) -> None:
    public = vault_key_2048.public
    share = shares_2048[2]
    raw = share.to_bytes(public)
    assert len(raw) == SignatureShare.encoded_length(public) == 3 + 256 + 16 + 289
    assert raw[0] == 1 and raw[1:3] == b"\x00\x03"
    assert SignatureShare.from_bytes(public, raw) == share
    with pytest.raises(FormatError, match="bytes"):
        SignatureShare.from_bytes(public, raw[:-1])
    with pytest.raises(FormatError, match="version"):
        SignatureShare.from_bytes(public, b"\x02" + raw[1:])
    with pytest.raises(FormatError, match="index"):
        SignatureShare.from_bytes(public, raw[:1] + b"\x00\x09" + raw[3:])
    with pytest.raises(FormatError, match="value"):
        SignatureShare.from_bytes(public, raw[:3] + b"\xff" * 256 + raw[259:])
    with pytest.raises(ValueError, match="share"):
        SignatureShare(0, 1, 1, 1).to_bytes(public)


def test_random_bytes_never_pass_as_a_share(vault_key_2048: VaultKey) -> None:
    public = vault_key_2048.public
    rng = random.Random(13)
    for _ in range(20):
        raw = b"\x01\x00\x01" + rng.randbytes(SignatureShare.encoded_length(public) - 3)
        try:
            share = SignatureShare.from_bytes(public, raw)
        except FormatError:
            continue
        with pytest.raises(InvalidShare):
            verify_share(public, STATEMENT, share)


def test_sign_share_refuses_a_share_of_another_key(
    vault_key_2048: VaultKey, paper_key_2048: VaultKey
) -> None:
    with pytest.raises(ValueError, match="another public key"):
        sign_share(vault_key_2048.shares[0], paper_key_2048.public, STATEMENT)


def test_sign_share_takes_message_bytes_not_an_integer(vault_key_2048: VaultKey) -> None:
    with pytest.raises(TypeError, match="message"):
        sign_share(vault_key_2048.shares[0], vault_key_2048.public, 12345)  # type: ignore[arg-type]


def test_proof_nonce_has_modulus_plus_two_l1_bits(vault_key_1024: InsecureTestKey) -> None:
    # z = s_i c + r with r < 2^(|N| + 2·L1): the response must fit in |N| + 2·L1 + 1 bits and,
    # over many signatures, reach lengths near |N| + 2·L1 (r dominates s_i c by 2^L1).
    key = vault_key_1024
    rng = random.Random(17)
    lengths = {
        sign_share(key.shares[0], key.public, b"m%d" % i, rng=rng).proof_z.bit_length()
        for i in range(8)
    }
    assert max(lengths) <= key.public.modulus_bits + 2 * CHALLENGE_BITS + 1
    assert min(lengths) >= key.public.modulus_bits + 2 * CHALLENGE_BITS - 12


def test_signing_is_reproducible_with_a_fixed_rng(vault_key_1024: InsecureTestKey) -> None:
    key = vault_key_1024
    a = sign_share(key.shares[1], key.public, STATEMENT, rng=random.Random(1))
    b = sign_share(key.shares[1], key.public, STATEMENT, rng=random.Random(1))
    c = sign_share(key.shares[1], key.public, STATEMENT, rng=random.Random(2))
    assert a == b
    assert a.value == c.value and a.proof_z != c.proof_z


# ----------------------------------------------------------------------------- keys


def test_dealt_key_has_exact_size_safe_primes_and_consistent_shares(
    rsa2048_primes: tuple[int, int], vault_key_2048: VaultKey
) -> None:
    p, q = rsa2048_primes
    public = vault_key_2048.public
    assert public.n_modulus == p * q and public.modulus_bits == 2048
    assert is_safe_prime(p) and is_safe_prime(q)
    assert p >> 1022 == 0b11 and q >> 1022 == 0b11  # top two bits set: exact product size
    assert (public.e, public.players, public.threshold, public.delta) == (65537, 5, 4, 120)
    assert gmpy2.jacobi(public.v, p) == 1 and gmpy2.jacobi(public.v, q) == 1  # v is a square
    for share in vault_key_2048.shares:
        verify_key_share(public, share)


def test_shares_interpolate_to_the_secret_exponent(test_primes_1024: tuple[int, int]) -> None:
    # Σ λ_j s_j ≡ Δ d (mod p'q') for every k-subset: the sharing is a degree k−1 polynomial.
    p, q = test_primes_1024
    key = deal_insecure_test_key(5, 3, primes=(p, q), rng=random.Random(19))
    m = (p - 1) // 2 * ((q - 1) // 2)
    d = pow(65537, -1, m)
    delta = key.public.delta
    for subset in itertools.combinations(key.shares, 3):
        lambdas = lagrange_coefficients_at_zero(delta, [s.index for s in subset])
        assert sum(lambdas[s.index] * s.secret for s in subset) % m == delta * d % m


def test_verify_key_share_catches_a_wrong_share(vault_key_2048: VaultKey) -> None:
    public = vault_key_2048.public
    share = vault_key_2048.shares[0]
    with pytest.raises(CryptoError, match="verification key"):
        verify_key_share(public, KeyShare(share.index, share.secret + 1, share.key_id))
    with pytest.raises(CryptoError, match="another public key"):
        verify_key_share(public, KeyShare(share.index, share.secret, bytes(32)))


def test_key_share_repr_hides_the_secret(vault_key_2048: VaultKey) -> None:
    share = vault_key_2048.shares[0]
    text = repr(share) + str(share)
    assert "hidden" in text
    assert str(share.secret) not in text and hex(share.secret)[2:12] not in text


def test_public_key_json_round_trip(vault_key_2048: VaultKey) -> None:
    public = vault_key_2048.public
    data = public.to_json()
    assert ThresholdPublicKey.from_json(data) == public
    assert ThresholdPublicKey.from_dict(public.to_dict()).key_id == public.key_id
    assert len(public.key_id) == 32
    assert public.to_pem().startswith(b"-----BEGIN PUBLIC KEY-----")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format": "something-else"}, "format"),
        ({"version": 2}, "version"),
        ({"players": 6}, "verification_keys"),
        ({"threshold": 0}, "threshold"),
        ({"public_exponent": 65535}, "prime"),
        ({"public_exponent": "65537"}, "integer"),
        ({"verification_base": "00"}, "hex digits"),
        ({"verification_keys": "nope"}, "list"),
        ({"extra": 1}, "fields"),
    ],
)
def test_public_key_from_dict_rejects_bad_documents(
    vault_key_2048: VaultKey, change: dict[str, object], match: str
) -> None:
    doc = vault_key_2048.public.to_dict() | change
    with pytest.raises(FormatError, match=match):
        ThresholdPublicKey.from_dict(doc)


def test_public_key_from_dict_refuses_test_sizes(vault_key_1024: InsecureTestKey) -> None:
    with pytest.raises(FormatError, match="1024 bits"):
        ThresholdPublicKey.from_dict(vault_key_1024.public.to_dict())
    with pytest.raises(FormatError, match="JSON"):
        ThresholdPublicKey.from_json(b"{not json")


# ----------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("players", "threshold", "kwargs", "match"),
    [
        (5, 0, {}, "threshold"),
        (5, 6, {}, "threshold"),
        (0, 0, {}, "players"),
        (5, 4, {"e": 65535}, "e: must be a prime"),  # not prime
        (5, 4, {"e": 3}, "e: must be a prime greater"),  # prime but not > n
        (5, 4, {"e": 5}, "e: must be a prime greater"),  # prime, equal to n
        (5, 4, {"modulus_bits": 1024}, "modulus_bits"),
        (5, 4, {"modulus_bits": 2047}, "modulus_bits"),
        (5, 4, {"modulus_bits": 4096}, "modulus_bits"),
    ],
)
def test_deal_validates_parameters_before_any_work(
    players: int, threshold: int, kwargs: dict[str, int], match: str
) -> None:
    def no_randomness(_: int) -> int:
        raise AssertionError("deal drew randomness before validating its parameters")

    rng = random.Random()
    rng.getrandbits = no_randomness  # type: ignore[method-assign]
    with pytest.raises(ValueError, match=match):
        deal(players, threshold, rng=rng, **kwargs)  # type: ignore[arg-type]


def test_deal_rejects_non_integer_sizes() -> None:
    with pytest.raises(TypeError, match="modulus_bits"):
        deal(5, 4, "3072")  # type: ignore[arg-type]


def test_deal_from_primes_checks_size_and_primality(
    test_primes_1024: tuple[int, int], rsa2048_primes: tuple[int, int]
) -> None:
    p, q = test_primes_1024
    with pytest.raises(ValueError, match="1024 bits"):
        deal_from_primes(p, q, 5, 4)
    p2, q2 = rsa2048_primes
    with pytest.raises(ValueError, match="safe primes"):
        deal_from_primes(p2, p2, 5, 4)
    with pytest.raises(ValueError, match="safe primes"):
        deal_from_primes(p2 + 2, q2, 5, 4)
    # Safe primes (5 = 2·2 + 1 is one) whose product is not an allowed size are refused.
    with pytest.raises(ValueError, match=r"has 1026 bits, expected one of \(2048, 3072\)"):
        deal_from_primes(p2, 5, 5, 4)
    with pytest.raises(ValueError, match="e: must be a prime greater"):
        deal_from_primes(p2, q2, 5, 4, e=5)


def test_public_key_constructor_validates(vault_key_2048: VaultKey) -> None:
    public = vault_key_2048.public
    with pytest.raises(ValueError, match="verification_keys"):
        dataclasses.replace(public, verification_keys=public.verification_keys[:4])
    with pytest.raises(ValueError, match="n_modulus"):
        dataclasses.replace(public, n_modulus=public.n_modulus + 1)
    with pytest.raises(ValueError, match="v"):
        dataclasses.replace(public, v=1)
    with pytest.raises(ValueError, match="e:"):
        dataclasses.replace(public, e=4)


def test_lagrange_coefficients_are_exact_integers() -> None:
    # Δ = 3!, S = {1, 2, 3}: λ = Δ·(2·3)/(1·2), Δ·(1·3)/(−1·1), Δ·(1·2)/(−2·−1).
    assert lagrange_coefficients_at_zero(6, [1, 2, 3]) == {1: 18, 2: -18, 3: 6}
    assert lagrange_coefficients_at_zero(120, [2, 5]) == {2: 200, 5: -80}
    with pytest.raises(ValueError, match="distinct"):
        lagrange_coefficients_at_zero(6, [1, 1])
    with pytest.raises(ValueError, match="delta"):
        lagrange_coefficients_at_zero(1, [1, 3])  # λ_1 = 3/2 without Δ


# ----------------------------------------------------------------------------- 3072 bits


@pytest.mark.slow
def test_default_3072_bit_key_end_to_end(tmp_path: Path) -> None:
    events: list[str] = []
    public, key_shares = deal(5, 4, progress=lambda ev: events.append(ev.stage))
    assert public.modulus_bits == 3072 and public.modulus_bytes == 384
    assert events.count("prime-found") == 2 and events[-1] == "shares"
    shares = [sign_share(s, public, STATEMENT) for s in key_shares[1:]]
    result = combine(public, STATEMENT, shares)
    verify_signature(public, STATEMENT, result.signature)
    run = _openssl_verify(tmp_path, public.to_pem(), result.signature, STATEMENT)
    assert run.returncode == 0 and "Verified OK" in run.stdout, run.stderr


def test_module_exports_are_real() -> None:
    for name in trsa.__all__:
        assert hasattr(trsa, name), name


# ----------------------------------------------------------------------------- proofs on demand


def _unproven(share: SignatureShare) -> SignatureShare:
    return SignatureShare(share.index, share.value)


def test_share_value_is_the_proven_shares_value(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare]
) -> None:
    for key_share, proven in zip(vault_key_2048.shares, shares_2048, strict=True):
        alone = trsa.share_value(key_share, vault_key_2048.public, STATEMENT)
        assert (alone.index, alone.value) == (proven.index, proven.value)
        assert not alone.proven and proven.proven


def test_unproven_honest_shares_combine_to_the_same_signature(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare], signature_2048: bytes
) -> None:
    unproven = [_unproven(s) for s in shares_2048]
    assert combine(vault_key_2048.public, STATEMENT, unproven[1:5]).signature == signature_2048


def test_an_unproven_wrong_share_cannot_be_named_without_proofs(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare]
) -> None:
    public = vault_key_2048.public
    unproven = [_unproven(s) for s in shares_2048]
    unproven[0] = _unproven(
        _replace(shares_2048[0], value=shares_2048[0].value * 2 % public.n_modulus)
    )
    with pytest.raises(NotEnoughShares) as info:
        combine(public, STATEMENT, unproven)
    assert set(info.value.bad) == {1, 2, 3, 4, 5}
    assert all("no proof" in why for why in info.value.bad.values())
    # With the proofs asked for, the liar is named and the others combine.
    liar = _replace(shares_2048[0], value=shares_2048[0].value * 2 % public.n_modulus)
    result = combine(public, STATEMENT, [liar, *shares_2048[1:]])
    assert set(result.bad_signers) == {1}


def test_an_unproven_share_fills_up_proven_good_ones(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare], signature_2048: bytes
) -> None:
    public = vault_key_2048.public
    liar = _replace(shares_2048[0], value=shares_2048[0].value * 3 % public.n_modulus)
    # Signer 1 lies (with a proof), signers 2-4 are proven, signer 5 gave no proof.
    shares = [liar, *shares_2048[1:4], _unproven(shares_2048[4])]
    result = combine(public, STATEMENT, shares)
    assert result.signature == signature_2048
    assert set(result.bad_signers) == {1} and 5 in result.signers
    # A wrong unproven share cannot fill the gap: not enough shares, none blamed wrongly.
    wrong_fill = _unproven(_replace(shares_2048[4], value=7))
    with pytest.raises(NotEnoughShares) as info:
        combine(public, STATEMENT, [liar, *shares_2048[1:4], wrong_fill])
    assert (info.value.have, info.value.need) == (3, 4)
    assert set(info.value.bad) == {1, 5}


def test_only_a_proven_share_has_a_byte_form_and_proofs_come_in_pairs(
    vault_key_2048: VaultKey, shares_2048: list[SignatureShare]
) -> None:
    with pytest.raises(ValueError, match="byte form"):
        _unproven(shares_2048[0]).to_bytes(vault_key_2048.public)
    with pytest.raises(ValueError, match="both or neither"):
        SignatureShare(1, 5, proof_c=3)
    with pytest.raises(InvalidShare, match="no proof"):
        trsa.verify_share(vault_key_2048.public, STATEMENT, _unproven(shares_2048[0]))
