"""The gateway's core: deposit, retrieve, delete and clean up, talking to the n nodes.

The public HTTP API (``evault.gateway.api``) is a thin adapter over :class:`VaultService`; the
decisions are in ``evault.gateway.planner`` (pure), the HTTP calls in ``evault.transport.nodes``.

Deposit (DESIGN §5)
-------------------
``catalog.begin_deposit`` allocates the version (state *pending*); the gateway proposes the
statement fields and streams the body to all n nodes at once.  The body is *teed*: one pump reads
the client's chunks, hashes them (SHA-256, its own measurement) and offers each chunk to n
bounded queues, one per node, from which that node's request body is drawn.  The pump waits
while a queue is full — back-pressure, so the gateway holds at most ``queue_chunks`` chunks per
node whatever the document size — but a node whose queue stays full for ``stall_timeout_s``, or
whose request fails, is dropped so the others proceed.  The answers are checked and grouped by
the planner, k shares are combined (bad ones excluded and named) and the signature verified, and
the receipt is committed to the catalog **before** it is returned.  On any failure: the
objects are deleted from every node (best effort), the version is failed in the catalog, and an
error names the nodes and why.  Never a receipt for something not stored; a pending or failed
version is never listed.

Retrieval (DESIGN §6)
---------------------
The catalog's receipt is verified, then every node is asked for its metadata; the FV whose hash
the receipt signs is settled on (a node holding another is named faulty) as soon as m nodes agree.
Slices are streamed from m nodes at once (systematic slices first); the leaf list of each is
checked against its root in the FV, each block against its leaf as it arrives.  A node that
fails, lies or stays silent for ``slow_node_s`` is replaced by the next best node, resuming at
the segment where it failed (``from_segment``).  Segments are decoded off the event loop and
yielded one by one.  The first segment is rebuilt before :meth:`VaultService.retrieve` returns,
so a document that cannot be rebuilt fails with an error rather than a truncated stream; the last
segment is withheld until the whole document's SHA-256 matches the receipt, so a wrong document
is never delivered complete (the API aborts the connection when the stream raises).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from evault.catalog.names import canonical_user_id
from evault.catalog.records import PendingVersion, VersionRecord
from evault.config import ClusterParams, GatewayConfig
from evault.errors import (
    BadNodeAnswer,
    BadRequestLength,
    ConfigError,
    DepositFailed,
    DigestMismatch,
    DocumentCorrupt,
    EvaultError,
    FingerprintError,
    FormatError,
    InvalidSignature,
    NodeRejected,
    NodeTimeout,
    NodeUnreachable,
    NotEnoughShares,
    SliceCorrupt,
    WrongState,
)
from evault.gateway import planner
from evault.ida import Layout
from evault.ida.fingerprint import FingerprintVector, SliceVerifier, leaves_from_bytes
from evault.protocol.node_api import DepositResult, ObjectMeta, Proposal, WireShare, object_id
from evault.protocol.statement import Statement, format_time
from evault.transport import tls
from evault.transport.nodes import NodeAddress, NodeClient, NodeSet, Timeouts

log = logging.getLogger("evault.gateway")

T = TypeVar("T")
Clock = Callable[[], datetime]

#: Largest piece of a client chunk handed to the node queues (bigger chunks are cut).
MAX_PIECE_BYTES = 256 * 1024
#: A retrieval's slice stream whose blocks nobody takes for this long releases its connection.
READER_IDLE_S = 60.0
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")


# --- seams ---------------------------------------------------------------------------------


class CatalogPort(Protocol):
    """The catalog methods the service uses (``evault.catalog.Catalog`` satisfies it)."""

    def begin_deposit(self, owner: str, name: str) -> int: ...

    def complete_deposit(
        self,
        owner: str,
        name: str,
        version: int,
        *,
        size: int,
        sha256: bytes,
        fv_hash: bytes,
        codec_id: str,
        m: int,
        n: int,
        segment_bytes: int,
        statement: bytes,
        signature: bytes,
        deposited_at: datetime,
        encrypted: bool = False,
        key_wrap: bytes | None = None,
    ) -> VersionRecord: ...

    def fail_deposit(self, owner: str, name: str, version: int, reason: str) -> None: ...

    def get_version(self, owner: str, name: str, version: int | None = None) -> VersionRecord: ...

    def mark_deleted(self, owner: str, name: str, version: int) -> VersionRecord: ...

    def pending_versions(self, older_than: datetime | timedelta) -> list[PendingVersion]: ...

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
class DepositOutcome:
    """A committed deposit: the receipt (``statement`` bytes + ``signature``) and the facts.

    ``faulty``: nodes that answered wrongly (bad share, other statement, bad FV), with why.
    ``failed``: nodes that gave no usable answer (down, stalled, refused), with why.
    """

    version: int
    size: int
    sha256: str
    statement: bytes
    signature: bytes
    faulty: dict[int, str]
    failed: dict[int, str]
    record: VersionRecord


@dataclass(frozen=True)
class DeleteOutcome:
    record: VersionRecord
    #: nodes the DELETE did not reach (their slice stays until a later clean-up)
    failed: dict[int, str]


@dataclass(frozen=True)
class CleanupOutcome:
    pending: PendingVersion
    failed: dict[int, str]


class Retrieval:
    """A document being rebuilt: iterate it (``async for chunk in retrieval``) once.

    ``faulty`` and ``failed`` fill as the stream goes (node → reason).  Close it with
    :meth:`aclose` (or ``async with``) if you stop before the end; finishing the iteration
    closes it too.  The iteration raises ``DocumentCorrupt`` instead of delivering the last
    segment if the whole document's SHA-256 is wrong, and ``NotEnoughSlices`` if too few
    nodes remain.
    """

    def __init__(self, reader: _DocumentReader) -> None:
        self._reader = reader
        self.record: VersionRecord = reader.record
        self.statement: Statement = reader.statement
        self.size: int = reader.statement.size
        self.sha256: str = reader.statement.sha256
        self.faulty: dict[int, str] = reader.faulty
        self.failed: dict[int, str] = reader.failed
        self._iterator: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._iterator is not None:
            raise RuntimeError("a Retrieval can be iterated only once")
        self._iterator = self._reader.stream()
        return self._iterator

    async def aclose(self) -> None:
        await self._reader.close()

    async def __aenter__(self) -> Retrieval:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# --- the service ---------------------------------------------------------------------------


class VaultService:
    """Deposit, retrieve, delete and clean up documents on the nodes.  See the module docstring.

    ``VaultService(config, catalog)`` builds everything from the gateway's config: one pooled
    mutual-TLS client for the nodes, the threshold public key, the time-outs.  Tests assemble
    one from explicit parts with :meth:`from_parts`.
    """

    def __init__(
        self, config: GatewayConfig, catalog: CatalogPort, *, clock: Clock | None = None
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
    ) -> None:
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

    async def aclose(self) -> None:
        if self._node_set is not None:
            await self._node_set.aclose()

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a (synchronous, pooled) catalog call off the event loop."""
        if self._catalog_in_thread:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

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
        version = await self._db(self.catalog.begin_deposit, owner, name)
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
        attempt = _DepositAttempt(self, proposal, size, sha256)
        try:
            outcome = await attempt.run(body, key_wrap)
        except BaseException as exc:
            if attempt.committed:
                raise  # stored and listed: its objects must stay, whatever failed after

            reason = _describe(exc)
            # Shielded: a cancelled request (client gone) must still clean up after itself.
            cleanup = asyncio.ensure_future(attempt.abandon(reason))
            _background.add(cleanup)
            cleanup.add_done_callback(_background.discard)
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
        record = await self._db(self.catalog.get_version, owner, name, version)
        await asyncio.to_thread(self.combiner.verify, record.statement, record.signature)
        statement = Statement.from_bytes(record.statement)
        if statement.vault != self.vault:
            raise ConfigError(
                f"the catalog's receipt for {name!r} is from vault {statement.vault}, "
                f"this gateway serves vault {self.vault}"
            )
        reader = _DocumentReader(self, record, statement)
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
        record = await self._db(self.catalog.mark_deleted, owner, name, version)
        statement = Statement.from_bytes(record.statement)
        oid = object_id(statement.vault, statement.owner, statement.name, statement.version)
        failed = await self.delete_everywhere(oid)
        if failed:
            log.warning(
                "version %d of %r (owner %s): DELETE did not reach %s",
                version,
                name,
                record.owner,
                _names(failed),
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
        pending = await self._db(self.catalog.pending_versions, older_than)
        out = []
        for item in pending:
            oid = object_id(self.vault, item.owner, item.name, item.version)
            failed = await self.delete_everywhere(oid)
            with contextlib.suppress(WrongState):
                await self._db(
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
                f"; DELETE did not reach {_names(failed)}" if failed else "",
            )
            out.append(CleanupOutcome(item, failed))
        return out

    async def delete_everywhere(
        self, oid: str, *, skip: frozenset[int] = frozenset()
    ) -> dict[int, str]:
        """DELETE ``oid`` on every node (but ``skip``) at once; the nodes it did not reach."""

        async def one(client: NodeClient) -> None:
            async with asyncio.timeout(self.node_timeout_s):
                await client.delete(oid)

        targets = [node for node in self.clients if node not in skip]
        results = await asyncio.gather(
            *(one(self.clients[node]) for node in targets), return_exceptions=True
        )
        failed: dict[int, str] = {}
        for node, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, EvaultError | TimeoutError):
                    raise result
                failed[node] = _describe(result)
        return failed

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
            out[node] = _describe(result) if isinstance(result, BaseException) else result
        return out

    def _report(self, what: str, faulty: Mapping[int, str], failed: Mapping[int, str]) -> None:
        for node, why in sorted(faulty.items()):
            log.warning("%s: node %d is faulty: %s", what, node, why)
        for node, why in sorted(failed.items()):
            log.info("%s: node %d did not take part: %s", what, node, why)


