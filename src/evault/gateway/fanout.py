"""Deposit fan-out (DESIGN §5): the body teed to all n nodes, their answers judged.

One pump reads the client's chunks, hashes them (SHA-256: the gateway's own measurement, checked
against every statement) and offers each chunk to n bounded queues, one per node; each node's
request body is drawn from its queue.  The pump waits while a queue is full — back-pressure, so
at most ``queue_chunks`` pieces of at most ``MAX_PIECE_BYTES`` are buffered per node whatever the
document size — but a node whose queue stays full for ``stall_timeout_s``, or whose request
fails, is dropped so the others proceed.  As soon as fewer than k nodes can still answer, the
deposit fails without reading the rest of the body.  The planner (``evault.gateway.planner``)
then picks the statement, the combiner makes the receipt, and the catalog records it before it
is returned.  :meth:`DepositAttempt.abandon` undoes everything else.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from evault.catalog.records import ReceiptRecord, VersionRecord
from evault.errors import (
    BadNodeAnswer,
    BadRequestLength,
    DepositFailed,
    DigestMismatch,
    EvaultError,
    InvalidSignature,
    NodeRejected,
    NodeUnreachable,
    NotEnoughShares,
)
from evault.gateway import planner
from evault.ida.fingerprint import FingerprintVector
from evault.protocol.node_api import DepositResult, Proposal, WireShare
from evault.protocol.statement import Statement
from evault.transport.nodes import NodeClient

if TYPE_CHECKING:
    from evault.gateway.service import VaultService

log = logging.getLogger("evault.gateway")

T = TypeVar("T")

#: Largest piece of a client chunk handed to the node queues (bigger chunks are cut).
MAX_PIECE_BYTES = 256 * 1024

#: Tasks that must finish even if their starter is cancelled (clean-up, audit rows), kept
#: referenced here because the event loop holds only weak references to tasks.
_detached: set[asyncio.Future[Any]] = set()


def detach(work: Awaitable[Any]) -> asyncio.Future[Any]:
    """Run ``work`` to its end even if whoever started it is cancelled."""
    task = asyncio.ensure_future(work)
    _detached.add(task)
    task.add_done_callback(_detached.discard)
    return task


async def each_node(
    clients: Mapping[int, NodeClient],
    call: Callable[[NodeClient], Awaitable[T]],
    timeout_s: float,
) -> dict[int, T | BaseException]:
    """``call`` on every client at once, each within ``timeout_s``: node → result, or the
    evault error / time-out it raised (anything else is a bug and is raised)."""

    async def one(client: NodeClient) -> T:
        async with asyncio.timeout(timeout_s):
            return await call(client)

    nodes = sorted(clients)
    results = await asyncio.gather(*(one(clients[i]) for i in nodes), return_exceptions=True)
    out: dict[int, T | BaseException] = {}
    for node, result in zip(nodes, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, EvaultError | TimeoutError):
            raise result
        out[node] = result
    return out


def receipt_record(
    statement: Statement, statement_bytes: bytes, signature: bytes, key_wrap: bytes | None = None
) -> ReceiptRecord:
    """The receipt as the catalog records it (``Catalog.complete_deposit`` and
    ``restore_version``): ``statement_bytes``, the exact bytes ``signature`` covers, and the
    facts read from ``statement``, their parse."""
    return ReceiptRecord(
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


def describe_failure(exc: BaseException) -> str:
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


def name_reasons(reasons: Mapping[int, str]) -> str:
    return "; ".join(f"node {node} ({why})" for node, why in sorted(reasons.items()))


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


_END: Any = None  # end-of-body marker in a lane's queue


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


class DepositAttempt:
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
        # k nodes are asked to sign, the others only store (their shares are asked for later if
        # one of the k fails or lies): a share is the costliest part of a node's deposit.
        first_signers = planner.first_signers(p.object_id(), s.clients, s.cluster.k)
        for node, client in s.clients.items():
            lane = _Lane(client, s.queue_chunks)
            lane.task = asyncio.ensure_future(
                client.deposit(p, lane.body(), self.size, self.sha256, sign=node in first_signers)
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
            s.log_nodes(self.what, faulty, failed)
            raise DepositFailed(
                plan.problem or "no statement", planner.merge_reasons(faulty, failed)
            )

        statement_bytes, statement = plan.statement, plan.parsed
        k = s.cluster.k
        shares = [share for node in plan.signers if (share := answers[node].share) is not None]
        unsigned = [node for node in plan.signers if answers[node].share is None]
        asked: set[int] = set()
        try:
            if len(shares) < k and unsigned:
                # Fewer than k of the nodes asked to sign gave a share: ask the others.
                log.info(
                    "%s: asking nodes %s for their shares",
                    self.what,
                    ", ".join(map(str, unsigned)),
                )
                shares += await self._proven_shares(unsigned, failed, faulty)
                asked.update(unsigned)
            try:
                signature, bad = await asyncio.to_thread(
                    s.combiner.combine, statement_bytes, shares
                )
            except NotEnoughShares:
                unproven = [share.index for share in shares if not share.proven]
                to_ask = unproven + [node for node in unsigned if node not in asked]
                if not to_ask:
                    raise
                # Proofs on demand: the shares did not combine into a valid signature.  Ask
                # for the proofs, which name the node(s) whose share is wrong (and for the
                # shares not asked for yet), and combine again.
                log.info(
                    "%s: the shares did not combine; asking nodes %s for proven shares",
                    self.what,
                    ", ".join(map(str, to_ask)),
                )
                proven = await self._proven_shares(to_ask, failed, faulty)
                answered = {share.index for share in proven} | set(faulty)
                kept = [share for share in shares if share.index not in answered]
                # Proven shares first; the unproven share of a node that gave no proof may
                # still fill a gap (the combined signature is checked either way).
                shares = [*proven, *sorted(kept, key=lambda share: not share.proven)]
                signature, bad = await asyncio.to_thread(
                    s.combiner.combine, statement_bytes, shares
                )
        except NotEnoughShares as exc:
            faulty.update({node: f"bad signature share: {why}" for node, why in exc.bad.items()})
            s.log_nodes(self.what, faulty, failed)
            raise DepositFailed(
                f"only {exc.have} valid signature shares, {exc.need} needed",
                planner.merge_reasons(faulty, failed),
            ) from exc
        faulty.update({node: f"bad signature share: {why}" for node, why in bad.items()})
        try:
            await asyncio.to_thread(s.combiner.verify, statement_bytes, signature)
        except InvalidSignature as exc:
            s.log_nodes(self.what, faulty, failed)
            raise DepositFailed(
                f"the combined signature does not verify: {exc}",
                planner.merge_reasons(faulty, failed),
            ) from exc
        s.verified_receipts.add(statement_bytes, signature)

        record = await s.catalog_call(
            s.catalog.complete_deposit,
            p.owner,
            p.name,
            p.version,
            receipt_record(statement, statement_bytes, signature, key_wrap),
        )
        self.committed = True
        # The signers' FV hashes to the signed fv_hash (planner.check_deposit_answer): a later
        # retrieval of this version can skip the metadata round.
        s.fv_cache.put(FingerprintVector(tuple(answers[plan.signers[0]].fv)))
        s.log_nodes(self.what, faulty, failed)
        if faulty:
            await audit_faults(s, "deposit", p.owner, p.name, p.version, faulty)
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

    async def _proven_shares(
        self, nodes: Sequence[int], failed: dict[int, str], faulty: dict[int, str]
    ) -> list[WireShare]:
        """Each node's share with its proof (``GET .../share``), asked of all at once.  A node
        that cannot answer goes to ``failed``, one whose answer breaks the protocol to
        ``faulty``."""
        oid = self.proposal.object_id()
        clients = {node: self.s.clients[node] for node in nodes}
        proven: list[WireShare] = []
        results = await each_node(clients, lambda c: c.share(oid), self.s.node_timeout_s)
        for node, result in results.items():
            if isinstance(result, WireShare):
                proven.append(result)
            elif isinstance(result, BadNodeAnswer):
                faulty[node] = describe_failure(result)
            else:
                failed[node] = describe_failure(result)
        return proven

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
                    out[node] = describe_failure(exc)
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
                    faulty[lane.node] = describe_failure(exc)
                else:
                    failed[lane.node] = describe_failure(exc)
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
            log.warning("%s abandoned; DELETE did not reach %s", self.what, name_reasons(failed))
        try:
            await self.s.catalog_call(
                self.s.catalog.fail_deposit, p.owner, p.name, p.version, reason
            )
        except EvaultError as exc:
            log.error("%s: could not mark the version failed: %s", self.what, exc)
        log.warning("%s failed: %s", self.what, reason)


async def audit_faults(
    service: VaultService,
    action: str,
    owner: str,
    name: str,
    version: int,
    faulty: Mapping[int, str],
) -> None:
    try:
        await service.catalog_call(
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
