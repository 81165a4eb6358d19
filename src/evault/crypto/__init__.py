"""evault.crypto: pure cryptographic cores (no I/O, no clock, randomness passed in).

Receipts (DESIGN §4): ``threshold_rsa``, ``pss``, ``numbers``, ``keyfiles``.

Confidentiality (DESIGN §7, paper §2.3.2 and §4.2):

- ``group``   — the prime-order group of Ed25519 via libsodium; received elements validated.
- ``feldman`` — per-client unwrap keys: Shamir shares with Feldman commitments, sealed to nodes.
- ``unwrap``  — hashed-ElGamal key wrap; signed, blinded threshold unwrap with Chaum–Pedersen
  proofs.
- ``stream``  — evault STREAM v1, chunked streaming AEAD for documents (byte layout inside).
- ``armor``   — printable base64 (4 for 3) and hex (2 for 1) encodings of encrypted files.
- ``confidential_bench`` — timings for ``evault bench crypto``.
"""