def _describe(exc: BaseException) -> str:
    """Why a node is out, in words that do not repeat the node (callers name it)."""
    if isinstance(exc, NodeUnreachable | BadNodeAnswer):
        return f"{exc.op}: {exc.reason}"
    if isinstance(exc, NodeRejected):
        return f"{exc.op}: refused with {exc.status} {exc.node_code}: {exc.node_message}"
    if isinstance(exc, EvaultError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.CancelledError):
        return "the request was cancelled (client gone or gateway stopping)"
    return f"{type(exc).__name__}: {exc}"


def _names(reasons: Mapping[int, str]) -> str:
    return "; ".join(f"node {node} ({why})" for node, why in sorted(reasons.items()))


# --- deposit: the tee ------------------------------------------------------------------------


_END: Any = None  # end-of-body marker in a lane's queue

#: Tasks that must finish even if their starter is cancelled (clean-up, audit rows), kept
#: referenced here because the event loop holds only weak references to tasks.
_background: set[asyncio.Future[None]] = set()


class _Lane:
    """One node's share of a deposit: a bounded queue feeding its request body."""

    def __init__(self, client: NodeClient, queue_chunks: int) -> None:
        self.client = client
        self.node = client.index
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=queue_chunks)
        self.task: asyncio.Task[DepositResult] | None = None
        self.dropped: str | None = None

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self.queue.get()
            if chunk is None:
                return
            yield chunk

    @property
    def live(self) -> bool:
        """Still taking data."""
        return self.dropped is None and self.task is not None and not self.task.done()

    @property
    def usable(self) -> bool:
        """Taking data, or already answered without an error."""
        if self.dropped is not None or self.task is None:
            return False
        if not self.task.done():
            return True
        return not self.task.cancelled() and self.task.exception() is None

    def drop(self, reason: str) -> None:
        if self.dropped is None:
            self.dropped = reason
        if self.task is not None:
            self.task.cancel()


