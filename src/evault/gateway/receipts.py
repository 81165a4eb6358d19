"""Receipts: the service's seam to threshold RSA (``evault.crypto.threshold_rsa``).

The service hands over the shares nodes sent (``WireShare``, integers from JSON) and gets back
an ordinary RSASSA-PSS signature plus the signers whose shares were rejected.  Combination is
optimistic (share proofs are only checked when the first k shares fail to combine), so an honest
deposit costs one combination and one verification.

:class:`VerifiedReceipts` remembers which receipts this process has already verified, so that a
retrieval re-verifies the catalog's receipt only when its bytes are new to the gateway.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from evault.crypto import keyfiles, threshold_rsa
from evault.crypto.threshold_rsa import SignatureShare, ThresholdPublicKey
from evault.errors import ConfigError
from evault.protocol.node_api import WireShare


class ThresholdCombiner:
    """Combines and verifies receipts with the vault's threshold public key."""

    def __init__(self, public: ThresholdPublicKey) -> None:
        if not isinstance(public, ThresholdPublicKey):
            raise TypeError("public: expected a ThresholdPublicKey")
        self.public = public
        self._key = public.to_cryptography()  # parsed once, not per verification

    @classmethod
    def from_files(
        cls, threshold_public: Path, vault_public_pem: Path | None, *, n: int, k: int
    ) -> ThresholdCombiner:
        """Read ``threshold.json`` (checked against the PEM if given) for a k-of-n cluster."""
        public = keyfiles.read_threshold_public(threshold_public, pem_path=vault_public_pem)
        if (public.players, public.threshold) != (n, k):
            raise ConfigError(
                f"{threshold_public} is a {public.threshold}-of-{public.players} key, "
                f"the cluster is configured for {k} of {n}"
            )
        return cls(public)

    def combine(
        self, statement: bytes, shares: Sequence[WireShare]
    ) -> tuple[bytes, Mapping[int, str]]:
        """The signature over ``statement`` and the rejected signers; ``NotEnoughShares``."""
        result = threshold_rsa.combine(
            self.public,
            statement,
            [SignatureShare(s.index, s.value, s.proof_c, s.proof_z) for s in shares],
        )
        return result.signature, result.bad_signers

    def verify(self, statement: bytes, signature: bytes) -> None:
        """Raise ``InvalidSignature`` unless ``signature`` is the vault's over ``statement``."""
        threshold_rsa.verify_signature(self._key, statement, signature)


#: Receipts remembered by :class:`VerifiedReceipts` (32 bytes each, plus the map's overhead).
VERIFIED_RECEIPTS: Final = 65536


class VerifiedReceipts:
    """The receipts (statement bytes, signature) this process verified: a bounded LRU set.

    An entry is the SHA-256 of the length-prefixed statement and the signature, so a receipt
    whose bytes changed by one bit (a tampered catalog row) is a different entry and is
    verified afresh.  The set lives in the gateway's memory, which the gateway trusts as much
    as its own code; it saves a 3072-bit RSA verification (a quarter of a millisecond) per
    retrieval of a known version.  Event loop only (not thread-safe).
    """

    def __init__(self, max_entries: int = VERIFIED_RECEIPTS) -> None:
        if not isinstance(max_entries, int) or max_entries < 0:
            raise ValueError("max_entries: must be an integer >= 0")
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    @staticmethod
    def _key(statement: bytes, signature: bytes) -> bytes:
        h = hashlib.sha256(len(statement).to_bytes(8, "big"))
        h.update(statement)
        h.update(signature)
        return h.digest()

    def add(self, statement: bytes, signature: bytes) -> None:
        """Record a receipt that was just verified."""
        if not self.max_entries:
            return
        key = self._key(statement, signature)
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)

    def seen(self, statement: bytes, signature: bytes) -> bool:
        """True if exactly these bytes were verified before."""
        key = self._key(statement, signature)
        if key not in self._seen:
            return False
        self._seen.move_to_end(key)
        return True
