"""Domain-tagged hashes.

Every hash evault computes is bound to its use by a tag, so a digest made for one purpose can
never be replayed as another (a Merkle leaf as an inner node, a fingerprint vector as a
document).  Construction (as BIP-340's tagged hashes)::

    tagged_hash(tag, data) = H( H(tag) || H(tag) || data )

with H = SHA-256 unless a format says otherwise.  Prefixing twice the 32-byte digest of the
tag fills one SHA-256 block, so a tag costs one precomputed compression.  Tags are ASCII
strings of the form ``"evault/<use>/v<N>"``; a new version of a format gets a new tag.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

#: Registry of every tag in use: the single place to look when auditing domain separation.
TAGS: Final[dict[str, str]] = {
    "document": "evault/document-sha256/v1",  # not tagged: users check it with sha256sum
    "fv": "evault/fingerprint-vector/v1",
    "merkle-leaf": "evault/merkle-leaf/v1",
    "merkle-node": "evault/merkle-node/v1",
    "merkle-empty": "evault/merkle-empty/v1",  # root of a slice with no blocks (empty document)
    "pss-salt": "evault/pss-salt/v1",
    "shoup-proof": "evault/shoup-proof/v1",
    "cp-proof": "evault/chaum-pedersen/v1",
    "kek": "evault/hashed-elgamal-kek/v1",
    # confidentiality (issue 6): see evault.crypto.group / feldman / unwrap / stream
    "cp-nonce": "evault/chaum-pedersen-nonce/v1",
    "key-share": "evault/unwrap-key-share/v1",
    "unwrap-request": "evault/unwrap-request/v1",
    "stream-header": "evault/stream-header/v1",
    "stream-payload": "evault/stream-payload/v1",
    # threshold RSA receipts (issue 3): see evault.crypto.threshold_rsa
    "rsa-key-id": "evault/threshold-rsa-key-id/v1",
    # confidentiality in the running system (issue 6): see evault.protocol.node_api,
    # evault.client.confidential
    "owner-id": "evault/owner-id/v1",
    "identity-salt": "evault/identity-salt/v1",
    "key-certificate": "evault/unwrap-key-certificate/v1",
}

_prefix_cache: dict[str, bytes] = {}


def _prefix(tag: str) -> bytes:
    if not isinstance(tag, str) or not tag:
        raise ValueError("tag: expected a non-empty string")
    cached = _prefix_cache.get(tag)
    if cached is None:
        digest = hashlib.sha256(tag.encode("ascii")).digest()
        cached = _prefix_cache[tag] = digest + digest
    return cached


def tagged_hasher(tag: str) -> hashlib._Hash:
    """A SHA-256 object already fed with the tag prefix; ``update`` it with the data."""
    h = hashlib.sha256()
    h.update(_prefix(tag))
    return h


def tagged_hash(tag: str, *parts: bytes | Iterable[bytes]) -> bytes:
    """SHA-256 tagged hash of the concatenation of ``parts``."""
    h = tagged_hasher(tag)
    for part in parts:
        if isinstance(part, bytes | bytearray | memoryview):
            h.update(part)
        else:
            for chunk in part:
                h.update(chunk)
    return h.digest()