class _DepositAttempt:
    def __init__(
        self, service: VaultService, proposal: Proposal, size: int | None, sha256: str | None
    ) -> None:
        self.s = service
        self.proposal = proposal
        self.size = size
        self.sha256 = sha256
        self.lanes: dict[int, _Lane] = {}
        self.what = f"deposit of version {proposal.version} of {proposal.name!r}"
        #: the catalog recorded the receipt: from here on nothing may be undone
        self.committed = False

    async def run(self, body: AsyncIterator[bytes], key_wrap: bytes | None) -> DepositOutcome:
        s, p = self.s, self.proposal
        for node, client in s.clients.items():
            lane = _Lane(client, s.queue_chunks)
            lane.task = asyncio.ensure_future(
                client.deposit(p, lane.body(), self.size, self.sha256)
            )
            self.lanes[node] = lane
        measured_size, measured_sha256 = await self._pump(body)
        answers, failed, faulty = await self._collect()

        plan = planner.plan_deposit(
            proposal=p,
            k=s.cluster.k,
            measured_size=measured_size,
            measured_sha256=measured_sha256,
            answers=answers,
            failures=failed,
            client_sha256=self.sha256,
            client_size=self.size,
        )
        faulty = planner.merge_reasons(faulty, plan.faulty)
        if plan.client_fault:
            if self.size is not None and self.size != measured_size:
                raise BadRequestLength(self.size, measured_size)
            raise DigestMismatch(self.sha256 or "", measured_sha256)
        if not plan.ok or plan.statement is None or plan.parsed is None:
            s._report(self.what, faulty, failed)
            raise DepositFailed(
                plan.problem or "no statement", planner.merge_reasons(faulty, failed)
            )

        statement_bytes, statement = plan.statement, plan.parsed
        shares = [answers[node].share for node in plan.signers]
        try:
            signature, bad = await asyncio.to_thread(s.combiner.combine, statement_bytes, shares)
        except NotEnoughShares as exc:
            faulty.update({node: f"bad signature share: {why}" for node, why in exc.bad.items()})
            s._report(self.what, faulty, failed)
            raise DepositFailed(
                f"only {exc.have} valid signature shares, {exc.need} needed",
                planner.merge_reasons(faulty, failed),
            ) from exc
        faulty.update({node: f"bad signature share: {why}" for node, why in bad.items()})
        try:
            await asyncio.to_thread(s.combiner.verify, statement_bytes, signature)
        except InvalidSignature as exc:
            s._report(self.what, faulty, failed)
            raise DepositFailed(
                f"the combined signature does not verify: {exc}",
                planner.merge_reasons(faulty, failed),
            ) from exc

        record = await s._db(
            s.catalog.complete_deposit,
            p.owner,
            p.name,
            p.version,
            size=statement.size,
            sha256=bytes.fromhex(statement.sha256),
            fv_hash=bytes.fromhex(statement.fv_hash),
            codec_id=statement.codec,
            m=statement.m,
            n=statement.n,
            segment_bytes=statement.segment_bytes,
            statement=statement_bytes,
            signature=signature,
            deposited_at=statement.deposited_at_datetime,
            encrypted=statement.encrypted,
            key_wrap=key_wrap,
        )
        self.committed = True
        s._report(self.what, faulty, failed)
        if faulty:
            await _audit_faults(s, "deposit", p.owner, p.name, p.version, faulty)
        return DepositOutcome(
            version=p.version,
            size=statement.size,
            sha256=statement.sha256,
            statement=statement_bytes,
            signature=signature,
            faulty=faulty,
            failed=failed,
            record=record,
        )

    async def _offer(self, lane: _Lane, item: bytes | None) -> None:
        """Put ``item`` in the lane's queue; drop the lane if it stays full too long."""
        if not lane.live:
            return
        try:
            lane.queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            pass
        if lane.task is None:
            raise RuntimeError("lane started without its request task")
        putter = asyncio.ensure_future(lane.queue.put(item))
        try:
            done, _ = await asyncio.wait(
                {putter, lane.task},
                timeout=self.s.stall_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            putter.cancel()  # no-op when it is done; never left waiting on a dead queue
        if putter in done:
            return
        if lane.task not in done:
            lane.drop(f"stalled: took no data for {self.s.stall_timeout_s:g} s")
            log.warning("%s: node %d dropped: %s", self.what, lane.node, lane.dropped)

    async def _offer_all(self, item: bytes | None) -> None:
        for lane in list(self.lanes.values()):
            await self._offer(lane, item)
        usable = sum(lane.usable for lane in self.lanes.values())
        if usable < self.s.cluster.k:
            raise DepositFailed(
                f"only {usable} node(s) still receiving the document, {self.s.cluster.k} needed",
                self._lane_failures(),
            )

    async def _pump(self, body: AsyncIterator[bytes]) -> tuple[int, str]:
        """Tee the body into every live lane while hashing it; (size, sha256 hex)."""
        hasher = hashlib.sha256()
        total = 0
        async for chunk in body:
            if not chunk:
                continue
            data = chunk if isinstance(chunk, bytes) else bytes(chunk)
            total += len(data)
            if self.size is not None and total > self.size:
                raise BadRequestLength(self.size, total)
            hasher.update(data)
            for start in range(0, len(data), MAX_PIECE_BYTES):
                piece = (
                    data if len(data) <= MAX_PIECE_BYTES else data[start : start + MAX_PIECE_BYTES]
                )
                await self._offer_all(piece)
        await self._offer_all(_END)
        return total, hasher.hexdigest()

    def _lane_failures(self) -> dict[int, str]:
        """Why each lane that ended did, for error messages (waits for nothing)."""
        out = {}
        for node, lane in self.lanes.items():
            if lane.dropped is not None:
                out[node] = lane.dropped
            elif lane.task is not None and lane.task.done() and not lane.task.cancelled():
                exc = lane.task.exception()
                if exc is not None:
                    out[node] = _describe(exc)
        return out

    async def _collect(
        self,
    ) -> tuple[dict[int, DepositResult], dict[int, str], dict[int, str]]:
        """Wait for every node's answer: (answers, failed, faulty)."""
        tasks = {lane.task: lane for lane in self.lanes.values() if lane.task is not None}
        _, pending = await asyncio.wait(tasks, timeout=self.s.node_timeout_s)
        for task in pending:
            tasks[task].drop(f"no answer within {self.s.node_timeout_s:g} s of the body's end")
        if pending:
            await asyncio.wait(pending)
        answers: dict[int, DepositResult] = {}
        failed: dict[int, str] = {}
        faulty: dict[int, str] = {}
        for task, lane in tasks.items():
            if lane.dropped is not None:
                failed[lane.node] = lane.dropped
            elif task.cancelled():
                failed[lane.node] = "cancelled"
            elif (exc := task.exception()) is not None:
                if not isinstance(exc, EvaultError):
                    raise exc
                if isinstance(exc, BadNodeAnswer):
                    faulty[lane.node] = _describe(exc)
                else:
                    failed[lane.node] = _describe(exc)
            else:
                answers[lane.node] = task.result()
        return answers, failed, faulty

    async def abandon(self, reason: str) -> None:
        """Undo a deposit that will get no receipt: stop the lanes, delete, fail the version."""
        p = self.proposal
        for lane in self.lanes.values():
            if lane.task is not None and not lane.task.done():
                lane.drop("deposit abandoned")
        tasks = [lane.task for lane in self.lanes.values() if lane.task is not None]
        if tasks:
            await asyncio.wait(tasks)
            for task in tasks:
                if not task.cancelled():
                    task.exception()  # retrieved, so asyncio does not log it as lost
        # A node that refused with "exists" holds a committed object of that id from an earlier
        # deposit the catalog no longer knows (a catalog restored from a backup): that object
        # may back a receipt a client holds, so it is not ours to delete.
        exists = frozenset(
            node
            for node, lane in self.lanes.items()
            if lane.task is not None
            and lane.task.done()
            and not lane.task.cancelled()
            and isinstance(lane.task.exception(), NodeRejected)
            and getattr(lane.task.exception(), "node_code", None) == "exists"
        )
        failed = await self.s.delete_everywhere(p.object_id(), skip=exists)
        if exists:
            log.error(
                "%s: node(s) %s already hold a committed object for this version; the catalog "
                "is behind the nodes (restored from a backup?), left in place",
                self.what,
                ", ".join(map(str, sorted(exists))),
            )
        if failed:
            log.warning("%s abandoned; DELETE did not reach %s", self.what, _names(failed))
        try:
            await self.s._db(self.s.catalog.fail_deposit, p.owner, p.name, p.version, reason)
        except EvaultError as exc:
            log.error("%s: could not mark the version failed: %s", self.what, exc)
        log.warning("%s failed: %s", self.what, reason)


async def _audit_faults(
    service: VaultService,
    action: str,
    owner: str,
    name: str,
    version: int,
    faulty: Mapping[int, str],
) -> None:
    try:
        await service._db(
            service.catalog.audit,
            "faulty_nodes",
            user_id=owner,
            name=name,
            version=version,
            outcome="failed",
            details={"during": action, "nodes": {str(k): v for k, v in faulty.items()}},
        )
    except Exception as exc:  # an audit row is not worth failing a committed operation
        log.error("could not audit faulty nodes: %s", exc)


# --- retrieval -------------------------------------------------------------------------------


class _ReaderIdle(Exception):
    """A slice reader stopped because its blocks were not taken: reopen it, blame no one."""


class _SliceReader:
    """Streams one node's slice from ``from_segment``: verified blocks into a small queue."""

    def __init__(
        self,
        client: NodeClient,
        oid: str,
        *,
        fv: FingerprintVector,
        fv_hash: bytes,
        layout: Layout,
        from_segment: int,
        idle_s: float,
        read_ahead: int = 2,
    ) -> None:
        self.client = client
        self.node = client.index
        self.slice_index = planner.slice_of(client.index)
        self.queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(maxsize=read_ahead)
        self._oid = oid
        self._fv = fv
        self._fv_hash = fv_hash
        self._layout = layout
        self._from = from_segment
        self._idle_s = idle_s
        #: set when the reader gave up its connection because nobody took its blocks
        self.idle = False
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        layout, j = self._layout, self.slice_index
        count = layout.segment_count
        async with self.client.slice(self._oid, self._from) as stream:
            if stream.slice_index != j:
                raise BadNodeAnswer(self.node, "slice", f"serves slice {stream.slice_index}")
            if stream.fv_hash != self._fv_hash:
                raise BadNodeAnswer(self.node, "slice", "serves a slice of another FV")
            if stream.segment_count != count:
                raise BadNodeAnswer(
                    self.node, "slice", f"has {stream.segment_count} segments, not {count}"
                )
            raw = await stream.read_exactly(stream.leaves_bytes)
            verifier = SliceVerifier(self._fv.roots[j], j, leaves_from_bytes(raw, count))
            for i in range(self._from, count):
                block = await stream.read_exactly(layout.block_bytes(i))
                verifier.verify(i, block)
                if not await self._put((i, block)):
                    # The consumer went quiet (a very slow client, or a retrieval abandoned
                    # without aclose): free the pooled connection; it is reopened on demand.
                    self.idle = True
                    return

    async def _put(self, item: tuple[int, bytes]) -> bool:
        """Queue ``item``; False if it could not be queued within the idle time."""
        try:
            self.queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            pass
        putter = asyncio.ensure_future(self.queue.put(item))
        try:
            done, _ = await asyncio.wait({putter}, timeout=self._idle_s)
        finally:
            putter.cancel()  # no-op once done
        return putter in done

    async def next_block(self, segment: int, timeout_s: float) -> bytes:
        """The verified block of ``segment``; raises the reader's error or ``NodeTimeout``."""
        getter = asyncio.ensure_future(self.queue.get())
        try:
            done, _ = await asyncio.wait(
                {getter, self.task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not getter.done():
                getter.cancel()
        if getter in done:
            index, block = getter.result()
            if index != segment:  # a bug in the loop below, not the node's fault
                raise RuntimeError(f"slice reader of node {self.node} is at segment {index}")
            return block
        if self.task.done():
            exc = self.task.exception() if not self.task.cancelled() else None
            if exc is not None:
                raise exc
            if self.idle:
                raise _ReaderIdle
            raise BadNodeAnswer(self.node, "slice", f"stream ended before segment {segment}")
        raise NodeTimeout(self.node, "slice", f"no block within {timeout_s:g} s")

    async def close(self) -> None:
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


class _DocumentReader:
    def __init__(self, service: VaultService, record: VersionRecord, statement: Statement) -> None:
        self.s = service
        self.record = record
        self.statement = statement
        self.layout = Layout(
            statement.size, statement.segment_bytes, statement.m, statement.n, statement.codec
        )
        self.oid = object_id(statement.vault, statement.owner, statement.name, statement.version)
        self.fv_hash = bytes.fromhex(statement.fv_hash)
        self.faulty: dict[int, str] = {}
        self.failed: dict[int, str] = {}
        self.agreeing: set[int] = set()
        self.fv: FingerprintVector | None = None
        self.readers: dict[int, _SliceReader] = {}
        self.hasher = hashlib.sha256()
        self.first: bytes | None = None
        self.what = (
            f"retrieval of version {statement.version} of {statement.name!r} "
            f"(owner {statement.owner})"
        )
        self._closed = False
        if len(self.s.clients) != statement.n:
            raise ConfigError(
                f"version {statement.version} of {statement.name!r} was dispersed over "
                f"{statement.n} nodes, this gateway knows {len(self.s.clients)}"
            )

    # ---- FV ----

    def _check_meta(self, node: int, meta: ObjectMeta) -> FingerprintVector | str:
        """The node's FV, or why its metadata is unacceptable."""
        if meta.node != node or meta.slice_index != planner.slice_of(node):
            return f"answers as node {meta.node} holding slice {meta.slice_index}"
        if meta.segment_count != self.layout.segment_count:
            return f"reports {meta.segment_count} segments, not {self.layout.segment_count}"
        if meta.slice_bytes != self.layout.slice_bytes():
            return f"reports a slice of {meta.slice_bytes} bytes, not {self.layout.slice_bytes()}"
        if meta.statement != self.record.statement:
            return "holds a statement other than the receipt's"
        try:
            return FingerprintVector(tuple(meta.fv))
        except ValueError as exc:
            return f"holds an unusable FV: {exc}"

    async def _settle_fv(self) -> None:
        """Ask every node for its metadata until m hold the receipt's FV (or all answered)."""
        n, m = self.statement.n, self.statement.m

        async def ask(client: NodeClient) -> tuple[int, ObjectMeta | BaseException]:
            try:
                return client.index, await client.meta(self.oid)
            except EvaultError as exc:
                return client.index, exc

        tasks = [asyncio.ensure_future(ask(c)) for c in self.s.clients.values()]
        candidates: dict[int, FingerprintVector | None] = {}
        matching = 0
        try:
            for next_done in asyncio.as_completed(tasks, timeout=self.s.node_timeout_s):
                try:
                    node, answer = await next_done
                except TimeoutError:
                    break
                if isinstance(answer, BaseException):
                    self._blame(node, answer)
                    continue
                checked = self._check_meta(node, answer)
                if isinstance(checked, str):
                    self.faulty[node] = checked
                    continue
                candidates[node] = checked
                matching += checked.fv_hash() == self.fv_hash
                if matching >= m:
                    break  # enough to read from; the others stay spares
        finally:
            for task in tasks:
                task.cancel()
        try:
            settled = planner.plan_fv(candidates, t=self.s.t, expected_hash=self.fv_hash)
        except FingerprintError as exc:
            for node in candidates:
                self.faulty[node] = "holds an FV that differs from the receipt's fv_hash"
            self._report()
            raise planner.not_enough_slices(
                have=0, need=m, failed=self._excluded() | self._silent(n)
            ) from exc
        self.fv = settled.fv
        self.agreeing = set(settled.agreeing)
        self.faulty.update(settled.faulty)

    def _silent(self, n: int) -> dict[int, str]:
        known = set(self.agreeing) | set(self.faulty) | set(self.failed)
        return {
            node: f"no metadata within {self.s.node_timeout_s:g} s"
            for node in range(1, n + 1)
            if node not in known
        }

    # ---- slices ----

    def _blame(self, node: int, exc: BaseException) -> None:
        """Record why ``node`` is out: faulty if it lied or broke the protocol, failed if not."""
        if isinstance(exc, SliceCorrupt | BadNodeAnswer | FingerprintError | FormatError):
            self.faulty.setdefault(node, _describe(exc))
        elif isinstance(exc, NodeRejected) and exc.node_code == "not_found":
            self.failed.setdefault(node, "does not hold the object")
        else:
            self.failed.setdefault(node, _describe(exc))

    def _excluded(self) -> dict[int, str]:
        return planner.merge_reasons(self.faulty, self.failed)

    def _start_reader(self, node: int, from_segment: int) -> None:
        if self.fv is None:
            raise RuntimeError("FV not settled")
        self.readers[node] = _SliceReader(
            self.s.clients[node],
            self.oid,
            fv=self.fv,
            fv_hash=self.fv_hash,
            layout=self.layout,
            from_segment=from_segment,
            idle_s=self.s.reader_idle_s,
        )

    async def _replace(self, reader: _SliceReader, exc: BaseException, segment: int) -> None:
        self._blame(reader.node, exc)
        log.warning(
            "%s: node %d dropped at segment %d: %s",
            self.what,
            reader.node,
            segment,
            self._excluded()[reader.node],
        )
        del self.readers[reader.node]
        await reader.close()
        choice = planner.plan_replacement(
            n=self.statement.n,
            m=self.statement.m,
            agreeing=self.agreeing,
            active=self.readers,
            excluded=self._excluded(),
        )
        if choice is None:
            self._report()
            raise planner.not_enough_slices(
                have=len(self.readers), need=self.statement.m, failed=self._excluded()
            )
        log.info(
            "%s: reading node %d from segment %d (%s)",
            self.what,
            choice.node,
            segment,
            choice.reason,
        )
        self._start_reader(choice.node, segment)

    async def _segment(self, i: int) -> bytes:
        """Rebuild segment ``i`` from m verified blocks, replacing nodes that fail."""
        blocks: dict[int, bytes] = {}
        while len(blocks) < self.statement.m:
            waiting = [r for r in self.readers.values() if r.slice_index not in blocks]
            results = await asyncio.gather(
                *(r.next_block(i, self.s.slow_node_s) for r in waiting), return_exceptions=True
            )
            for reader, result in zip(waiting, results, strict=True):
                if isinstance(result, bytes):
                    blocks[reader.slice_index] = result
                elif isinstance(result, _ReaderIdle):
                    log.info("%s: reopening node %d at segment %d", self.what, reader.node, i)
                    self._start_reader(reader.node, i)
                elif isinstance(result, EvaultError):
                    await self._replace(reader, result, i)
                else:
                    raise result
        layout, hasher = self.layout, self.hasher
        codec = layout.codec

        def decode() -> bytes:
            data = codec.decode(blocks, layout.segment_len(i))
            hasher.update(data)
            return data

        return await asyncio.to_thread(decode)

    def _check_digest(self) -> None:
        actual = self.hasher.hexdigest()
        if actual != self.statement.sha256:
            log.error(
                "%s: rebuilt document hashes to %s, not %s",
                self.what,
                actual,
                self.statement.sha256,
            )
            raise DocumentCorrupt(self.statement.sha256, actual)

    async def start(self) -> None:
        count = self.layout.segment_count
        if count == 0:
            self._check_digest()
            return
        await self._settle_fv()
        plan = planner.plan_readers(
            n=self.statement.n,
            m=self.statement.m,
            agreeing=self.agreeing,
            excluded=self._excluded(),
        )
        for choice in plan.readers:
            self._start_reader(choice.node, 0)
        self.first = await self._segment(0)
        if count == 1:
            self._check_digest()
            self._report()

    async def stream(self) -> AsyncIterator[bytes]:
        count = self.layout.segment_count
        try:
            if count == 0:
                return
            first, self.first = self.first, None
            if first is None:
                raise RuntimeError("a Retrieval can be streamed only once")
            yield first
            for i in range(1, count):
                data = await self._segment(i)
                if i == count - 1:
                    # Withhold the last bytes until the whole document is known to be right.
                    self._check_digest()
                    self._report()
                yield data
        finally:
            await self.close()

    def _report(self) -> None:
        self.s._report(self.what, self.faulty, self.failed)
        if self.faulty:
            st = self.statement
            task = asyncio.ensure_future(
                _audit_faults(self.s, "retrieve", st.owner, st.name, st.version, dict(self.faulty))
            )
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        readers = list(self.readers.values())
        self.readers.clear()
        await asyncio.gather(*(r.close() for r in readers))


__all__ = [
    "CatalogPort",
    "CleanupOutcome",
    "DeleteOutcome",
    "DepositOutcome",
    "ReceiptCombiner",
    "Retrieval",
    "VaultService",
]
