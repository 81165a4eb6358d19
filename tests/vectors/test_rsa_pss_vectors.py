"""EMSA-PSS encoding (evault.crypto.pss) against published vectors and an independent verifier.

Sources:
- NIST CAVP "186-3rsatestvectors", SigGenPSS_186-3.rsp (salt length 0), mod = 1024,
  SHAAlg = SHA256, as kept in pyca/cryptography's vectors
  (vectors/cryptography_vectors/asymmetric/RSA/FIPS_186-2/SigGenPSS_186-3.rsp).
  For each (Msg, S): EM = S^e mod n must equal our EMSA-PSS-ENCODE(Msg) with the empty salt.
- Project Wycheproof, testvectors/rsa_pss_2048_sha256_mgf1_32_test.json (C2SP/wycheproof),
  "valid" cases 1, 3, 5, 7: EM = sig^e mod n; the salt is recovered with the RFC 8017 §9.1.2
  verifier below, and our encoder given that salt must rebuild EM byte for byte.
- The verifier below is written from RFC 8017 §9.1.2 (EMSA-PSS-VERIFY) in this file, sharing no
  code with evault.crypto.pss, so an encoder bug cannot hide behind a matching verifier bug.
"""

from __future__ import annotations

import hashlib

import pytest

from evault.crypto.pss import derive_salt, emsa_pss_encode, encode_message

NIST_N_1024 = int(
    "c87155f3d9f3771f6ab89ef30cd36230463902ff0633aa869b6dbd7592c83f4b2f882739ff499f1499fb0db4586c"
    "7f7b2dfd5a37dbe0df37dea9d0d5814a4047b647c1d8eb356ebae6a198899f97c25f9182fab2b6be88384a1b8cb1"
    "6a82a05aaadf610ce2e045b41b8880a13b7133ea07296126471c9a450ae48bc880102c8b",
    16,
)
NIST_E_1024 = 0x1001
NIST_SHA256_SALT0 = [
    (
        "19828d058058243557e29ec3f95b566fb4292c6e7dc0d56ae1c475cb3f6d6f3535307b51589cfad1288287ae"
        "4358cfb4d8dfa2415f044a4a87041b9e70d44b6f1bc0040e1f52b8f69d75b50c75daf925ba9b47c9641f7a3745"
        "3d1aa83fa42dd8b37a4fc33c4305ac9e054f64f9a97cc943a5428df4d80e3903b5997112a4bc79",
        "A3263F4C84AB6EF687A3853E5D91D296B125428F80F3C4DCEFCF4FB7F1C41CEBF9AA3CFD0CF2B617EC2DF8AB"
        "3379FFCC7FDF72EC659940E0DCDFA453BEF7E9172941B5C8AAF87E58DE3316F103856D922AE5929B3B6CF2A7"
        "BBF95C49DDBD8C15B4AC73370D0A28B20514637ABFF56157E15DF57C5860EDEBED44D4917F2D1F8B",
    ),
    (
        "1e0ffcab2f1d52641097cf6cb3b696eeed10b450d56ca5ad6dd5198684edf8b4da84a3a186697db89580aa1a"
        "f41516939070b9ccbbaa1ac2d2bf12761ce3d3e7f61a283d2d03ff47acf42427574c4f4c360561a1d689eb04ec"
        "c7f0fa3c85eca1b9f814e6ee92e0f79c1bc7fca503490228f73337eeb21f5d05163a79aa7b4acb",
        "1A0A52B98714806EF7499C9DBBE51738AA4D38A3EA434C6A1742A46A7620E2EC9353349CAA23834FBD634A82"
        "4D4700A610E00AA5BF87B1DF7B2900D7E4E07454A30F1FE744CEB757B8F92CF055D226E84D5E633F589E53B0"
        "373EE80A59EADA4B7259F5182DC591427345232EBCAF4DDBD4F9DC90313415E96CF53C59C16281FE",
    ),
]

