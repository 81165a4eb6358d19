"""The node's part in confidentiality (DESIGN §7, paper §4.2): unwrap-key shares and partial
unwraps, without HTTP (spec: docs/spec/node-protocol.md, "Unwrap keys and partial unwraps").

:class:`UnwrapService` holds every rule; ``evault.node.app`` is the adapter in front of it.

Storing a share (``PUT /v1/unwrap-keys/{owner_id}``)
    The gateway relays a share the client sealed to this node's X25519 key, with the key's
    certificate.  The node opens the box and checks everything itself (the share lies on the
    Feldman commitments, the record is addressed to this vault, owner and node index and is
    signed by the identity key inside it, the certificate is signed by that same identity and
    describes exactly this key, the key is dealt to this vault's n nodes), then stores it —
    still sealed — under the rule that all keys of one owner carry the first identity that
    registered (``evault.store.keys``).

Answering an unwrap request (``POST /v1/unwrap``)
    The request names (vault, owner, key Y); the node loads that share and lets
    :func:`evault.crypto.unwrap.verify_unwrap_request` check the signature against the
    *stored* identity key (so a gateway cannot ask on the client's behalf), the freshness, and
    the replay cache (durable, in the key store); only then does it compute its partial
    unwrap d_i = x_i·c1' with a Chaum–Pedersen proof.

Test-only fault ``lie`` (see ``evault.node.service``): the partial unwrap is moved off x_i·c1'
(d_i + B) with the proof left as it was, so a client must catch it by the proof.

The methods are synchronous (SQLite, scalar multiplications of ~0.1 ms); the app runs them in
a worker thread.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import nacl.public

from evault.crypto.feldman import NodeKeyShare, open_key_share
from evault.crypto.group import BASE, RandomBytes
from evault.crypto.unwrap import (
    PartialUnwrap,
    partial_unwrap,
    peek_unwrap_request,
    verify_unwrap_request,
)
from evault.errors import (
    BadRequest,
    FormatError,
    InvalidKeyShare,
    InvalidSignature,
    NoUnwrapKey,
    UnwrapRequestRejected,
)
from evault.node.service import Fault
from evault.protocol.node_api import (
    UNWRAP_MAX_AGE_S,
    UNWRAP_MAX_SKEW_S,
    KeyCertificate,
    KeyDeposit,
    KeyDepositResult,
    KeyListing,
    UnwrapAnswer,
    is_object_id,
    owner_id,
)
from evault.protocol.statement import format_time
from evault.store.keys import KeyShareStore, StoredKey

#: Opened shares kept in memory (opening costs an X25519 operation and the Feldman check).
CACHE_SIZE: Final = 1024


def load_seal_key(text: str) -> nacl.public.PrivateKey:
    """The node's X25519 sealing key from the hex text ``evault init`` wrote (ValueError)."""
    raw = bytes.fromhex(text.strip())
    if len(raw) != 32:
        raise ValueError("a sealing key is 32 bytes (64 hex digits)")
    return nacl.public.PrivateKey(raw)


