"""Robust k-of-n threshold RSA signatures: Shoup, "Practical Threshold Signatures" (Eurocrypt
2000), Protocol 1, producing ordinary RSASSA-PSS signatures (DESIGN §4; paper §2.4, §4.3, App. A).

The paper's receipts were n-of-n RSA signatures (§2.4): every server held an additive share of d
and all had to answer.  Shoup's scheme is the k-of-n generalisation the paper plans in §4.3 (the
n-of-n mode is simply k = n), with a proof of correctness per share so a lying server is named.

Dealer (trusted once, then forgets p, q, d and the polynomial; paper App. A, footnote 2)::

    p = 2p' + 1, q = 2q' + 1 safe primes, N = pq of exactly the requested size, m = p'q'
    e prime, e > n;  d = e^-1 mod m;  f(X) = d + a_1 X + … + a_{k-1} X^{k-1} over Z_m
    s_i = f(i) mod m (share of player i);  Δ = n!
    v a random square mod N;  v_i = v^{s_i} (verification keys)

Signer i, for a message M (the canonical receipt statement; never an integer handed to it)::

    x   = OS2IP(EMSA-PSS-ENCODE(M))  with a salt derived from M       (evault.crypto.pss)
    x_i = x^(2Δ s_i) mod N                                             (the signature share)
    proof that log_v v_i = log_x̃ x_i², x̃ = x^(4Δ):
        r  random of |N| + 2·L1 bits;  v' = v^r,  x' = x̃^r
        c  = H(key id, i, v, x̃, v_i, x_i², v', x')  truncated to L1 bits
        z  = s_i c + r                        (over the integers: the order m is secret)

Combiner, with any set S of k shares::

    λ_j = Δ Π_{j'∈S∖{j}} j' / (j' − j) ∈ Z;   w = Π_{j∈S} x_j^(2λ_j) = x^(4Δ² d)
    y = w^a x^b   with 4Δ² a + e b = 1;   then y^e = x and y is the RSA signature.

The exponent 2λ_j (not λ_j) matters: the proof binds only x_j², so a share off by a square root
of unity, such as N − x_j, passes verification; squaring removes the difference.

Constants: L1 = 128 challenge bits (soundness error 2^-128, matching the ~128-bit security of
RSA-3072), so the nonce r has |N| + 256 bits and hides s_i c statistically (2^-128).

Side channels: the only secret exponents are s_i and r (whose leak would reveal s_i = (z − r)/c).
Both are used with GMP's ``mpz_powm_sec`` (``gmpy2.powmod_sec``), whose time and memory accesses do
not depend on the exponent.  Every other exponent (2Δ, z, c, λ, a, b, e) is public and uses the
faster variable-time ``powmod``.  Signers cannot use CRT: they do not know p and q (paper §2.4).

Proofs on demand.  The combiner is optimistic: it combines the first k shares and checks
y^e = x, and reads proofs only when that fails, to name the signer whose share is wrong.  So a
signer may send its share alone (:func:`share_value`: x_i, one exponentiation instead of three)
and produce the proof (:func:`sign_share`) only when asked.  Nothing is weakened: a signature
is never used before y^e = x holds, and a share's proof, made later with a fresh nonce, binds
the same x_i (it is a function of s_i and the message alone).  :func:`combine` therefore takes
shares with or without proofs; on its pessimistic path the unproven ones cannot be judged and
count as bad, except that they may fill up a set of proven good shares that is short of k.

Randomness (the dealer's primes, polynomial and v; the signer's nonce r) comes from the ``rng``
argument, ``secrets.SystemRandom()`` by default, so tests can fix it.

Precomputed nonces (:class:`PrecomputedNonce`, :class:`NoncePool`).  The pair (r, v' = v^r)
depends on the key alone, not on the message, so a signer may draw r and compute v^r ahead of
time (at start-up, in idle time) and spend the pair on the next signature.  Signing then costs
two constant-time exponentiations (x^(2Δ s_i) and x̃^r) instead of three.  This is safe because
nothing about r changes: it is still drawn uniformly from [0, 2^(|N| + 2·L1)) by the same
``rng`` the inline path uses, it is still secret (never returned, printed or serialised), and it
still answers exactly one challenge.  Fiat-Shamir order is kept too: c hashes v' and x' = x̃^r,
and x' needs the message, so the commitment is complete before c exists.  The one new danger is
reuse.  Two proofs with the same r and challenges c1 ≠ c2 give z1 − z2 = s_i (c1 − c2) over the
integers, so anyone holding both shares computes s_i = (z1 − z2) / (c1 − c2) and, with k − 1
others, the vault key.  Reuse is therefore made impossible by construction, not by care:

* a ``PrecomputedNonce`` is a one-shot object: ``sign_share`` takes (r, v^r) out of it under its
  lock and erases them, so a second use raises ``ValueError`` instead of signing;
* it refuses copying and pickling (``copy``, ``deepcopy``, ``pickle`` raise ``TypeError``), so it
  cannot be duplicated in memory or persisted to disk (a restored file would replay r);
* it remembers the process that made it and refuses to sign in another one: after ``fork`` the
  child holds a byte-for-byte copy of the parent's memory, pool included;
* a ``NoncePool`` hands each nonce out once, popping it under a lock; an empty pool returns None
  and ``sign_share`` then draws a fresh r inline, exactly as without a pool.
Python cannot wipe an int from memory, so a nonce lives in the process as long as the key share
does: whoever can read the process's memory already has s_i itself.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import gmpy2
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from evault.crypto import pss
from evault.crypto.numbers import (
    DEFAULT_RNG,
    KeygenProgress,
    ProgressCallback,
    RandomSource,
    generate_safe_prime,
    is_probable_prime,
    is_safe_prime,
    lagrange_coefficients_at_zero,
    random_below,
    random_bits,
)
from evault.encoding.canonical import canonical_json
from evault.encoding.tagged import TAGS, tagged_hash
from evault.errors import CryptoError, FormatError, InvalidShare, InvalidSignature, NotEnoughShares

__all__ = [
    "ALLOWED_MODULUS_BITS",
    "CHALLENGE_BITS",
    "DEFAULT_MODULUS_BITS",
    "DEFAULT_PUBLIC_EXPONENT",
    "MAX_PLAYERS",
    "CombineResult",
    "KeyShare",
    "NoncePool",
    "PrecomputedNonce",
    "SignatureShare",
    "ThresholdPublicKey",
    "combine",
    "deal",
    "deal_from_primes",
    "generate_primes",
    "sign_share",
    "verify_key_share",
    "verify_share",
    "verify_signature",
]

#: Modulus sizes the dealer makes: 3072 bits by default (receipts outlive decades), 2048 allowed.
ALLOWED_MODULUS_BITS: Final = (2048, 3072)
DEFAULT_MODULUS_BITS: Final = 3072
DEFAULT_PUBLIC_EXPONENT: Final = 65537
#: Smallest modulus any code path accepts (only tests use less than ALLOWED_MODULUS_BITS, via
#: ``evault.crypto.threshold_testing``); PSS with SHA-256 and a 32-byte salt needs >= 529 bits.
MIN_ANY_MODULUS_BITS: Final = 1024
#: Δ = n! grows fast; 255 players is far more than any vault runs.
MAX_PLAYERS: Final = 255
#: L1 in Shoup's paper: challenge length in bits.
CHALLENGE_BITS: Final = 128

_KEY_FORMAT = "evault-threshold-rsa-public-key"
_KEY_VERSION = 1
_SHARE_VERSION = 1
_MAX_KEY_JSON_BYTES = 256 * 1024


def _hex_fixed(value: int, nbytes: int) -> str:
    return value.to_bytes(nbytes, "big").hex()


def _parse_hex_fixed(text: object, nbytes: int, what: str) -> int:
    if not isinstance(text, str) or len(text) != 2 * nbytes:
        raise FormatError(f"{what}: expected {2 * nbytes} hex digits")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise FormatError(f"{what}: not hexadecimal") from None
    if raw.hex() != text:
        raise FormatError(f"{what}: hex digits must be lowercase")
    return int.from_bytes(raw, "big")


def _check_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    return value


def _check_e(e: int, players: int) -> None:
    _check_int("e", e)
    if e <= players or not is_probable_prime(e):
        raise ValueError(
            f"e: must be a prime greater than the number of players {players}, got {e}"
        )


def _check_players(players: int, threshold: int) -> None:
    _check_int("players", players)
    _check_int("threshold", threshold)
    if not 1 <= players <= MAX_PLAYERS:
        raise ValueError(f"players: expected 1..{MAX_PLAYERS}, got {players}")
    if not 1 <= threshold <= players:
        raise ValueError(
            f"threshold: expected 1 <= threshold <= players ({players}), got {threshold}"
        )


# ----------------------------------------------------------------------------- public key


@dataclass(frozen=True)
class ThresholdPublicKey:
    """The vault's public signing key and the share verification keys (Shoup's VK, VK_i).

    ``(n_modulus, e)`` is an ordinary RSA public key (:meth:`to_pem`); ``players`` (n),
    ``threshold`` (k), ``v`` and ``verification_keys`` (v_1 … v_n, index i at position i − 1)
    are what a combiner needs to check individual shares.

    JSON form (:meth:`to_dict`; :meth:`to_json` is its RFC 8785 canonical bytes), version 1::

        {"format": "evault-threshold-rsa-public-key", "version": 1,
         "modulus": "<hex, 2·B digits>", "public_exponent": 65537,
         "players": n, "threshold": k,
         "verification_base": "<hex, 2·B digits>",
         "verification_keys": ["<hex, 2·B digits>", …]}      # n entries, signer 1 first

    where B = ⌈|N|/8⌉ and every hex string is lowercase, big-endian, zero-padded.  Readers
    accept only moduli of ALLOWED_MODULUS_BITS and reject unknown fields.
    Version history: 1 — first version.
    """

    n_modulus: int
    e: int
    players: int
    threshold: int
    v: int
    verification_keys: tuple[int, ...]

    def __post_init__(self) -> None:
        n_mod = _check_int("n_modulus", self.n_modulus)
        if n_mod.bit_length() < MIN_ANY_MODULUS_BITS or n_mod % 2 == 0:
            raise ValueError(
                f"n_modulus: expected an odd modulus of at least {MIN_ANY_MODULUS_BITS} bits"
            )
        _check_players(self.players, self.threshold)
        _check_e(self.e, self.players)
        if not isinstance(self.verification_keys, tuple):
            raise TypeError("verification_keys: expected a tuple")
        if len(self.verification_keys) != self.players:
            raise ValueError(
                f"verification_keys: expected {self.players} keys, "
                f"got {len(self.verification_keys)}"
            )
        for name, value in [
            ("v", self.v),
            *(("verification_keys", vk) for vk in self.verification_keys),
        ]:
            if not 1 < _check_int(name, value) < n_mod:
                raise ValueError(f"{name}: every element must lie in 2..N-1")

    @property
    def modulus_bits(self) -> int:
        return self.n_modulus.bit_length()

    @property
    def modulus_bytes(self) -> int:
        return (self.modulus_bits + 7) // 8

    @cached_property
    def delta(self) -> int:
        """Δ = n! (Shoup §3): makes every Lagrange coefficient an integer."""
        return math.factorial(self.players)

    @cached_property
    def key_id(self) -> bytes:
        """32-byte identifier of this key: tagged SHA-256 of its canonical JSON."""
        return tagged_hash(TAGS["rsa-key-id"], self.to_json())

    @cached_property
    def _n(self) -> Any:  # gmpy2.mpz, cached: conversions of 3072-bit ints add up in combine
        return gmpy2.mpz(self.n_modulus)

    @cached_property
    def _combine_exponents(self) -> tuple[int, int]:
        """(a, b) with 4Δ²·a + e·b = 1 (Shoup §3); exists because e is a prime > n."""
        g, a, b = gmpy2.gcdext(4 * self.delta * self.delta, self.e)
        if g != 1:  # excluded by __post_init__ (e prime > n), kept as a loud invariant
            raise ValueError("e: not coprime to 4Δ²")
        return int(a), int(b)

    @property
    def z_bits(self) -> int:
        """Upper bound on the bit length of a proof response z = s_i c + r."""
        return self.modulus_bits + 2 * CHALLENGE_BITS + 1

    # -- encodings ---------------------------------------------------------------------------

    def to_cryptography(self) -> rsa.RSAPublicKey:
        return rsa.RSAPublicNumbers(self.e, self.n_modulus).public_key()

    def to_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM of (N, e): what ``openssl dgst -verify`` reads."""
        return self.to_cryptography().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form.  Big integers are fixed-length lowercase hex (RFC 8785 numbers are
        IEEE doubles), small ones are JSON numbers."""
        nb = self.modulus_bytes
        return {
            "format": _KEY_FORMAT,
            "version": _KEY_VERSION,
            "modulus": _hex_fixed(self.n_modulus, nb),
            "public_exponent": self.e,
            "players": self.players,
            "threshold": self.threshold,
            "verification_base": _hex_fixed(self.v, nb),
            "verification_keys": [_hex_fixed(vk, nb) for vk in self.verification_keys],
        }

    def to_json(self) -> bytes:
        """Canonical JSON (RFC 8785) of :meth:`to_dict`; its tagged hash is :attr:`key_id`."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ThresholdPublicKey:
        """Parse and validate a key from the world; raises ``FormatError``.  Only the sizes in
        ``ALLOWED_MODULUS_BITS`` are accepted."""
        if not isinstance(obj, Mapping):
            raise FormatError("threshold public key: expected a JSON object")
        expected = {
            "format",
            "version",
            "modulus",
            "public_exponent",
            "players",
            "threshold",
            "verification_base",
            "verification_keys",
        }
        if set(obj) != expected:
            raise FormatError(
                f"threshold public key: expected fields {sorted(expected)}, got {sorted(obj)}"
            )
        if obj["format"] != _KEY_FORMAT or obj["version"] != _KEY_VERSION:
            raise FormatError(
                f"threshold public key: unsupported format {obj['format']!r} "
                f"version {obj['version']!r}"
            )
        text = obj["modulus"]
        if not isinstance(text, str) or len(text) % 2:
            raise FormatError("modulus: expected an even number of hex digits")
        nb = len(text) // 2
        n_mod = _parse_hex_fixed(text, nb, "modulus")
        if n_mod.bit_length() not in ALLOWED_MODULUS_BITS:
            raise FormatError(
                f"modulus: {n_mod.bit_length()} bits, expected one of {ALLOWED_MODULUS_BITS}"
            )
        keys = obj["verification_keys"]
        if not isinstance(keys, list):
            raise FormatError("verification_keys: expected a list")
        for name in ("public_exponent", "players", "threshold"):
            if not isinstance(obj[name], int) or isinstance(obj[name], bool):
                raise FormatError(f"{name}: expected an integer")
        try:
            return cls(
                n_modulus=n_mod,
                e=obj["public_exponent"],
                players=obj["players"],
                threshold=obj["threshold"],
                v=_parse_hex_fixed(obj["verification_base"], nb, "verification_base"),
                verification_keys=tuple(
                    _parse_hex_fixed(vk, nb, f"verification_keys[{i}]") for i, vk in enumerate(keys)
                ),
            )
        except (TypeError, ValueError) as exc:
            raise FormatError(f"threshold public key: {exc}") from exc

    @classmethod
    def from_json(cls, data: bytes) -> ThresholdPublicKey:
        """Parse :meth:`to_json` output (any valid JSON layout is accepted)."""
        if len(data) > _MAX_KEY_JSON_BYTES:
            raise FormatError(f"threshold public key: {len(data)} bytes is too large")
        try:
            obj = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"threshold public key: not valid JSON: {exc}") from exc
        return cls.from_dict(obj)