WYCHEPROOF_N_2048 = int(
    "a2b451a07d0aa5f96e455671513550514a8a5b462ebef717094fa1fee82224e637f9746d3f7cafd31878d80325b6"
    "ef5a1700f65903b469429e89d6eac8845097b5ab393189db92512ed8a7711a1253facd20f79c15e8247f3d3e42e4"
    "6e48c98e254a2fe9765313a03eff8f17e1a029397a1fa26a8dce26f490ed81299615d9814c22da610428e09c7d96"
    "58594266f5c021d0fceca08d945a12be82de4d1ece6b4c03145b5d3495d4ed5411eb878daf05fd7afc3e09ada0f1"
    "126422f590975a1969816f48698bcbba1b4d9cae79d460d8f9f85e7975005d9bc22c4e5ac0f7c1a45d12569a6280"
    "7d3b9a02e5a530e773066f453d1f5b4c2e9cf7820283f742b9d5",
    16,
)
WYCHEPROOF_SHA256_SALT32 = [
    (
        1,
        "",
        "4f01e0c12b08625ecac89a69231906edf826380f37c959a96690d046316d68ffce9d5c471694fcebfc6b4553"
        "4864689256e4fc81c78e583f675d0c94b449647451e81beff01a11a516d5e5ce3f1a910437cb8a3a5096b19f"
        "b15f4524a35b23d89cdba12cf5b71aac1047b28c562df7c5542c34ce23a182cf7e0e231934b17294799d4487"
        "7a1d68ef1b8f073619b7618e6b7c22db20030d98cf591ffc3d4da5f58613ecd5ecfc3b40a1d02f40891ca436"
        "95cd4c088b05a8054c89c595a47e274816f35384226f74459ee63e25a1bfc03c360490552ec38343f8ace502"
        "f065303b00bc0ec320711b211fde92e57feb9013c3609342495ec0d7cabdec21e54acc38",
    ),
    (
        3,
        "54657374",
        "401eb03cdb47ca88033e3030f6bdecbac8f5c8fc1dd6a13d23d379ed9a2b309891d13d74fea9d21d159b9e6d"
        "8f37efa2489962e24555f56dd434ff1d31ce4f9f5abd3f22cbea8b691d6a11e44efb83e2bca155e6a164325e"
        "0fde2a8865afd5c9f51161a9d615f62af7ec2e31b3e5ab649c164490d31d88cfae35b84aea7925690f929a14"
        "4b6d2f48e8fb894a52deecd1b9a6496990c4ecf1588699a42cacd10c53af350514e4291ea9a058e77f101e32"
        "c1c0cefa61d945f7bc931f8bd19e7ba3169358a60e5a8b0123bc3199b9fdcafe8e519c41ba675491a27b85e4"
        "4ef2d77277c10fe107293c8290186913bc9a99b640d8da041b64f31eab1d35920985f4a5",
    ),
    (
        5,
        "4d657373616765",
        "599724adc1bae31e84eb6e1399cd90cd67f48b432c63719b600402384aaea9b21ee864cdcf259029180877c8"
        "47a223912b0647f066a59a65df6c2d3a6675b1450f0b05185cee486bfac56cfded182babcefe60568a6954f0"
        "26cb2f59002a2f755e9bce49793f280d89822c9bd3a06a7ad2209c3d6cab7c1f74c8bbf4bf374e7ae8a539fc"
        "cb83a78cff96a4f538adeba0869659d0e9647d98f96cb55d9cb7e58440c4c9d85b8e9dc602e909e29e45f2b8"
        "2ded44f40e9ceb1292da20063967e3a116f4aeb202863cea523f215b8ec7fc4f6a22cd8652ed661e33803f3f"
        "a1be966fa8754cc7b0fa894cee0f045efba14c4f4a1d7cb837cea69e30522526b8a5878f",
    ),
    (
        7,
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        "8bdd6db90323f3bf26a36a4ab5b92180c96881bd32b66317c4b48c2ba1421f8434000c06adde4264c6ea2d53"
        "46468c6d5e97cb13d3cb932e523ac57b59c814fa0397ca6dcc9bec4be1147d77abcd318a6aba1af46ede2f56"
        "40da06511a006fd1bd5fb8e04be22789956adc47bbec7988be477150f9b24a07dff51530e8f0c14cfef7d25c"
        "a141f512939987b7eb0825633d41a48742bd7f56d4db9733d92ac0f36b4041f51332695f551ec91076da2301"
        "120c438eb9ec197cbe318d4571b6b79098d17eded0ca47747a143e34f882ad6e3f490f3a710ff7ec1bffce02"
        "2027165d96281e593180c67f44aeda9ce6605e6b8e5eac1347695dab211a965bb3d3f928",
    ),
]


# ----------------------------------------------------------------------------- independent code


