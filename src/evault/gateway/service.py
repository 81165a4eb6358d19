"""The gateway's core: deposit, retrieve, delete and clean up, talking to the n nodes.

The public HTTP API (``evault.gateway.api``) is a thin adapter over :class:`VaultService`.
Below it: ``evault.gateway.planner`` decides (pure), ``evault.gateway.fanout`` runs a deposit
(the body teed to all n nodes with back-pressure, DESIGN §5), ``evault.gateway.rebuild`` runs a
retrieval (verified slices from m nodes, replacement of failing ones, DESIGN §6), and
``evault.transport.nodes`` makes the HTTP calls.

Guarantees kept here: a receipt is returned only after the catalog recorded it, and once it did
nothing is undone; a deposit that gets no receipt is failed in the catalog and its objects are
deleted from the nodes (a pending or failed version is never listed); a retrieval never
delivers bytes it could not verify, and names every node it could not use and why.  Faulty
nodes are logged on the ``evault.gateway`` logger and recorded in the catalog's audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, TypeVar

from evault.catalog.names import canonical_user_id
from evault.catalog.records import PendingVersion, ReceiptRecord, RestoreResult, VersionRecord
from evault.config import ClusterParams, GatewayConfig
from evault.errors import (
    BadNodeAnswer,
    ConfigError,
    EvaultError,
    FormatError,
    WrongState,
)
from evault.gateway import key_relay
from evault.gateway.fanout import (
    DepositAttempt,
    DepositOutcome,
    describe_failure,
    detach,
    each_node,
    name_reasons,
)
from evault.gateway.rebuild import (
    FV_CACHE_ENTRIES,
    READER_IDLE_S,
    DocumentReader,
    FVCache,
    Retrieval,
)
from evault.protocol.node_api import Proposal, WireShare, object_id
from evault.protocol.statement import Statement, format_time
from evault.transport import tls
from evault.transport.nodes import NodeAddress, NodeClient, NodeSet, Timeouts

log = logging.getLogger("evault.gateway")

T = TypeVar("T")

#: Parsed statements kept by :func:`parsed_statement` (about a kilobyte each).
PARSED_STATEMENTS: Final = 1024

Clock = Callable[[], datetime]

_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")


# --- seams ---------------------------------------------------------------------------------


class CatalogPort(Protocol):
    """The catalog methods the service uses (``evault.catalog.Catalog`` satisfies it)."""

    def begin_deposit(self, owner: str, name: str) -> int: ...

    def complete_deposit(
        self, owner: str, name: str, version: int, receipt: ReceiptRecord
    ) -> VersionRecord: ...

    def fail_deposit(self, owner: str, name: str, version: int, reason: str) -> None: ...

    def get_version(self, owner: str, name: str, version: int | None = None) -> VersionRecord: ...

    def mark_deleted(self, owner: str, name: str, version: int) -> VersionRecord: ...

    def pending_versions(self, older_than: datetime | timedelta) -> list[PendingVersion]: ...

    def restore_version(
        self, owner: str, name: str, version: int, receipt: ReceiptRecord
    ) -> RestoreResult: ...

    def version_state(self, owner: str, name: str, version: int) -> str | None: ...

    def audit(
        self,
        action: str,
        *,
        user_id: str | None = None,
        name: str | None = None,
        version: int | None = None,
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> None: ...


class ReceiptCombiner(Protocol):
    """Threshold signatures as the service needs them (``evault.gateway.receipts``).

    ``combine`` returns the signature and the signers whose shares were rejected (with why),
    raising ``NotEnoughShares`` when fewer than k valid ones remain; ``verify`` raises
    ``InvalidSignature``.  Both may be slow (modular exponentiations): the service runs them
    in a worker thread.
    """

    def combine(
        self, statement: bytes, shares: Sequence[WireShare]
    ) -> tuple[bytes, Mapping[int, str]]: ...

    def verify(self, statement: bytes, signature: bytes) -> None: ...


# --- values handed out ---------------------------------------------------------------------


@dataclass(frozen=True)
class DeleteOutcome:
    record: VersionRecord
    #: nodes the DELETE did not reach (their slice stays until the next sweep)
    failed: dict[int, str]


@dataclass(frozen=True)
class CleanupOutcome:
    pending: PendingVersion
    failed: dict[int, str]


@dataclass(frozen=True)
class SweepOutcome:
    #: node → the objects deleted there (their versions were deleted or failed)
    swept: dict[int, list[str]]
    #: node → why its sweep stopped before the end of its listing
    failed: dict[int, str]
    #: objects listed by the nodes, in all
    seen: int
    #: listed objects of this vault whose version the catalog does not know at all (each
    #: node's copy counted): a catalog lost, or brought back from an older backup
    unknown: int = 0


#: Objects asked of a node per listing page by :meth:`VaultService.sweep` (a statement is about
#: half a KiB: a page stays far below the answer cap).
SWEEP_PAGE_OBJECTS: Final = 200
#: A node listing more objects than this in one sweep is taken for faulty there (every page
#: moves forward, but a lying node could list made-up objects forever).
SWEEP_MAX_OBJECTS: Final = 10_000_000
#: Catalog states of versions that have no business on a node.
SWEPT_STATES: Final = frozenset({"deleted", "failed"})


# --- the service ---------------------------------------------------------------------------


async def walk_listing(client: NodeClient) -> AsyncGenerator[tuple[str, bytes], None]:
    """Every (object id, statement) a node lists, page after page to the end of its listing
    (each page is checked to move forward, ``ObjectListing``); ``BadNodeAnswer`` once it
    lists more than ``SWEEP_MAX_OBJECTS``, so a lying node cannot keep a walk going forever."""
    seen = 0
    after: str | None = None
    while True:
        page = await client.list_objects(after, SWEEP_PAGE_OBJECTS)
        for item in page.objects:
            seen += 1
            yield item
        if page.next_after is None:
            return
        if seen >= SWEEP_MAX_OBJECTS:
            raise BadNodeAnswer(
                client.index, "list", f"lists more than {SWEEP_MAX_OBJECTS} objects"
            )
        after = page.next_after


@functools.lru_cache(maxsize=PARSED_STATEMENTS)
def parsed_statement(statement: bytes) -> Statement:
    """``Statement.from_bytes``, remembered for the most recently retrieved versions: the
    parse is a pure function of the bytes (any other bytes are parsed afresh), and it cost
    about 4 % of the gateway's CPU on a small retrieval."""
    return Statement.from_bytes(statement)