class UnwrapService:
    """Every confidentiality rule of one node; see the module docstring."""

    def __init__(
        self,
        *,
        vault: str,
        index: int,
        nodes: int,
        store: KeyShareStore,
        seal_key: nacl.public.PrivateKey,
        clock: Callable[[], float],
        rng: RandomBytes = os.urandom,
        fault: Fault | None = None,
        max_age_s: float = UNWRAP_MAX_AGE_S,
        max_skew_s: float = UNWRAP_MAX_SKEW_S,
    ) -> None:
        if not 1 <= index <= nodes:
            raise ValueError(f"index: {index} is not in 1..{nodes}")
        if not isinstance(seal_key, nacl.public.PrivateKey):
            raise TypeError("seal_key: expected nacl.public.PrivateKey")
        self.vault = vault
        self.index = index
        self.nodes = nodes
        self.store = store
        self._seal_key = seal_key
        self.clock = clock
        self.rng = rng
        self.fault = fault
        self.max_age_s = max_age_s
        self.max_skew_s = max_skew_s
        self._cache: OrderedDict[tuple[str, bytes], NodeKeyShare] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def public_seal_key(self) -> bytes:
        return bytes(self._seal_key.public_key)

    # -- shares ------------------------------------------------------------------------------

    def _open(self, owner: str, sealed: bytes) -> NodeKeyShare:
        return open_key_share(
            sealed,
            node_private_key=self._seal_key,
            vault=self.vault,
            owner=owner,
            node_index=self.index,
        )

    def _remember(self, share: NodeKeyShare) -> None:
        with self._cache_lock:
            self._cache[(share.owner, share.public_key.encoding)] = share
            self._cache.move_to_end((share.owner, share.public_key.encoding))
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)

    def _share(self, stored: StoredKey) -> NodeKeyShare:
        with self._cache_lock:
            cached = self._cache.get((stored.owner, stored.key_id))
        if cached is not None:
            return cached
        share = self._open(stored.owner, stored.sealed)
        self._remember(share)
        return share

    def put_key(self, path_owner_id: str, deposit: KeyDeposit) -> KeyDepositResult:
        """Check and store one sealed share (module docstring).

        Raises ``BadRequest`` (path and body disagree, wrong node count, bad certificate),
        ``InvalidKeyShare`` (the box does not open or the share fails a check) or
        ``KeyConflict`` (another identity registered first).
        """
        if not is_object_id(path_owner_id):
            raise BadRequest("the owner id in the path must be 64 lowercase hex digits")
        if owner_id(self.vault, deposit.owner) != path_owner_id:
            raise BadRequest("the owner id in the path is not the id of the owner in the body")
        share = self._open(deposit.owner, deposit.sealed)
        if share.nodes != self.nodes:
            raise InvalidKeyShare(
                self.index, f"dealt to {share.nodes} nodes, but this vault has {self.nodes}"
            )
        try:
            certificate = KeyCertificate.from_bytes(deposit.certificate)
            certificate.verify(share.identity_public_key)
            certificate.check_describes(share)
        except (FormatError, InvalidSignature) as exc:
            raise BadRequest(f"key certificate: {exc}") from exc
        created = self.store.put(
            StoredKey(
                owner=deposit.owner,
                key_id=share.public_key.encoding,
                identity=share.identity_public_key,
                sealed=deposit.sealed,
                certificate=deposit.certificate,
                created_at=format_time(datetime.fromtimestamp(self.clock(), UTC)),
            ),
            owner_id=path_owner_id,
        )
        if created:
            self._remember(share)
        return KeyDepositResult(self.index, share.public_key.hex(), created)

    def list_keys(self, path_owner_id: str) -> KeyListing:
        """The certificates of the owner's keys at this node (public), oldest first."""
        if not is_object_id(path_owner_id):
            raise BadRequest("the owner id in the path must be 64 lowercase hex digits")
        keys = self.store.list_by_owner_id(path_owner_id)
        if not keys:
            raise NoUnwrapKey("(owner id " + path_owner_id[:16] + "…)", f"at node {self.index}")
        return KeyListing(self.index, tuple(k.certificate for k in keys))

    # -- partial unwraps -----------------------------------------------------------------------

    def unwrap(self, signed: bytes) -> UnwrapAnswer:
        """Verify a signed unwrap request and answer with this node's partial unwrap.

        Raises ``UnwrapRequestRejected`` (unsigned, stale, replayed, …) or ``NoUnwrapKey``.
        """
        peeked = peek_unwrap_request(signed)  # only to find the share; never acted upon
        if peeked.vault != self.vault:
            raise UnwrapRequestRejected("wrong_vault", "request is for another vault")
        stored = self.store.get(peeked.owner, peeked.key_id.encoding)
        if stored is None:
            raise NoUnwrapKey(
                peeked.owner, f"at node {self.index} under the key {peeked.key_id.hex()[:16]}…"
            )
        share = self._share(stored)
        now = self.clock()
        request = verify_unwrap_request(
            signed,
            key_share=share,
            now=now,
            seen_before=lambda rid: self.store.seen_before(
                rid, expires_at=now + self.max_age_s + self.max_skew_s, now=now
            ),
            max_age_s=self.max_age_s,
            max_skew_s=self.max_skew_s,
        )
        partial = partial_unwrap(share, request, rng=self.rng)
        if self.fault is Fault.LIE:
            partial = PartialUnwrap(
                partial.node, partial.d + BASE, partial.challenge, partial.response
            )
        return UnwrapAnswer(self.index, partial.to_bytes())


__all__ = ["UnwrapService", "load_seal_key"]