def _mgf1(seed: bytes, length: int) -> bytes:
    """RFC 8017 §B.2.1, written independently of evault.crypto.pss."""
    blocks = [hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(length // 32 + 1)]
    return b"".join(blocks)[:length]


def pss_verify(message: bytes, em: bytes, em_bits: int, s_len: int) -> bytes:
    """EMSA-PSS-VERIFY (RFC 8017 §9.1.2), SHA-256: returns the salt, raises if "inconsistent"."""
    h_len = 32
    em_len = (em_bits + 7) // 8
    m_hash = hashlib.sha256(message).digest()  # step 2
    if len(em) != em_len or em_len < h_len + s_len + 2:  # step 3
        raise ValueError("inconsistent: length")
    if em[-1] != 0xBC:  # step 4
        raise ValueError("inconsistent: trailer")
    masked_db, h = em[: em_len - h_len - 1], em[em_len - h_len - 1 : -1]  # step 5
    top_bits = 8 * em_len - em_bits
    if top_bits and masked_db[0] >> (8 - top_bits):  # step 6
        raise ValueError("inconsistent: top bits")
    db = bytearray(x ^ y for x, y in zip(masked_db, _mgf1(h, len(masked_db)), strict=True))
    db[0] &= 0xFF >> top_bits  # step 9
    pad_len = em_len - h_len - s_len - 2
    if any(db[:pad_len]) or db[pad_len] != 0x01:  # step 10
        raise ValueError("inconsistent: padding")
    salt = bytes(db[len(db) - s_len :]) if s_len else b""  # step 11
    if hashlib.sha256(bytes(8) + m_hash + salt).digest() != h:  # steps 12-14
        raise ValueError("inconsistent: hash")
    return salt


# ----------------------------------------------------------------------------- vectors


@pytest.mark.parametrize(("msg_hex", "sig_hex"), NIST_SHA256_SALT0)
def test_nist_cavp_sha256_vectors_with_empty_salt(msg_hex: str, sig_hex: str) -> None:
    em = pow(int(sig_hex, 16), NIST_E_1024, NIST_N_1024).to_bytes(128, "big")
    message = bytes.fromhex(msg_hex)
    assert emsa_pss_encode(message, 1023, b"") == em
    assert pss_verify(message, em, 1023, 0) == b""


@pytest.mark.parametrize(("tc_id", "msg_hex", "sig_hex"), WYCHEPROOF_SHA256_SALT32)
def test_wycheproof_valid_signatures_re_encode_exactly(
    tc_id: int, msg_hex: str, sig_hex: str
) -> None:
    em = pow(int(sig_hex, 16), 65537, WYCHEPROOF_N_2048).to_bytes(256, "big")
    message = bytes.fromhex(msg_hex)
    salt = pss_verify(message, em, 2047, 32)
    assert len(salt) == 32, tc_id
    assert emsa_pss_encode(message, 2047, salt) == em, tc_id


@pytest.mark.parametrize("modulus_bits", [1024, 1025, 1031, 2048, 3072, 4100])
@pytest.mark.parametrize("message", [b"", b"a", b'{"version":1}', bytes(range(256)) * 9])
def test_our_encoding_passes_the_independent_verifier(modulus_bits: int, message: bytes) -> None:
    em_bits = modulus_bits - 1
    x = encode_message(message, modulus_bits)
    assert x.bit_length() <= em_bits  # so x < N for any N of modulus_bits bits
    em = x.to_bytes((em_bits + 7) // 8, "big")
    assert pss_verify(message, em, em_bits, 32) == derive_salt(message)


def test_salt_is_the_tagged_hash_of_the_message() -> None:
    tag = hashlib.sha256(b"evault/pss-salt/v1").digest()
    for message in (b"", b"statement"):
        assert derive_salt(message) == hashlib.sha256(tag + tag + message).digest()
    assert derive_salt(b"a") != derive_salt(b"b")


def test_encoder_refuses_too_small_a_modulus() -> None:
    with pytest.raises(ValueError, match="em_bits"):
        emsa_pss_encode(b"m", 8 * 65 - 1, bytes(32))
    assert len(emsa_pss_encode(b"m", 8 * 66, bytes(32))) == 66
    with pytest.raises(TypeError, match="message"):
        emsa_pss_encode("text", 1023, b"")  # type: ignore[arg-type]
