"""Retrieval (DESIGN §6): slices streamed from m nodes, checked as they arrive, rebuilt.

Every node is asked for its metadata; the FV whose hash the signed receipt carries is settled on
(a node holding another is named faulty) as soon as m nodes agree; the other answers are read
in the background, not cancelled, so that no pooled connection is lost.  When the gateway
already knows that FV (:class:`FVCache`: filled by the deposit and by earlier retrievals, keyed
by the vector's own hash) the metadata round is skipped; each slice answer names the hash of
its node's FV and a node naming another one is faulty.  Slices are streamed from m
nodes at once (systematic slices first, see the planner); the leaf list of each is checked
against its root in the FV as it arrives, then each block against its leaf when its segment is
rebuilt, before any of it is used.  A node that fails, lies or stays silent for ``slow_node_s``
is replaced by the next best node, resuming at the segment where it failed (``from_segment``).
Big segments are checked and decoded in a worker thread;
segment i + 1 is rebuilt while segment i goes out, and each slice stream reads at most two
blocks ahead, so memory stays a few segments.  Blocks are kept in the pieces the HTTP client
handed over, and a segment of a document of several big segments goes out as its data rows in
those pieces, never joined: with the data slices at hand (the codec's ``row_slices``) the rows
are the very blocks the nodes sent, so the gateway's own code copies no document byte.  Only a
segment that must be decoded (a data slice missing) or sent whole has its blocks joined.

The first segment is rebuilt before :meth:`VaultService.retrieve` returns, so a document that
cannot be rebuilt fails with an error rather than a truncated stream; the last segment is
withheld until the whole document's SHA-256 matches the receipt, so a wrong document is never
delivered complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from evault.catalog.records import VersionRecord
from evault.errors import (
    BadNodeAnswer,
    ConfigError,
    DocumentCorrupt,
    EvaultError,
    FingerprintError,
    FormatError,
    NodeRejected,
    NodeTimeout,
    SliceCorrupt,
)
from evault.gateway import planner
from evault.gateway.fanout import audit_faults, describe_failure, detach
from evault.ida import Layout
from evault.ida.base import cut_pieces
from evault.ida.fingerprint import FingerprintVector, SliceVerifier, leaves_from_bytes
from evault.protocol.node_api import ObjectMeta, object_id
from evault.protocol.statement import Statement
from evault.transport.nodes import NodeClient

if TYPE_CHECKING:
    from evault.gateway.service import VaultService

log = logging.getLogger("evault.gateway")

#: A slice stream whose blocks nobody takes for this long releases its connection.
READER_IDLE_S = 60.0
#: Segments up to this size are checked, decoded and hashed on the event loop, bigger ones in a
#: worker thread (one hand-off per segment), so that the loop keeps moving bytes meanwhile.  (A
#: thread hop per block cost more CPU than it freed, measured on 10 MiB retrievals.)  Only
#: where a core is free for the thread (``VaultService.decode_in_thread``): with a gateway
#: worker on every core, all on the loop measured 5-10 % more 10 MiB retrievals per second.
INLINE_DECODE_BYTES = 64 * 1024
#: Fingerprint vectors kept by :class:`FVCache` (n roots of 32 bytes each: ~0.5 MB at n = 5).
FV_CACHE_ENTRIES = 4096


class FVCache:
    """Settled fingerprint vectors by their tagged hash: a bounded LRU map, event loop only.

    The key is computed from the value (:meth:`put` hashes the FV itself), and a vector is a
    pure function of its hash, so an entry can never be stale: a later version of a document
    has another FV and so another key.  The cache only saves the metadata round of a
    retrieval; :meth:`get` re-checks the hash, and every block read is still verified against
    the vector, so correctness never rests on the cache.
    """

    def __init__(self, max_entries: int = FV_CACHE_ENTRIES) -> None:
        if not isinstance(max_entries, int) or max_entries < 0:
            raise ValueError("max_entries: must be an integer >= 0")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, FingerprintVector] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, fv: FingerprintVector) -> None:
        if not self.max_entries:
            return
        key = fv.fv_hash()
        self._entries[key] = fv
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, fv_hash: bytes) -> FingerprintVector | None:
        """The vector whose tagged hash is ``fv_hash``, or None."""
        fv = self._entries.get(fv_hash)
        if fv is None:
            return None
        if not hmac.compare_digest(fv.fv_hash(), fv_hash):  # never trust memory blindly
            del self._entries[fv_hash]
            return None
        self._entries.move_to_end(fv_hash)
        return fv


class Retrieval:
    """A document being rebuilt: iterate it (``async for chunk in retrieval``) once.

    ``faulty`` and ``failed`` fill as the stream goes (node → reason).  Close it with
    :meth:`aclose` (or ``async with``) if you stop before the end; finishing the iteration
    closes it too.  The iteration raises ``DocumentCorrupt`` instead of delivering the last
    segment if the whole document's SHA-256 is wrong, and ``NotEnoughSlices`` if too few
    nodes remain.
    """

    def __init__(self, reader: DocumentReader) -> None:
        self._reader = reader
        self.record: VersionRecord = reader.record
        self.statement: Statement = reader.statement
        self.size: int = reader.statement.size
        self.sha256: str = reader.statement.sha256
        self.faulty: dict[int, str] = reader.faulty
        self.failed: dict[int, str] = reader.failed
        self._iterator: AsyncIterator[bytes | memoryview] | None = None

    def __aiter__(self) -> AsyncIterator[bytes | memoryview]:
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


class _ReaderIdle(Exception):
    """A slice reader stopped because its blocks were not taken: reopen it, blame no one."""


#: A block as it arrived: its consecutive pieces (joined only where a codec needs it whole).
Block = list[bytes | memoryview]


class _SliceReader:
    """Streams one node's slice from ``from_segment``: its blocks, as they arrived, into a
    small queue (each is checked against its leaf where its segment is decoded)."""

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
        self.queue: asyncio.Queue[tuple[int, Block]] = asyncio.Queue(maxsize=read_ahead)
        self._oid = oid
        self._fv = fv
        self._fv_hash = fv_hash
        self._layout = layout
        self._from = from_segment
        self._idle_s = idle_s
        #: set when the reader gave up its connection because nobody took its blocks
        self.idle = False
        #: the slice's checked leaf list, set before the first block is queued
        self.verifier: SliceVerifier | None = None
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        layout, j = self._layout, self.slice_index
        count = layout.segment_count
        async with self.client.slice(self._oid, self._from) as stream:
            if stream.slice_index != j:
                raise BadNodeAnswer(self.node, "slice", f"serves slice {stream.slice_index}")
            if stream.fv_hash != self._fv_hash:
                raise BadNodeAnswer(
                    self.node, "slice", "serves a slice whose FV differs from the receipt's fv_hash"
                )
            if stream.segment_count != count:
                raise BadNodeAnswer(
                    self.node, "slice", f"has {stream.segment_count} segments, not {count}"
                )
            raw = await stream.read_exactly(stream.leaves_bytes)
            self.verifier = SliceVerifier(self._fv.roots[j], j, leaves_from_bytes(raw, count))
            for i in range(self._from, count):
                # Checked against its leaf by DocumentReader._segment, with the decode.
                block = await stream.read_pieces(layout.block_bytes(i))
                if i == count - 1:
                    # Read the answer to its end before handing the last block over, so the
                    # connection goes back to the pool now (and is never dropped by a close).
                    await stream.finish()
                if not await self._put((i, block)):
                    # The consumer went quiet (a very slow client, or a retrieval abandoned
                    # without aclose): free the pooled connection; it is reopened on demand.
                    self.idle = True
                    return

    async def _put(self, item: tuple[int, Block]) -> bool:
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

    async def next_block(self, segment: int, timeout_s: float) -> Block:
        """The verified block of ``segment``; raises the reader's error or ``NodeTimeout``."""
        if not self.queue.empty():  # already here: no waiter, no timer
            return self._checked(segment, *self.queue.get_nowait())
        getter = asyncio.ensure_future(self.queue.get())
        try:
            done, _ = await asyncio.wait(
                {getter, self.task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not getter.done():
                getter.cancel()
        if getter in done:
            return self._checked(segment, *getter.result())
        if self.task.done():
            exc = self.task.exception() if not self.task.cancelled() else None
            if exc is not None:
                raise exc
            if self.idle:
                raise _ReaderIdle
            raise BadNodeAnswer(self.node, "slice", f"stream ended before segment {segment}")
        raise NodeTimeout(self.node, "slice", f"no block within {timeout_s:g} s")

    def _checked(self, segment: int, index: int, block: Block) -> Block:
        if index != segment:  # a bug in the retrieval loop, not the node's fault
            raise RuntimeError(f"slice reader of node {self.node} is at segment {index}")
        return block

    async def close(self) -> None:
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


#: A rebuilt segment: its bytes in order, as one piece or as its data rows (see the module text).
Segment = list[bytes | memoryview]


def _verify_and_decode(
    i: int,
    blocks: dict[int, Block],
    owners: dict[int, _SliceReader],
    layout: Layout,
    hasher: Any,
    as_rows: bool,
) -> tuple[Segment | None, dict[int, SliceCorrupt]]:
    """Segment ``i``: check each block against its leaf, then decode and hash the segment,
    as the pieces of its data rows if ``as_rows`` else joined into one piece.
    (None, {slice: error}) if any block fails."""
    failures: dict[int, SliceCorrupt] = {}
    for j, block in blocks.items():
        verifier = owners[j].verifier
        if verifier is None:  # pragma: no cover - set before any block is queued
            raise RuntimeError(f"slice reader of node {owners[j].node} has no leaf list")
        try:
            verifier.verify(i, block)
        except SliceCorrupt as exc:
            failures[j] = exc
    if failures:
        return None, failures
    segment_len = layout.segment_len(i)
    row_slices = layout.codec.row_slices
    if as_rows and all(j is not None and j in blocks for j in row_slices):
        # The data rows are blocks at hand: their pieces, as they arrived, are the segment.
        segment = cut_pieces(
            [piece for j in row_slices if j is not None for piece in blocks[j]], segment_len
        )
    else:
        whole = {j: b"".join(pieces) for j, pieces in blocks.items()}
        rows = layout.codec.decode_rows(whole, segment_len)
        segment = rows if as_rows else [b"".join(rows)]
    for piece in segment:
        hasher.update(piece)
    return segment, failures


class DocumentReader:
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
        # Rows out unjoined only for a document of several segments bigger than a few blocks:
        # a one-segment document goes out as one plain answer, and small rows would cost more
        # writes than the join they save.
        self.as_rows = (
            self.layout.segment_count > 1 and statement.segment_bytes > INLINE_DECODE_BYTES
        )
        self.first: Segment | None = None
        self.what = (
            f"retrieval of version {statement.version} of {statement.name!r} "
            f"(owner {statement.owner})"
        )
        self._closed = False
        #: the next segment, being rebuilt while the previous one goes out
        self._next: asyncio.Future[Segment] | None = None
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
        """Ask every node for its metadata until m hold the receipt's FV (or all answered).

        The requests still running then are not cancelled but left to finish in the
        background (each within ``node_timeout_s``): a request cancelled mid-answer costs its
        pooled connection, so the next retrieval would pay a new TLS handshake for it.
        """
        n, m = self.statement.n, self.statement.m
        timeout_s = self.s.node_timeout_s

        async def ask(client: NodeClient) -> tuple[int, ObjectMeta | BaseException]:
            try:
                async with asyncio.timeout(timeout_s):
                    return client.index, await client.meta(self.oid)
            except (EvaultError, TimeoutError) as exc:
                return client.index, exc

        tasks = [asyncio.ensure_future(ask(c)) for c in self.s.clients.values()]
        candidates: dict[int, FingerprintVector | None] = {}
        matching = 0
        try:
            for next_done in asyncio.as_completed(tasks, timeout=timeout_s):
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
                if not task.done():
                    detach(task)  # answer read and dropped: its connection stays pooled
        try:
            settled = planner.plan_fv(candidates, t=self.s.t, expected_hash=self.fv_hash)
        except FingerprintError as exc:
            for node in candidates:
                self.faulty[node] = "holds an FV that differs from the receipt's fv_hash"
            self.log_nodes()
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
            self.faulty.setdefault(node, describe_failure(exc))
        elif isinstance(exc, NodeRejected) and exc.node_code == "not_found":
            self.failed.setdefault(node, "does not hold the object")
        else:
            self.failed.setdefault(node, describe_failure(exc))

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
            self.log_nodes()
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

    async def _segment(self, i: int) -> Segment:
        """Rebuild segment ``i`` from m verified blocks, replacing nodes that fail.

        Each block is checked against its leaf where the segment is decoded and hashed: on the
        event loop for small segments, in a worker thread for big ones (SHA-256 releases the
        GIL, so the loop keeps moving bytes meanwhile, at one hand-off per segment).  A block
        that fails its leaf gets its node replaced, and the segment is decoded only once all m
        blocks passed.
        """
        layout, hasher, m = self.layout, self.hasher, self.statement.m
        blocks: dict[int, Block] = {}
        owners: dict[int, _SliceReader] = {}
        while True:
            while len(blocks) < m:
                waiting = [r for r in self.readers.values() if r.slice_index not in blocks]
                results = await asyncio.gather(
                    *(r.next_block(i, self.s.slow_node_s) for r in waiting),
                    return_exceptions=True,
                )
                for reader, result in zip(waiting, results, strict=True):
                    if isinstance(result, list):
                        blocks[reader.slice_index] = result
                        owners[reader.slice_index] = reader
                    elif isinstance(result, _ReaderIdle):
                        log.info("%s: reopening node %d at segment %d", self.what, reader.node, i)
                        self._start_reader(reader.node, i)
                    elif isinstance(result, EvaultError):
                        await self._replace(reader, result, i)
                    else:
                        raise result

            if not self.s.decode_in_thread or layout.segment_len(i) <= INLINE_DECODE_BYTES:
                # Cheaper here than the hand-off to a worker thread.
                rebuilt, failures = _verify_and_decode(
                    i, blocks, owners, layout, hasher, self.as_rows
                )
            else:
                rebuilt, failures = await asyncio.to_thread(
                    _verify_and_decode, i, blocks, owners, layout, hasher, self.as_rows
                )
            if rebuilt is not None:
                return rebuilt
            for j, exc in failures.items():
                del blocks[j]
                await self._replace(owners.pop(j), exc, i)

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
        cached = self.s.fv_cache.get(self.fv_hash)
        if cached is not None and cached.n == self.statement.n:
            # The receipt's FV is known: no metadata round, straight to the m slice requests.
            # Each slice answer names its FV's hash; a node naming another one is faulty.
            self.fv = cached
        else:
            await self._settle_fv()
            if self.fv is not None:
                self.s.fv_cache.put(self.fv)
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
            self.log_nodes()
        self._prefetch(1)

    def _prefetch(self, i: int) -> None:
        """Start rebuilding segment ``i`` (if there is one) while the one before goes out.

        One segment ahead at most, and always in order: segment i starts only once i - 1 was
        rebuilt and hashed, so the document's hash sees the segments in order.
        """
        if i < self.layout.segment_count:
            self._next = asyncio.ensure_future(self._segment(i))

    async def _next_segment(self) -> Segment:
        task, self._next = self._next, None
        if task is None:
            raise RuntimeError("no segment is being rebuilt")
        return await task

    async def stream(self) -> AsyncIterator[bytes | memoryview]:
        count = self.layout.segment_count
        try:
            if count == 0:
                return
            first, self.first = self.first, None
            if first is None:
                raise RuntimeError("a Retrieval can be streamed only once")
            for piece in first:
                yield piece
            for i in range(1, count):
                segment = await self._next_segment()
                self._prefetch(i + 1)
                if i == count - 1:
                    # Withhold the last bytes until the whole document is known to be right.
                    self._check_digest()
                    self.log_nodes()
                for piece in segment:
                    yield piece
        finally:
            await self.close()

    def log_nodes(self) -> None:
        self.s.log_nodes(self.what, self.faulty, self.failed)
        if self.faulty:
            st = self.statement
            detach(
                audit_faults(self.s, "retrieve", st.owner, st.name, st.version, dict(self.faulty))
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._next = self._next, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        readers = list(self.readers.values())
        self.readers.clear()
        await asyncio.gather(*(r.close() for r in readers))