# ----------------------------------------------------------------------------- shares


@dataclass(frozen=True, repr=False)
class KeyShare:
    """Player ``index``'s secret share s_i of d.

    It does not embed the public key: a node keeps one public key file and one share file.
    ``key_id`` names the public key the share belongs to, so a mismatched pair is refused
    before anything is signed.  ``repr`` never shows the secret.
    """

    index: int
    secret: int
    key_id: bytes

    def __post_init__(self) -> None:
        if _check_int("index", self.index) < 1:
            raise ValueError(f"index: expected >= 1, got {self.index}")
        if _check_int("secret", self.secret) < 0:
            raise ValueError("secret: expected a non-negative integer")
        if not isinstance(self.key_id, bytes) or len(self.key_id) != 32:
            raise ValueError("key_id: expected 32 bytes")

    def __repr__(self) -> str:
        return f"KeyShare(index={self.index}, key_id={self.key_id.hex()[:16]}…, secret=<hidden>)"


@dataclass(frozen=True)
class SignatureShare:
    """Signer ``index``'s share x_i of the signature on one message, with its proof (c, z), or
    without one (``proof_c`` and ``proof_z`` both None: :func:`share_value`, proofs on demand).

    Byte form (:meth:`to_bytes`, version 1), fixed length for a given key::

        offset      size   field
        0           1      version = 0x01
        1           2      index, big-endian, 1..n
        3           B      x_i, big-endian, B = modulus bytes, 0 < x_i < N
        3+B         16     c, the L1 = 128-bit challenge
        19+B        Z      z, big-endian, Z = ⌈(|N| + 2·L1 + 1) / 8⌉, z < 2^(|N| + 2·L1 + 1)

    (564 bytes for a 2048-bit key, 820 for 3072.)  Only a share with its proof has a byte
    form.  Version history: 1 — first version.
    """

    index: int
    value: int
    proof_c: int | None = None
    proof_z: int | None = None

    def __post_init__(self) -> None:
        for name in ("index", "value"):
            _check_int(name, getattr(self, name))
        if (self.proof_c is None) != (self.proof_z is None):
            raise ValueError("proof_c and proof_z: give both or neither")
        if self.proof_c is not None:
            _check_int("proof_c", self.proof_c)
            _check_int("proof_z", self.proof_z)

    @property
    def proven(self) -> bool:
        """True if the share carries its proof of correctness."""
        return self.proof_c is not None

    @staticmethod
    def encoded_length(public: ThresholdPublicKey) -> int:
        return 3 + public.modulus_bytes + CHALLENGE_BITS // 8 + (public.z_bits + 7) // 8

    def to_bytes(self, public: ThresholdPublicKey) -> bytes:
        problem = _share_structure_problem(public, self)
        if problem is not None:
            raise ValueError(f"share: {problem}")
        if self.proof_c is None or self.proof_z is None:
            raise ValueError("share: only a share with its proof has a byte form")
        return (
            bytes([_SHARE_VERSION])
            + self.index.to_bytes(2, "big")
            + self.value.to_bytes(public.modulus_bytes, "big")
            + self.proof_c.to_bytes(CHALLENGE_BITS // 8, "big")
            + self.proof_z.to_bytes((public.z_bits + 7) // 8, "big")
        )

    @classmethod
    def from_bytes(cls, public: ThresholdPublicKey, data: bytes) -> SignatureShare:
        """Parse and range-check a share received from a node; raises ``FormatError``.
        (Whether the share is *correct* is :func:`verify_share`'s job.)"""
        raw = bytes(data)
        want = cls.encoded_length(public)
        if len(raw) != want:
            raise FormatError(f"signature share: expected {want} bytes, got {len(raw)}")
        if raw[0] != _SHARE_VERSION:
            raise FormatError(f"signature share: unsupported version {raw[0]}")
        nb = public.modulus_bytes
        cb = CHALLENGE_BITS // 8
        share = cls(
            index=int.from_bytes(raw[1:3], "big"),
            value=int.from_bytes(raw[3 : 3 + nb], "big"),
            proof_c=int.from_bytes(raw[3 + nb : 3 + nb + cb], "big"),
            proof_z=int.from_bytes(raw[3 + nb + cb :], "big"),
        )
        problem = _share_structure_problem(public, share)
        if problem is not None:
            raise FormatError(f"signature share: {problem}")
        return share


def _share_structure_problem(public: ThresholdPublicKey, share: SignatureShare) -> str | None:
    """What is wrong with a share's ranges, or None: checks that need no exponentiation."""
    if not 1 <= share.index <= public.players:
        return f"index {share.index} is not in 1..{public.players}"
    if not 0 < share.value < public.n_modulus:
        return "value is not in 1..N-1"
    if share.proof_c is not None and not 0 <= share.proof_c < (1 << CHALLENGE_BITS):
        return f"proof challenge is not a {CHALLENGE_BITS}-bit number"
    if share.proof_z is not None and not 0 <= share.proof_z < (1 << public.z_bits):
        return f"proof response is not a {public.z_bits}-bit number"
    return None


@dataclass(frozen=True)
class CombineResult:
    """A combined signature (RSASSA-PSS, modulus-length bytes) and what happened on the way.

    ``signers`` are the k indices whose shares made the signature; ``bad_signers`` maps each
    signer whose shares were all rejected to the reason.  It is empty when the optimistic
    combination succeeded at once, except for shares refused on their ranges alone.
    """

    signature: bytes
    signers: tuple[int, ...]
    bad_signers: dict[int, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- dealer


def generate_primes(
    modulus_bits: int,
    *,
    rng: RandomSource | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[int, int]:
    """Two distinct safe primes whose product has exactly ``modulus_bits`` bits."""
    _check_int("modulus_bits", modulus_bits)
    if modulus_bits % 2:
        raise ValueError(f"modulus_bits: expected an even size, got {modulus_bits}")
    half = modulus_bits // 2
    p = generate_safe_prime(half, rng, progress=progress, prime_index=1, primes_needed=2)
    while True:
        q = generate_safe_prime(half, rng, progress=progress, prime_index=2, primes_needed=2)
        if q != p:
            return p, q


def deal(
    players: int,
    threshold: int,
    modulus_bits: int = DEFAULT_MODULUS_BITS,
    *,
    e: int = DEFAULT_PUBLIC_EXPONENT,
    rng: RandomSource | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[ThresholdPublicKey, list[KeyShare]]:
    """Make a fresh k-of-n key (Shoup Protocol 1 dealer): the public key and n key shares.

    ``modulus_bits`` must be one of ``ALLOWED_MODULUS_BITS``.  Key generation is dominated by
    the two safe primes (seconds at 3072 bits; see `evault bench crypto`); ``progress``
    receives :class:`~evault.crypto.numbers.KeygenProgress` events.  The primes, d and the
    polynomial are local to this call and are not returned.
    """
    _check_players(players, threshold)
    _check_e(e, players)
    _check_int("modulus_bits", modulus_bits)
    if modulus_bits not in ALLOWED_MODULUS_BITS:
        raise ValueError(
            f"modulus_bits: expected one of {ALLOWED_MODULUS_BITS}, got {modulus_bits}"
        )
    rng = DEFAULT_RNG if rng is None else rng
    p, q = generate_primes(modulus_bits, rng=rng, progress=progress)
    return _deal_from_primes(
        p, q, players, threshold, e=e, rng=rng, progress=progress, allowed_bits=ALLOWED_MODULUS_BITS
    )


def deal_from_primes(
    p: int,
    q: int,
    players: int,
    threshold: int,
    *,
    e: int = DEFAULT_PUBLIC_EXPONENT,
    rng: RandomSource | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[ThresholdPublicKey, list[KeyShare]]:
    """The dealer's second half, from two safe primes it already has.

    Checks that p and q are distinct safe primes and that N = pq has one of the
    ``ALLOWED_MODULUS_BITS`` sizes.  Lets a test suite (or a dealer that wants several
    (n, k) settings of one modulus) pay for prime generation once.
    """
    return _deal_from_primes(
        p,
        q,
        players,
        threshold,
        e=e,
        rng=DEFAULT_RNG if rng is None else rng,
        progress=progress,
        allowed_bits=ALLOWED_MODULUS_BITS,
    )


def _deal_from_primes(
    p: int,
    q: int,
    players: int,
    threshold: int,
    *,
    e: int,
    rng: RandomSource,
    progress: ProgressCallback | None,
    allowed_bits: tuple[int, ...] | None,
) -> tuple[ThresholdPublicKey, list[KeyShare]]:
    _check_players(players, threshold)
    _check_e(e, players)
    _check_int("p", p)
    _check_int("q", q)
    n_mod = p * q
    bits = n_mod.bit_length()
    if allowed_bits is not None and bits not in allowed_bits:
        raise ValueError(f"p, q: N = pq has {bits} bits, expected one of {allowed_bits}")
    if bits < MIN_ANY_MODULUS_BITS:
        raise ValueError(f"p, q: N = pq has {bits} bits, fewer than {MIN_ANY_MODULUS_BITS}")
    if p == q or not is_safe_prime(p) or not is_safe_prime(q):
        raise ValueError("p, q: expected two distinct safe primes")
    m = ((p - 1) // 2) * ((q - 1) // 2)  # m = p'q', the order of the squares mod N
    if math.gcd(e, m) != 1:
        raise ValueError(f"e: {e} divides p'q'")
    if progress is not None:
        progress(KeygenProgress("shares", 2, 2, 0))
    d = int(gmpy2.invert(e, m))
    # Shamir sharing of d over Z_m with uniformly random coefficients (Shoup §3).
    coefficients = [d] + [random_below(rng, m) for _ in range(threshold - 1)]
    secrets_: list[int] = []
    for i in range(1, players + 1):
        acc = 0
        for coefficient in reversed(coefficients):  # Horner
            acc = (acc * i + coefficient) % m
        secrets_.append(acc)
    # v: a random square; it generates the squares mod N with probability 1 - O(1/p').
    while True:
        root = random_below(rng, n_mod)
        if root > 1 and math.gcd(root, n_mod) == 1:
            v = int(gmpy2.powmod(root, 2, n_mod))
            if v != 1:
                break
    verification = tuple(int(_powmod_secret(v, s, n_mod)) for s in secrets_)
    public = ThresholdPublicKey(
        n_modulus=n_mod,
        e=e,
        players=players,
        threshold=threshold,
        v=v,
        verification_keys=verification,
    )
    shares = [
        KeyShare(index=i, secret=s, key_id=public.key_id) for i, s in enumerate(secrets_, start=1)
    ]
    return public, shares


# ----------------------------------------------------------------------------- signing


def _powmod_secret(base: Any, exponent: int, modulus: Any) -> Any:
    """base^exponent mod modulus in time independent of the (secret) exponent's bits."""
    if exponent == 0:  # probability 2^-3000; powmod_sec refuses 0
        return gmpy2.mpz(1)
    return gmpy2.powmod_sec(base, exponent, modulus)


class PrecomputedNonce:
    """One proof nonce r (|N| + 2·L1 bits) with its commitment v' = v^r, computed before the
    message is known; usable by exactly one :func:`sign_share` call (see the module text).

    Deliberately not a frozen dataclass: it is a one-shot capability, not a value.  It has no
    value equality, its ``repr`` hides r, it cannot be copied or pickled, and spending it
    erases it, so the same r can never answer two challenges.
    """

    __slots__ = ("_lock", "_pid", "_r", "_v_commit", "key_id")

    def __init__(self, public: ThresholdPublicKey, *, rng: RandomSource | None = None) -> None:
        """Draw r from ``rng`` (``secrets.SystemRandom()`` by default) exactly as the inline
        path of :func:`sign_share` does, and compute v^r in constant time."""
        if not isinstance(public, ThresholdPublicKey):
            raise TypeError("public: expected a ThresholdPublicKey")
        rng = DEFAULT_RNG if rng is None else rng
        r = random_bits(rng, public.modulus_bits + 2 * CHALLENGE_BITS)
        self._v_commit: Any = _powmod_secret(public.v, r, public._n)
        self._r: int | None = r
        self.key_id: bytes = public.key_id
        self._lock = threading.Lock()
        # fork() copies memory, pool included: a nonce may be spent only by its own process.
        self._pid = os.getpid()

    @property
    def spent(self) -> bool:
        """True once a signature used this nonce (or its process is not the one that made it)."""
        with self._lock:
            return self._r is None or self._pid != os.getpid()

    def _spend(self) -> tuple[int, Any]:
        """(r, v^r), exactly once: the pair is erased under the lock before it is returned."""
        with self._lock:
            r, v_commit = self._r, self._v_commit
            self._r = None
            self._v_commit = None
            if r is None:
                raise ValueError("nonce: already used (a nonce answers exactly one challenge)")
            if self._pid != os.getpid():
                raise ValueError("nonce: made by another process (copied by fork); not used")
            return r, v_commit

    def __repr__(self) -> str:
        state = "spent" if self.spent else "unspent"
        return f"PrecomputedNonce(key_id={self.key_id.hex()[:16]}…, {state}, r=<hidden>)"

    def __copy__(self) -> PrecomputedNonce:
        raise TypeError("PrecomputedNonce cannot be copied: a copy would reuse r")

    def __deepcopy__(self, memo: object) -> PrecomputedNonce:
        raise TypeError("PrecomputedNonce cannot be copied: a copy would reuse r")

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("PrecomputedNonce cannot be pickled: a stored nonce could be replayed")


class NoncePool:
    """A thread-safe pool of :class:`PrecomputedNonce` for one public key, at most ``capacity``.

    :meth:`fill_one` computes one nonce (one constant-time exponentiation, outside the lock) and
    adds it unless the pool is full; :meth:`take` pops one under the lock, or returns None when
    the pool is empty, so ``sign_share(..., nonce=pool.take())`` computes a fresh nonce inline
    then.  Each nonce leaves the pool exactly once.  The pool does no scheduling of its own:
    the caller decides when to fill it (``evault.node.signing.ShareSigner`` does it in a
    background thread).  Like its nonces, it cannot be copied or pickled.
    """

    def __init__(
        self,
        public: ThresholdPublicKey,
        capacity: int,
        *,
        rng: RandomSource | None = None,
    ) -> None:
        if not isinstance(public, ThresholdPublicKey):
            raise TypeError("public: expected a ThresholdPublicKey")
        if _check_int("capacity", capacity) < 1:
            raise ValueError(f"capacity: expected >= 1, got {capacity}")
        self.public = public
        self.capacity = capacity
        self._rng = DEFAULT_RNG if rng is None else rng
        self._lock = threading.Lock()
        self._nonces: deque[PrecomputedNonce] = deque()

    def __len__(self) -> int:
        with self._lock:
            return len(self._nonces)

    def fill_one(self) -> bool:
        """Compute one nonce and add it; False (nothing computed) when the pool is already full.

        The exponentiation runs outside the lock so :meth:`take` never waits for it; if other
        threads filled the pool meanwhile, the new nonce is dropped unused."""
        if len(self) >= self.capacity:
            return False
        nonce = PrecomputedNonce(self.public, rng=self._rng)
        with self._lock:
            if len(self._nonces) >= self.capacity:
                return False
            self._nonces.append(nonce)
            return True

    def take(self) -> PrecomputedNonce | None:
        """Pop one unspent nonce of this process, or None when there is none."""
        with self._lock:
            while self._nonces:
                nonce = self._nonces.popleft()
                if not nonce.spent:
                    return nonce
            return None

    def clear(self) -> None:
        """Drop every nonce (they are never used afterwards)."""
        with self._lock:
            self._nonces.clear()

    def __repr__(self) -> str:
        return f"NoncePool({len(self)}/{self.capacity}, key_id={self.public.key_id.hex()[:16]}…)"

    def __copy__(self) -> NoncePool:
        raise TypeError("NoncePool cannot be copied: a copy would hand out the same nonces twice")

    def __deepcopy__(self, memo: object) -> NoncePool:
        raise TypeError("NoncePool cannot be copied: a copy would hand out the same nonces twice")

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("NoncePool cannot be pickled: stored nonces could be replayed")


def _challenge(
    public: ThresholdPublicKey,
    index: int,
    x_tilde: Any,
    v_i: int,
    x_i_squared: Any,
    v_commit: Any,
    x_commit: Any,
) -> int:
    """c = H(key id, i, v, x̃, v_i, x_i², v', x') truncated to L1 bits (Shoup §3, with every
    group element as a fixed-length big-endian string so the encoding is injective)."""
    nb = public.modulus_bytes
    digest = tagged_hash(
        TAGS["shoup-proof"],
        public.key_id,
        index.to_bytes(4, "big"),
        *(
            int(element).to_bytes(nb, "big")
            for element in (public.v, x_tilde, v_i, x_i_squared, v_commit, x_commit)
        ),
    )
    return int.from_bytes(digest[: CHALLENGE_BITS // 8], "big")


def _message_integer(public: ThresholdPublicKey, message: bytes) -> Any:
    """x = OS2IP(EMSA-PSS-ENCODE(message)) < N, the integer the scheme signs."""
    if not isinstance(message, bytes | bytearray | memoryview):
        raise TypeError("message: expected bytes")
    return gmpy2.mpz(pss.encode_message(bytes(message), public.modulus_bits))


def _message_power(public: ThresholdPublicKey, message: bytes) -> Any:
    """x^(2Δ) for the PSS-encoded message x."""
    return gmpy2.powmod(_message_integer(public, message), 2 * public.delta, public._n)


def sign_share(
    share: KeyShare,
    public: ThresholdPublicKey,
    message: bytes,
    *,
    rng: RandomSource | None = None,
    nonce: PrecomputedNonce | None = None,
) -> SignatureShare:
    """Signer ``share.index``'s signature share on ``message``, with its proof of correctness.

    The signer PSS-encodes the message itself (evault.crypto.pss); it never signs an integer
    it is handed.  Cost: three constant-time exponentiations mod N, one with s_i and two with
    the nonce r (|N| + 2·L1 bits).  With ``nonce`` (a :class:`PrecomputedNonce` of this key,
    typically ``pool.take()``) v^r is already done and the cost is two; the nonce is spent
    and cannot be used again.  ``nonce=None`` draws r from ``rng`` inline.
    """
    _check_signer(share, public)
    if nonce is not None:
        if not isinstance(nonce, PrecomputedNonce):
            raise TypeError("nonce: expected a PrecomputedNonce or None")
        if nonce.key_id != public.key_id:
            raise ValueError("nonce: made for another public key (key ids differ)")
    n_mod = public._n
    x_2delta = _message_power(public, message)
    if nonce is None:
        r = random_bits(
            DEFAULT_RNG if rng is None else rng, public.modulus_bits + 2 * CHALLENGE_BITS
        )
        v_commit = _powmod_secret(public.v, r, n_mod)
    else:
        # Spent before any secret-dependent work: if signing failed from here on, the nonce
        # is lost (harmless), never put back (a put-back nonce could answer a second c).
        r, v_commit = nonce._spend()
    x_i = _powmod_secret(x_2delta, share.secret, n_mod)  # x^(2Δ s_i)
    x_tilde = x_2delta * x_2delta % n_mod  # x̃ = x^(4Δ)
    x_commit = _powmod_secret(x_tilde, r, n_mod)
    v_i = public.verification_keys[share.index - 1]
    c = _challenge(public, share.index, x_tilde, v_i, x_i * x_i % n_mod, v_commit, x_commit)
    z = share.secret * c + r
    return SignatureShare(index=share.index, value=int(x_i), proof_c=c, proof_z=z)


def share_value(share: KeyShare, public: ThresholdPublicKey, message: bytes) -> SignatureShare:
    """Signer ``share.index``'s share x_i = x^(2Δ s_i) on ``message``, without its proof.

    One constant-time exponentiation instead of three: the cost of an optimistic signer, whose
    share a combiner uses as is (:func:`combine`) and whose proof it asks for
    (:func:`sign_share`) only if the combination fails to verify (proofs on demand).  A share
    without a proof is exactly as binding: the combined signature is checked (y^e = x) before
    anyone relies on it; the proof only serves to name a signer whose share is wrong.
    """
    _check_signer(share, public)
    x_2delta = _message_power(public, message)
    return SignatureShare(
        index=share.index, value=int(_powmod_secret(x_2delta, share.secret, public._n))
    )


def _check_signer(share: KeyShare, public: ThresholdPublicKey) -> None:
    if not isinstance(share, KeyShare):
        raise TypeError("share: expected a KeyShare")
    if share.key_id != public.key_id:
        raise ValueError("share: belongs to another public key (key ids differ)")
    if not 1 <= share.index <= public.players:
        raise ValueError(f"share: index {share.index} is not in 1..{public.players}")


def verify_share(public: ThresholdPublicKey, message: bytes, share: SignatureShare) -> None:
    """Check a share's proof of correctness; raise ``InvalidShare`` naming the signer if it fails.

    Recomputes v' = v^z · v_i^-c and x' = x̃^z · (x_i²)^-c and checks that they hash to c.
    A share off by a square root of 1 (e.g. N − x_i) passes, by design: see the module text.
    """
    problem = _share_structure_problem(public, share)
    if problem is not None:
        raise InvalidShare(share.index, problem)
    if share.proof_c is None or share.proof_z is None:
        raise InvalidShare(share.index, "carries no proof of correctness")
    n_mod = public._n
    value = gmpy2.mpz(share.value)
    if gmpy2.gcd(value, n_mod) != 1:
        raise InvalidShare(share.index, "value is not invertible mod N")
    x_2delta = _message_power(public, message)
    x_tilde = x_2delta * x_2delta % n_mod
    v_i = public.verification_keys[share.index - 1]
    x_i_squared = value * value % n_mod
    c, z = share.proof_c, share.proof_z
    # Two public-exponent products; one inversion each (the divisor is v_i^c or (x_i²)^c).
    v_commit = (
        gmpy2.powmod(public.v, z, n_mod) * gmpy2.invert(gmpy2.powmod(v_i, c, n_mod), n_mod)
    ) % n_mod
    x_commit = (
        gmpy2.powmod(x_tilde, z, n_mod) * gmpy2.invert(gmpy2.powmod(x_i_squared, c, n_mod), n_mod)
    ) % n_mod
    if _challenge(public, share.index, x_tilde, v_i, x_i_squared, v_commit, x_commit) != c:
        raise InvalidShare(share.index, "proof of correctness does not verify for this message")


def verify_key_share(public: ThresholdPublicKey, share: KeyShare) -> None:
    """Check that a key share matches its verification key (v^s_i = v_i); a node runs this at
    start-up so a wrong share file fails loudly instead of producing invalid shares."""
    if share.key_id != public.key_id:
        raise CryptoError(
            f"key share {share.index} belongs to another public key",
            index=share.index,
        )
    if not 1 <= share.index <= public.players:
        raise CryptoError(f"key share index {share.index} is not in 1..{public.players}")
    if (
        _powmod_secret(public.v, share.secret, public._n)
        != public.verification_keys[share.index - 1]
    ):
        raise CryptoError(
            f"key share {share.index} does not match its verification key", index=share.index
        )


# ----------------------------------------------------------------------------- combining


def _combine_subset(
    public: ThresholdPublicKey, x: Any, shares: Sequence[SignatureShare]
) -> Any | None:
    """y with y^e = x from k shares (Shoup §3), or None when the result does not verify.

    w = Π x_j^(2λ_j), y = w^a x^b.  Signs are gathered into a numerator and a denominator so
    the whole combination costs one modular inversion; every exponent here is public and short
    (|2λ_j| ≈ log2(Δ·n^k), |a|, |b| ≈ 17 bits for e = 65537), so this is cheap.
    """
    n_mod = public._n
    lambdas = lagrange_coefficients_at_zero(public.delta, [s.index for s in shares])
    a, b = public._combine_exponents
    w_num = gmpy2.mpz(1)
    w_den = gmpy2.mpz(1)
    for s in shares:
        exponent = 2 * lambdas[s.index]
        if exponent > 0:
            w_num = w_num * gmpy2.powmod(s.value, exponent, n_mod) % n_mod
        elif exponent < 0:
            w_den = w_den * gmpy2.powmod(s.value, -exponent, n_mod) % n_mod
    # y = (w_num / w_den)^a · x^b with exactly one of a, b negative.
    if a < 0:
        w_num, w_den = w_den, w_num
    num = gmpy2.powmod(w_num, abs(a), n_mod)
    den = gmpy2.powmod(w_den, abs(a), n_mod)
    x_b = gmpy2.powmod(x, abs(b), n_mod)
    if b >= 0:
        num = num * x_b % n_mod
    else:
        den = den * x_b % n_mod
    try:
        y = num * gmpy2.invert(den, n_mod) % n_mod
    except ZeroDivisionError:
        return None  # a share not invertible mod N: never from an honest signer
    if gmpy2.powmod(y, public.e, n_mod) != x:
        return None
    return y


def combine(
    public: ThresholdPublicKey, message: bytes, shares: Sequence[SignatureShare]
) -> CombineResult:
    """Combine signature shares into an RSASSA-PSS signature on ``message``.

    Optimistic (DESIGN §4): the first k well-formed shares are combined and the result checked
    with y^e = x.  Only if that fails is every share's proof verified; the bad ones are
    excluded and named in ``bad_signers`` and the combination is redone.  Raises
    ``NotEnoughShares(have, need, bad)`` when fewer than k acceptable shares remain.  Shares
    without proofs (:func:`share_value`) cannot be judged on the pessimistic path ("carries no
    proof of correctness"); they only fill up a set of proven good shares that is short of k,
    in one more checked combination.  A caller holding unproven shares that do not combine
    asks their signers for proofs (proofs on demand) and combines again.
    """
    if not isinstance(public, ThresholdPublicKey):
        raise TypeError("public: expected a ThresholdPublicKey")
    need = public.threshold
    bad: dict[int, str] = {}
    seen: set[int] = set()
    candidates: list[SignatureShare] = []
    duplicates: list[SignatureShare] = []
    for s in shares:
        if not isinstance(s, SignatureShare):
            raise TypeError("shares: expected SignatureShare items")
        problem = _share_structure_problem(public, s)
        if problem is not None:
            bad.setdefault(s.index, problem)
        elif s.index in seen:
            duplicates.append(s)
        else:
            seen.add(s.index)
            candidates.append(s)
    if len(candidates) < need:
        raise NotEnoughShares(have=len(candidates), need=need, bad=bad)
    x = _message_integer(public, message)
    y = _combine_subset(public, x, candidates[:need])
    if y is None:
        # Pessimistic path: check every proof, keep the good shares (a signer who sent several
        # different shares is judged on the first one that verifies).
        good: dict[int, SignatureShare] = {}
        for s in candidates + duplicates:
            if s.index in good:
                continue
            try:
                verify_share(public, message, s)
            except InvalidShare as exc:
                bad.setdefault(s.index, exc.reason)
            else:
                bad.pop(s.index, None)
                good[s.index] = s
        usable = list(good.values())
        if len(usable) >= need:
            candidates = usable
            y = _combine_subset(public, x, usable[:need])
            if y is None:  # verified shares always combine unless the key is inconsistent
                raise CryptoError(
                    "verified signature shares do not combine: the public key does not match "
                    "the key shares"
                )
        else:
            # Too few proven good shares.  Shares without proofs cannot be judged one by one,
            # but a signature they help make is checked like any other (y^e = x): fill up with
            # them, in the order given, and try once.
            unproven = [s for s in candidates if not s.proven and s.index not in good]
            trial = usable + unproven[: need - len(usable)]
            y = _combine_subset(public, x, trial) if len(trial) == need else None
            if y is None:
                raise NotEnoughShares(have=len(usable), need=need, bad=bad)
            candidates = trial
    signers = tuple(s.index for s in candidates[:need])
    # A signer whose share made the signature is not "bad", even if it also sent a broken one.
    for index in signers:
        bad.pop(index, None)
    return CombineResult(
        signature=int(y).to_bytes(public.modulus_bytes, "big"),
        signers=signers,
        bad_signers=bad,
    )


# ----------------------------------------------------------------------------- verification


def verify_signature(
    public: ThresholdPublicKey | rsa.RSAPublicKey | bytes,
    message: bytes,
    signature: bytes,
) -> None:
    """Verify a combined (ordinary RSASSA-PSS SHA-256, salt 32) signature with ``cryptography``.

    ``public`` is a ThresholdPublicKey, a ``cryptography`` RSA public key, or PEM bytes.
    Raises ``InvalidSignature`` if it does not verify, ``FormatError`` for an unreadable PEM.
    """
    if isinstance(public, ThresholdPublicKey):
        key: rsa.RSAPublicKey = public.to_cryptography()
    elif isinstance(public, rsa.RSAPublicKey):
        key = public
    elif isinstance(public, bytes | bytearray):
        try:
            loaded = serialization.load_pem_public_key(bytes(public))
        except (ValueError, TypeError) as exc:
            raise FormatError(f"public key: not a PEM public key: {exc}") from exc
        if not isinstance(loaded, rsa.RSAPublicKey):
            raise FormatError("public key: not an RSA key")
        key = loaded
    else:
        raise TypeError("public: expected a ThresholdPublicKey, an RSA public key or PEM bytes")
    try:
        key.verify(
            bytes(signature),
            bytes(message),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=pss.SALT_BYTES),
            hashes.SHA256(),
        )
    except _CryptoInvalidSignature:
        raise InvalidSignature(
            "the signature does not verify under the vault public key", key_bits=key.key_size
        ) from None
