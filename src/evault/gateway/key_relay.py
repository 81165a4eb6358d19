"""The gateway's relays for confidentiality (DESIGN §7, paper §4.2): it passes sealed
unwrap-key shares and clients' signed unwrap requests to the nodes, and their answers back.

The gateway is not trusted with any of it and can use none of it: a sealed share opens only
with its node's X25519 key; a signed unwrap request is checked by every node against the
owner's identity key (which the gateway does not hold); a partial unwrap is the blinded
c1'^(x_i), useless without the client's blinding factor ρ.  So these relays hold no rule of
their own beyond "send each node its part, in parallel, within the node time-out, and say
which nodes did not answer and why".  The one check made here — an unwrap request names the
authenticated caller as its owner — only saves the nodes work: they refuse a request not
signed by the owner anyway.

``VaultService`` (``evault.gateway.service``) exposes these as methods over its node clients.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from evault.catalog.names import canonical_user_id
from evault.crypto.unwrap import peek_unwrap_request
from evault.errors import NodeRejected, UnwrapRequestRejected
from evault.gateway.fanout import describe_failure, each_node
from evault.protocol.node_api import KeyDeposit, owner_id
from evault.transport.nodes import NodeClient

log = logging.getLogger("evault.gateway")

#: Node error codes that mean "this node will not unwrap for this request" (as opposed to
#: "this node could not be reached"); reported apart so the client can tell the two.
REFUSAL_CODES = frozenset({"unwrap_refused", "not_found", "key_conflict", "bad_request"})


@dataclass(frozen=True)
class KeyStoreOutcome:
    """``stored`` maps node → True if the key is new there (False: it already had it)."""

    key: str | None
    stored: dict[int, bool] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyListOutcome:
    """Each answering node's key certificates (bytes, unverified: the client checks them)."""

    certificates: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UnwrapOutcome:
    """Partial unwraps by node (unverified: the client checks each proof), nodes that refused
    (with the node's reason) and nodes that could not be asked."""

    partials: dict[int, bytes] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


async def put_unwrap_key(
    clients: Mapping[int, NodeClient],
    *,
    vault: str,
    owner: str,
    sealed: Mapping[int, bytes],
    certificate: bytes,
    timeout_s: float,
) -> KeyStoreOutcome:
    """Send node i its sealed share ``sealed[i]`` (and the certificate) for ``owner``."""
    owner = canonical_user_id(owner)
    oid = owner_id(vault, owner)
    targets = {i: c for i, c in clients.items() if i in sealed}
    results = await each_node(
        targets,
        lambda c: c.put_unwrap_key(oid, KeyDeposit(owner, sealed[c.index], certificate)),
        timeout_s,
    )
    stored: dict[int, bool] = {}
    failed = {i: "no sealed share was sent for this node" for i in clients if i not in sealed}
    keys = set()
    for node, result in results.items():
        if isinstance(result, BaseException):
            failed[node] = describe_failure(result)
            log.warning("unwrap key of %s: node %d did not store it: %s", owner, node, failed[node])
        else:
            stored[node] = result.created
            keys.add(result.key)
    key = keys.pop() if len(keys) == 1 else None
    return KeyStoreOutcome(key, stored, failed)


async def unwrap_keys(
    clients: Mapping[int, NodeClient], *, vault: str, owner: str, timeout_s: float
) -> KeyListOutcome:
    """Every node's certificates of ``owner``'s keys."""
    oid = owner_id(vault, canonical_user_id(owner))
    results = await each_node(clients, lambda c: c.unwrap_keys(oid), timeout_s)
    out = KeyListOutcome()
    for node, result in results.items():
        if isinstance(result, BaseException):
            out.failed[node] = describe_failure(result)
        else:
            out.certificates[node] = result.certificates
    return out


async def unwrap(
    clients: Mapping[int, NodeClient],
    *,
    vault: str,
    owner: str,
    signed_request: bytes,
    timeout_s: float,
) -> UnwrapOutcome:
    """Relay one signed unwrap request to every node; collect their partial unwraps."""
    peeked = peek_unwrap_request(signed_request)  # raises UnwrapRequestRejected("malformed")
    if peeked.owner != canonical_user_id(owner):
        raise UnwrapRequestRejected(
            "wrong_owner", "an unwrap request may only name the authenticated user as its owner"
        )
    if peeked.vault != vault:
        raise UnwrapRequestRejected("wrong_vault", f"this gateway serves vault {vault}")
    results = await each_node(clients, lambda c: c.unwrap(signed_request), timeout_s)
    out = UnwrapOutcome()
    for node, result in results.items():
        if isinstance(result, NodeRejected) and result.node_code in REFUSAL_CODES:
            out.refused[node] = f"{result.node_code}: {result.node_message}"
        elif isinstance(result, BaseException):
            out.failed[node] = describe_failure(result)
        elif result.node != node:
            out.failed[node] = f"unwrap: answered as node {result.node}"
        else:
            out.partials[node] = result.partial
    # Who refused or failed, never what was asked: the request and answers are the client's.
    for node, why in sorted(out.refused.items()):
        log.info("unwrap for %s: node %d refused: %s", peeked.owner, node, why)
    for node, why in sorted(out.failed.items()):
        log.warning("unwrap for %s: node %d did not answer: %s", peeked.owner, node, why)
    return out