class VaultService:
    """Deposit, retrieve, delete and clean up documents on the nodes.  See the module docstring.

    ``VaultService(config, catalog)`` builds everything from the gateway's config: one pooled
    mutual-TLS client for the nodes, the threshold public key, the time-outs.  Tests assemble
    one from explicit parts with :meth:`from_parts`.
    """

    def __init__(
        self,
        config: GatewayConfig,
        catalog: CatalogPort,
        *,
        clock: Clock | None = None,
        decode_in_thread: bool = True,
    ) -> None:
        from evault.gateway.receipts import ThresholdCombiner  # threshold RSA: gmpy2 and co.

        combiner = ThresholdCombiner.from_files(
            config.threshold_public, config.vault_public_key, n=config.cluster.n, k=config.cluster.k
        )
        timeout_s = config.node_timeout_s
        nodes = NodeSet(
            [NodeAddress(e.index, e.url, e.tls_name) for e in config.nodes],
            ssl_context=tls.client_context(config.ca_cert, config.client_cert, config.client_key),
            timeouts=Timeouts(
                connect_s=min(10.0, timeout_s),
                read_s=timeout_s,
                write_s=timeout_s,
                pool_s=timeout_s,
            ),
        )
        self._setup(
            vault=config.vault,
            cluster=config.cluster,
            nodes=nodes,
            catalog=catalog,
            combiner=combiner,
            clock=clock,
            node_timeout_s=timeout_s,
            decode_in_thread=decode_in_thread,
        )

    @classmethod
    def from_parts(
        cls,
        *,
        vault: str,
        cluster: ClusterParams,
        nodes: NodeSet | Mapping[int, NodeClient],
        catalog: CatalogPort,
        combiner: ReceiptCombiner,
        clock: Clock | None = None,
        node_timeout_s: float = 30.0,
        stall_timeout_s: float | None = None,
        slow_node_s: float | None = None,
        queue_chunks: int = 8,
        catalog_in_thread: bool = True,
        reader_idle_s: float = READER_IDLE_S,
        fv_cache_entries: int = FV_CACHE_ENTRIES,
        decode_in_thread: bool = True,
    ) -> VaultService:
        """A service from explicit parts.

        ``nodes``: one client per node index 1..n (a :class:`NodeSet`, which the service closes
        in :meth:`aclose`, or a plain mapping).  ``clock``: timezone-aware now, for
        ``deposited_at``.  ``stall_timeout_s``: how long a node may leave its deposit queue
        full before it is dropped; ``slow_node_s``: how long a retrieval waits for a node's
        next block before replacing it (both default to ``node_timeout_s``).
        ``queue_chunks``: chunks buffered per node during a deposit (pieces of at most
        ``MAX_PIECE_BYTES``).  ``catalog_in_thread``: run catalog calls in a worker thread.
        ``reader_idle_s``: how long a retrieval's slice stream may wait for its consumer before
        it gives its connection back (it is reopened where it stopped if the consumer returns).
        ``fv_cache_entries``: fingerprint vectors remembered to skip the metadata round of a
        retrieval (0 turns the cache off; see ``evault.gateway.rebuild.FVCache``).
        ``decode_in_thread``: check, decode and hash big segments of a retrieval in a worker
        thread, so the event loop moves bytes meanwhile on another core (see
        ``evault.gateway.rebuild.INLINE_DECODE_BYTES``); off when every core has a gateway
        worker already.
        """
        self = cls.__new__(cls)
        self._setup(
            vault=vault,
            cluster=cluster,
            nodes=nodes,
            catalog=catalog,
            combiner=combiner,
            clock=clock,
            node_timeout_s=node_timeout_s,
            stall_timeout_s=stall_timeout_s,
            slow_node_s=slow_node_s,
            queue_chunks=queue_chunks,
            catalog_in_thread=catalog_in_thread,
            reader_idle_s=reader_idle_s,
            fv_cache_entries=fv_cache_entries,
            decode_in_thread=decode_in_thread,
        )
        return self

    def _setup(
        self,
        *,
        vault: str,
        cluster: ClusterParams,
        nodes: NodeSet | Mapping[int, NodeClient],
        catalog: CatalogPort,
        combiner: ReceiptCombiner,
        clock: Clock | None,
        node_timeout_s: float,
        stall_timeout_s: float | None = None,
        slow_node_s: float | None = None,
        queue_chunks: int = 8,
        catalog_in_thread: bool = True,
        reader_idle_s: float = READER_IDLE_S,
        fv_cache_entries: int = FV_CACHE_ENTRIES,
        decode_in_thread: bool = True,
    ) -> None:
        from evault.gateway.receipts import VerifiedReceipts  # beside ThresholdCombiner

        clients = nodes.clients if isinstance(nodes, NodeSet) else dict(nodes)
        if sorted(clients) != list(range(1, cluster.n + 1)):
            raise ValueError(f"nodes: need exactly the node indices 1..{cluster.n}")
        if queue_chunks < 1:
            raise ValueError("queue_chunks: must be >= 1")
        if node_timeout_s <= 0:
            raise ValueError("node_timeout_s: must be > 0")
        self.vault = vault
        self.cluster = cluster
        self.clients: dict[int, NodeClient] = clients
        self._node_set = nodes if isinstance(nodes, NodeSet) else None
        self.catalog = catalog
        self.combiner = combiner
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.node_timeout_s = node_timeout_s
        self.stall_timeout_s = stall_timeout_s if stall_timeout_s is not None else node_timeout_s
        self.slow_node_s = slow_node_s if slow_node_s is not None else node_timeout_s
        self.queue_chunks = queue_chunks
        self.t = cluster.t
        self._catalog_in_thread = catalog_in_thread
        self.reader_idle_s = reader_idle_s
        self.decode_in_thread = decode_in_thread
        #: FVs of stored versions, filled by deposits and retrievals (saves the metadata round)
        self.fv_cache = FVCache(fv_cache_entries)
        #: receipts verified by this process (a known one is not verified again)
        self.verified_receipts = VerifiedReceipts()
        # The catalog knows whether its point reads are cheap enough for the event loop.
        self._catalog_reads_inline = bool(getattr(catalog, "point_reads_inline", False))

    async def aclose(self) -> None:
        if self._node_set is not None:
            await self._node_set.aclose()

    async def catalog_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a (synchronous, pooled) catalog call off the event loop."""
        if self._catalog_in_thread:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    async def catalog_read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A catalog point read: on the event loop for SQLite, else like :meth:`catalog_call`."""
        if self._catalog_reads_inline:
            return fn(*args, **kwargs)
        return await self.catalog_call(fn, *args, **kwargs)

    # -- deposit --------------------------------------------------------------------------

    async def deposit(
        self,
        owner: str,
        name: str,
        body: AsyncIterator[bytes],
        *,
        size: int | None = None,
        sha256: str | None = None,
        encrypted: bool = False,
        key_wrap: bytes | None = None,
    ) -> DepositOutcome:
        """Store ``body`` as the next version of ``(owner, name)`` and return its receipt.

        ``size``: the declared length (sent to the nodes as Content-Length), or None to stream
        chunked.  ``sha256``: the client's hex digest, checked by the gateway and each node.
        Raises ``DepositFailed`` (naming nodes), ``DigestMismatch`` / ``BadRequestLength``
        (the client's body is not what it declared), the body iterator's own errors, or a
        catalog error; in every case the version is failed and nothing is listed.
        """
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ValueError("size: must be None or an integer >= 0")
        if sha256 is not None:
            sha256 = sha256.lower()
            if not _HEX64.match(sha256):
                raise FormatError("sha256: must be 64 hexadecimal digits")
        owner = canonical_user_id(owner)
        version = await self.catalog_call(self.catalog.begin_deposit, owner, name)
        c = self.cluster
        proposal = Proposal(
            vault=self.vault,
            owner=owner,
            name=name,
            version=version,
            n=c.n,
            m=c.m,
            codec=c.codec,
            segment_bytes=c.segment_bytes,
            fingerprint_scheme=c.fingerprint_scheme,
            encrypted=encrypted,
            deposited_at=format_time(self.clock()),
        )
        attempt = DepositAttempt(self, proposal, size, sha256)
        try:
            outcome = await attempt.run(body, key_wrap)
        except BaseException as exc:
            if attempt.committed:
                raise  # stored and listed: its objects must stay, whatever failed after

            reason = describe_failure(exc)
            # Shielded: a cancelled request (client gone) must still clean up after itself.
            cleanup = detach(attempt.abandon(reason))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(cleanup)
            raise
        return outcome

    # -- retrieval ------------------------------------------------------------------------

    async def retrieve(self, owner: str, name: str, version: int | None = None) -> Retrieval:
        """Start rebuilding a stored version (the latest if ``version`` is None).

        Returns once the first segment is rebuilt and checked.  Raises ``NotFound``,
        ``InvalidSignature`` (the catalog's receipt does not verify), ``NotEnoughSlices``
        naming every node and why, or ``DocumentCorrupt``.
        """
        record = await self.catalog_read(self.catalog.get_version, owner, name, version)
        if not self.verified_receipts.seen(record.statement, record.signature):
            await asyncio.to_thread(self.combiner.verify, record.statement, record.signature)
            self.verified_receipts.add(record.statement, record.signature)
        statement = parsed_statement(record.statement)
        if statement.vault != self.vault:
            raise ConfigError(
                f"the catalog's receipt for {name!r} is from vault {statement.vault}, "
                f"this gateway serves vault {self.vault}"
            )
        reader = DocumentReader(self, record, statement)
        try:
            await reader.start()
        except BaseException:
            await reader.close()
            raise
        return Retrieval(reader)

    # -- deletion and clean-up ------------------------------------------------------------

    async def delete(self, owner: str, name: str, version: int) -> DeleteOutcome:
        """Delete one stored version: the catalog first (it is no longer listed), then every
        node (best effort; ``failed`` names the nodes that still hold their slice)."""
        record = await self.catalog_call(self.catalog.mark_deleted, owner, name, version)
        statement = Statement.from_bytes(record.statement)
        oid = object_id(statement.vault, statement.owner, statement.name, statement.version)
        failed = await self.delete_everywhere(oid)
        if failed:
            log.warning(
                "version %d of %r (owner %s): DELETE did not reach %s",
                version,
                name,
                record.owner,
                name_reasons(failed),
            )
        return DeleteOutcome(record, failed)

    async def cleanup_pending(
        self, older_than: timedelta = timedelta(hours=1)
    ) -> list[CleanupOutcome]:
        """Fail deposits left pending by a gateway that stopped (call at start-up).

        Only versions begun more than ``older_than`` ago are touched: with several gateways on
        one catalog, younger ones may still be streaming.  Their objects are deleted from every
        node first, so none of them can later pass for a stored version.
        """
        pending = await self.catalog_call(self.catalog.pending_versions, older_than)
        out = []
        for item in pending:
            oid = object_id(self.vault, item.owner, item.name, item.version)
            failed = await self.delete_everywhere(oid)
            with contextlib.suppress(WrongState):
                await self.catalog_call(
                    self.catalog.fail_deposit,
                    item.owner,
                    item.name,
                    item.version,
                    "the gateway stopped during the deposit",
                )
            log.info(
                "cleaned up pending version %d of %r (owner %s)%s",
                item.version,
                item.name,
                item.owner,
                f"; DELETE did not reach {name_reasons(failed)}" if failed else "",
            )
            out.append(CleanupOutcome(item, failed))
        return out

    async def sweep(self) -> SweepOutcome:
        """Delete the slices that nodes still hold for versions the catalog says were deleted
        or failed: a node that was down during a DELETE, or during the clean-up of a failed
        deposit, kept its slice.  Every node's listing is walked to its end; an object is
        deleted only if its statement names this vault and that object id, and the catalog
        holds that version as deleted or failed.  Anything else stays: stored and pending
        versions, unreadable statements, and versions the catalog does not know (the nodes
        are the source of truth, DESIGN §8).  Nodes are swept at once, each on its own."""
        results = await asyncio.gather(
            *(self._sweep_node(c) for c in self.clients.values()), return_exceptions=True
        )
        swept: dict[int, list[str]] = {}
        failed: dict[int, str] = {}
        seen = unknown = 0
        for node, result in zip(self.clients, results, strict=True):
            if isinstance(result, EvaultError):
                failed[node] = describe_failure(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                node_swept, node_seen, node_unknown = result
                seen += node_seen
                unknown += node_unknown
                if node_swept:
                    swept[node] = node_swept
        return SweepOutcome(swept, failed, seen, unknown)

    async def _sweep_node(self, client: NodeClient) -> tuple[list[str], int, int]:
        swept: list[str] = []
        seen = unknown = 0
        async for oid, statement in walk_listing(client):
            seen += 1
            fits, state = await self._catalog_state(client.index, oid, statement)
            if fits and state is None:
                unknown += 1
            elif state in SWEPT_STATES:
                await client.delete(oid)
                swept.append(oid)
                log.info("node %d: swept object %s (its version is gone)", client.index, oid)
        return swept, seen, unknown

    async def _catalog_state(
        self, node: int, oid: str, statement: bytes
    ) -> tuple[bool, str | None]:
        """(fits, state): whether the listed object's statement names this vault and that
        object id, and the catalog's state of its version (None: the catalog does not know
        it)."""
        try:
            st = Statement.from_bytes(statement)
            if st.vault != self.vault or object_id(st.vault, st.owner, st.name, st.version) != oid:
                raise FormatError("it names another vault or object")
            state = await self.catalog_call(
                self.catalog.version_state, st.owner, st.name, st.version
            )
        except EvaultError as exc:
            log.warning("node %d: object %s left alone: its statement: %s", node, oid, exc)
            return False, None
        return True, state

    async def delete_everywhere(
        self, oid: str, *, skip: frozenset[int] = frozenset()
    ) -> dict[int, str]:
        """DELETE ``oid`` on every node (but ``skip``) at once; the nodes it did not reach."""

        targets = {node: c for node, c in self.clients.items() if node not in skip}
        results = await each_node(targets, lambda c: c.delete(oid), self.node_timeout_s)
        return {
            node: describe_failure(result)
            for node, result in results.items()
            if isinstance(result, BaseException)
        }

    async def health(self) -> dict[int, str]:
        """Every node's state in a word or a sentence ("ok" or why not)."""

        async def one(client: NodeClient) -> str:
            health = await client.health()
            if health.vault != self.vault or health.node != client.index:
                return f"answers as node {health.node} of vault {health.vault}"
            return "ok"

        results = await asyncio.gather(
            *(one(c) for c in self.clients.values()), return_exceptions=True
        )
        out: dict[int, str] = {}
        for node, result in zip(self.clients, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, EvaultError):
                raise result
            out[node] = describe_failure(result) if isinstance(result, BaseException) else result
        return out

    # -- confidentiality relays (issue 6): see evault.gateway.key_relay ----------------------

    async def put_unwrap_key(
        self, owner: str, sealed: Mapping[int, bytes], certificate: bytes
    ) -> key_relay.KeyStoreOutcome:
        """Relay a client's sealed unwrap-key shares, node i getting ``sealed[i]``."""
        return await key_relay.put_unwrap_key(
            self.clients,
            vault=self.vault,
            owner=owner,
            sealed=sealed,
            certificate=certificate,
            timeout_s=self.node_timeout_s,
        )

    async def unwrap_keys(self, owner: str) -> key_relay.KeyListOutcome:
        """Every node's certificates of ``owner``'s unwrap keys."""
        return await key_relay.unwrap_keys(
            self.clients, vault=self.vault, owner=owner, timeout_s=self.node_timeout_s
        )

    async def unwrap(self, owner: str, signed_request: bytes) -> key_relay.UnwrapOutcome:
        """Relay ``owner``'s signed unwrap request to every node."""
        return await key_relay.unwrap(
            self.clients,
            vault=self.vault,
            owner=owner,
            signed_request=signed_request,
            timeout_s=self.node_timeout_s,
        )

    def log_nodes(self, what: str, faulty: Mapping[int, str], failed: Mapping[int, str]) -> None:
        for node, why in sorted(faulty.items()):
            log.warning("%s: node %d is faulty: %s", what, node, why)
        for node, why in sorted(failed.items()):
            log.info("%s: node %d did not take part: %s", what, node, why)


__all__ = [
    "CatalogPort",
    "CleanupOutcome",
    "DeleteOutcome",
    "DepositOutcome",
    "ReceiptCombiner",
    "Retrieval",
    "VaultService",
]
