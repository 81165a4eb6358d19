"""The node's signature shares: Shoup threshold RSA with a proof per share (DESIGN §4).

The signer is handed the exact statement bytes the node built itself; ``sign_share`` PSS-encodes
them on its own, so nothing a peer sends is ever exponentiated as is.  One share costs a few
constant-time exponentiations mod N (~25 ms at 3072 bits): callers run it in a worker thread.
"""

from __future__ import annotations

from evault.crypto import threshold_rsa
from evault.errors import ConfigError
from evault.protocol.node_api import WireShare


class ShareSigner:
    """Signs with node ``index``'s key share; checks the share against the public key first."""

    def __init__(
        self,
        public: threshold_rsa.ThresholdPublicKey,
        share: threshold_rsa.KeyShare,
        *,
        index: int,
    ) -> None:
        if share.index != index:
            raise ConfigError(
                f"the signing share is share {share.index}, but this is node {index} "
                "(node i must hold share i)"
            )
        # A wrong share file must fail at start-up, not as invalid shares at every deposit.
        threshold_rsa.verify_key_share(public, share)
        self.public = public
        self._share = share

    def sign(self, message: bytes) -> WireShare:
        share = threshold_rsa.sign_share(self._share, self.public, message)
        return WireShare(share.index, share.value, share.proof_c, share.proof_z)
