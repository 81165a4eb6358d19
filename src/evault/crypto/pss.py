"""RSASSA-PSS message encoding with a salt derived from the message (RFC 8017 §9.1.1).

A threshold signature is an RSA signature on an integer x that every signer must compute
*identically and by itself* from the statement it checked: a signer never exponentiates an
integer it was handed.  Ordinary PSS draws a random salt, which signers cannot agree on without
another round, so the salt here is derived from the message::

    salt = tagged_hash("evault/pss-salt/v1", message)          # 32 bytes

Every other step is EMSA-PSS-ENCODE exactly as RFC 8017 §9.1.1 states it, with Hash = SHA-256,
MGF = MGF1-SHA-256 (RFC 8017 §B.2.1) and sLen = 32, so the combined signature is an ordinary
RSASSA-PSS signature that ``cryptography``, ``openssl dgst -sigopt rsa_padding_mode:pss
-sigopt rsa_pss_saltlen:32`` and WebCrypto (RSA-PSS, saltLength 32) verify.  A verifier does not
need to know how the salt was chosen.  With a deterministic salt PSS keeps the security of
full-domain-hash RSA (Coron, Crypto 2002): the random salt only tightens the reduction.
"""

from __future__ import annotations

import hashlib

from evault.encoding.tagged import TAGS, tagged_hash

__all__ = [
    "HASH_BYTES",
    "SALT_BYTES",
    "derive_salt",
    "emsa_pss_encode",
    "encode_message",
    "mgf1_sha256",
]

HASH_BYTES = 32  # hLen for SHA-256
SALT_BYTES = 32  # sLen: the salt length verifiers are told (rsa_pss_saltlen:32)


def mgf1_sha256(seed: bytes, length: int) -> bytes:
    """MGF1 with SHA-256 (RFC 8017 §B.2.1)."""
    if length < 0:
        raise ValueError(f"length: expected >= 0, got {length}")
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:length])


def derive_salt(message: bytes) -> bytes:
    """The 32-byte salt every signer derives from the message (domain-tagged SHA-256)."""
    return tagged_hash(TAGS["pss-salt"], message)


def emsa_pss_encode(message: bytes, em_bits: int, salt: bytes) -> bytes:
    """EMSA-PSS-ENCODE(M, emBits) of RFC 8017 §9.1.1 with SHA-256, MGF1-SHA-256, given salt.

    Returns EM of emLen = ⌈emBits/8⌉ bytes.  For RSASSA-PSS, emBits = modBits - 1 (§8.1.1).
    """
    if not isinstance(message, bytes | bytearray | memoryview):
        raise TypeError("message: expected bytes")
    s_len = len(salt)
    em_len = (em_bits + 7) // 8
    # Step 3: emLen < hLen + sLen + 2 → "encoding error".
    if em_len < HASH_BYTES + s_len + 2:
        raise ValueError(f"em_bits: {em_bits} is too small for SHA-256 with a {s_len}-byte salt")
    m_hash = hashlib.sha256(message).digest()  # step 2
    m_prime = bytes(8) + m_hash + salt  # step 5: M' = (0x)00 00 00 00 00 00 00 00 || mHash || salt
    h = hashlib.sha256(m_prime).digest()  # step 6
    ps = bytes(em_len - s_len - HASH_BYTES - 2)  # step 7
    db = ps + b"\x01" + salt  # step 8
    db_mask = mgf1_sha256(h, em_len - HASH_BYTES - 1)  # step 9
    db_len = len(db)
    masked = int.from_bytes(db, "big") ^ int.from_bytes(db_mask, "big")  # step 10
    # Step 11: clear the leftmost 8·emLen − emBits bits of maskedDB.
    masked &= (1 << (8 * db_len - (8 * em_len - em_bits))) - 1
    return masked.to_bytes(db_len, "big") + h + b"\xbc"  # step 12


def encode_message(message: bytes, modulus_bits: int) -> int:
    """OS2IP(EMSA-PSS-ENCODE(message, modulus_bits - 1)) with the derived salt: the integer
    x < N that the threshold signature exponentiates (RFC 8017 §8.1.1 steps 1–2a)."""
    em = emsa_pss_encode(message, modulus_bits - 1, derive_salt(bytes(message)))
    return int.from_bytes(em, "big")
