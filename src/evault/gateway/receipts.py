"""Receipts: the service's seam to threshold RSA (``evault.crypto.threshold_rsa``).

The service hands over the shares nodes sent (``WireShare``, integers from JSON) and gets back
an ordinary RSASSA-PSS signature plus the signers whose shares were rejected.  Combination is
optimistic (share proofs are only checked when the first k shares fail to combine), so an honest
deposit costs one combination and one verification.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

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
