"""The storage node's rules (paper §2.1–§2.2; docs/spec/node-protocol.md), without HTTP.

:class:`NodeService` decides everything a node decides: whether a proposal fits this node's
configuration, clock and object id; how a document is hashed, IDA-encoded and fingerprinted as
it streams in; the order *store durably, then sign*; what the metadata, slice and listing
answers hold.  ``evault.node.app`` is the thin HTTP adapter in front of it.

Deposit pipeline (bounded memory, the event loop never does CPU work)::

    request body ─(async, coalesced to PIECE_BYTES)─┬▶ queue(QUEUE_PIECES) ▶ thread: SHA-256
                                                    └▶ queue(QUEUE_PIECES) ▶ thread:
        StreamEncoder (n blocks per segment) ▸ n slice fingerprinters ▸ own block to disk
    end of body ─▶ worker thread: FV, statement, durable commit, THEN the signature share

The document hash and the encoding run in two threads (both release the GIL in their C code),
so a node with two cores ingests at about the speed of the slower of the two.  Pieces are a few
MiB: with 64 KiB pieces the hand-offs between the event loop and the workers, not the hashing,
set the pace (measured with ``python -m evault.node.bench``).

Reads: index point reads (metadata, opening a slice) and whole slice answers up to
``INLINE_SLICE_BYTES`` run on the event loop, because the store's read connection never waits
for a commit and a page-cache read that small costs less than a hand-off to a worker thread;
larger slices are read in a worker thread, chunk by chunk, as the network takes them.

The node signs only statement bytes it built itself from what it hashed and stored; nothing the
gateway sends is ever signed as such (DESIGN §4).

Test-only faults (``Fault``): ``lie`` flips a byte of every block served, reports a wrong FV in
metadata and deposit answers and returns signature shares that do not verify; ``slow`` pauses
before every block served and before answering a deposit.  They exist to test the gateway's
defences and are refused unless ``EVAULT_ALLOW_FAULTS=1`` (see ``evault.node.main``).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

import anyio
import anyio.abc
import anyio.to_thread

from evault.config import ClusterParams, NodeConfig
from evault.errors import (
    BadProposal,
    BadRequest,
    BadRequestLength,
    DigestMismatch,
    FormatError,
    TooLarge,
)
from evault.ida import Codec, StreamEncoder, get_codec
from evault.ida.fingerprint import DocumentFingerprinter
from evault.protocol.node_api import (
    CLOCK_SKEW_S,
    MAX_LIST_LIMIT,
    PROTOCOL_VERSION,
    DepositResult,
    ObjectMeta,
    Proposal,
    ShareAnswer,
    WireShare,
    is_object_id,
)
from evault.protocol.statement import format_time, parse_time
from evault.store.base import ListPage, ObjectRecord, SliceReader, SliceStore, SliceWriter

#: The body is handed to the worker thread in pieces of about this size: large enough that a
#: thread hop costs nothing next to the hashing, small enough to bound memory.
PIECE_BYTES: Final = 4 << 20
#: Pieces queued between the network and the worker: overlap without buffering the document.
QUEUE_PIECES: Final = 2
#: Largest chunk a slice answer reads from disk at a time (in a worker thread): a whole block
#: of a default 1 MiB segment in one read, since each hand-off to the thread costs more CPU
#: than reading another 256 KiB from the page cache (node CPU -17% on 10 MiB retrievals).
READ_CHUNK_BYTES: Final = 1024 * 1024
#: Without test faults a slice answer is read in groups of whole blocks of about this size.
READ_GROUP_BYTES: Final = 4 * 1024 * 1024
#: A slice answer goes to the TLS transport in writes of at most this size.  uvloop encrypts a
#: whole write into one memory buffer before sending any of it, so a 4 MiB write costs a 4 MiB
#: zero-filled buffer and copies that miss the caches; in 256 KiB writes the node's CPU per
#: 10 MiB retrieval fell by a tenth.
SEND_BYTES: Final = 256 * 1024
#: A slice answer up to this size (leaves and blocks) is read whole on the event loop and sent
#: in one piece: a page-cache read of this size costs less than a hand-off to a worker thread.
INLINE_SLICE_BYTES: Final = 256 * 1024
#: Default pause of the ``slow`` fault (``EVAULT_FAULT_DELAY_S`` overrides it).
SLOW_FAULT_DELAY_S: Final = 2.0

_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")


class Fault(enum.Enum):
    """Test-only misbehaviour; see the module docstring."""

    LIE = "lie"
    SLOW = "slow"


class Signer(Protocol):
    """Makes this node's threshold-RSA signature share over ``message``: without its proof
    (:meth:`value`, a deposit's answer) or with it (:meth:`sign`, on the gateway's demand)."""

    def value(self, message: bytes) -> WireShare: ...

    def sign(self, message: bytes) -> WireShare: ...


@dataclass(frozen=True)
class NodeSettings:
    """What the rules need from the node's configuration."""

    index: int
    vault: str
    cluster: ClusterParams
    max_object_bytes: int
    clock_skew_s: int = CLOCK_SKEW_S

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.cluster.n:
            raise ValueError(f"index: {self.index} is not in 1..{self.cluster.n}")
        if self.max_object_bytes < 0:
            raise ValueError("max_object_bytes: must be >= 0")

    @classmethod
    def from_config(cls, config: NodeConfig) -> NodeSettings:
        return cls(
            index=config.index,
            vault=config.vault,
            cluster=config.cluster,
            max_object_bytes=config.max_object_bytes,
        )

    @property
    def slice_index(self) -> int:
        """Node i keeps slice i - 1 (the spec's glossary)."""
        return self.index - 1


def parse_sha256_header(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip().lower()
    if not _HEX64.match(text):
        raise BadRequest("Evault-Sha256 must be 64 hex digits")
    return text


def check_object_id(object_id: str) -> str:
    if not is_object_id(object_id):
        raise BadRequest("the object id in the path must be 64 lowercase hex digits")
    return object_id


class _Ingest:
    """One deposit's CPU and disk work; every method runs in a worker thread, one at a time."""

    def __init__(
        self,
        service: NodeService,
        object_id: str,
        proposal: Proposal,
        writer: SliceWriter,
        content_length: int | None,
        claimed_sha256: str | None,
    ) -> None:
        self.service = service
        self.object_id = object_id
        self.proposal = proposal
        self.writer = writer
        self.content_length = content_length
        self.claimed_sha256 = claimed_sha256
        self.sha256 = hashlib.sha256()
        self.encoder = StreamEncoder(service.codec, proposal.segment_bytes)
        self.fingerprints = DocumentFingerprinter(proposal.n)
        self.own = service.settings.slice_index

    def _segment(self, blocks: list[bytes]) -> None:
        self.fingerprints.add(blocks)
        self.writer.write(blocks[self.own])

    def hash(self, piece: bytes) -> None:
        self.sha256.update(piece)

    def encode(self, piece: bytes) -> None:
        for blocks in self.encoder.feed(piece):
            self._segment(blocks)

    def finish(self, created_at: str, sign: bool = True) -> DepositResult:
        for blocks in self.encoder.finish():
            self._segment(blocks)
        size = self.encoder.size
        if self.content_length is not None and size != self.content_length:
            raise BadRequestLength(self.content_length, size)
        digest = self.sha256.hexdigest()
        if self.claimed_sha256 is not None and digest != self.claimed_sha256:
            raise DigestMismatch(self.claimed_sha256, digest)
        fv = self.fingerprints.fv()
        statement = self.proposal.complete(size=size, sha256=digest, fv_hash=fv.fv_hash().hex())
        statement_bytes = statement.to_bytes()
        layout = self.encoder.layout()
        record = ObjectRecord(
            object_id=self.object_id,
            owner=statement.owner,
            name=statement.name,
            version=statement.version,
            statement=statement_bytes,
            fv=fv.roots,
            leaves=b"".join(self.fingerprints.slices[self.own].leaves()),
            slice_index=self.own,
            slice_bytes=layout.slice_bytes(),
            segment_count=layout.segment_count,
            block_bytes=self.service.codec.block_bytes(self.proposal.segment_bytes),
            created_at=created_at,
        )
        # Durable first (fsync, rename, directory fsync, index commit), and only then sign.
        self.writer.commit(record)
        # The share alone (one exponentiation), and only if asked for; its proof only if the
        # gateway asks for it later (share()).
        share = self.service.signer.value(statement_bytes) if sign else None
        return self.service._answer_deposit(statement_bytes, share, fv.roots)

    def abort(self) -> None:
        self.writer.abort()


def _first_error(exc: BaseException) -> BaseException:
    """The exception to report from a task group's exception group (evault errors first)."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(exc)
    for leaf in leaves:
        if not isinstance(leaf, anyio.get_cancelled_exc_class()):
            return leaf
    return leaves[0] if leaves else exc


class NodeService:
    """Every rule of the storage node; the HTTP adapter only translates."""

    def __init__(
        self,
        settings: NodeSettings,
        store: SliceStore,
        signer: Signer,
        *,
        clock: Callable[[], datetime],
        fault: Fault | None = None,
        slow_delay_s: float = SLOW_FAULT_DELAY_S,
    ) -> None:
        self.settings = settings
        self.slow_delay_s = slow_delay_s
        self.store = store
        self.signer = signer
        self.clock = clock
        self.fault = fault
        c = settings.cluster
        self.codec: Codec = get_codec(c.codec, c.m, c.n)

    # --- proposals -------------------------------------------------------------------------

    def proposal_problems(self, object_id: str, proposal: Proposal) -> list[str]:
        """Every way the proposal disagrees with this node (empty when it is acceptable)."""
        s, c = self.settings, self.settings.cluster
        problems = []
        if proposal.vault != s.vault:
            problems.append(f"vault {proposal.vault} is not this node's vault {s.vault}")
        for key in ("n", "m", "codec", "segment_bytes", "fingerprint_scheme"):
            mine, theirs = getattr(c, key), getattr(proposal, key)
            if mine != theirs:
                problems.append(f"{key} {theirs!r} is not this vault's {mine!r}")
        now = self.clock()
        try:
            # Also checks every field rule of the statement the proposal will become.
            proposal.complete(size=0, sha256="0" * 64, fv_hash="0" * 64)
            skew = abs((parse_time(proposal.deposited_at) - now).total_seconds())
        except FormatError as exc:
            problems.append(str(exc))
        else:
            if skew > s.clock_skew_s:
                problems.append(
                    f"deposited_at {proposal.deposited_at} is {skew:.0f} s from this node's clock "
                    f"{format_time(now)} (at most {s.clock_skew_s} s allowed)"
                )
        if proposal.object_id() != object_id:
            problems.append(
                f"the object id in the path is not the id of (vault, owner, name, version) = "
                f"{proposal.object_id()}"
            )
        return problems

    def check_proposal(self, object_id: str, proposal: Proposal) -> None:
        problems = self.proposal_problems(object_id, proposal)
        if problems:
            raise BadProposal("proposal refused: " + "; ".join(problems), problems=problems)

    # --- deposit ---------------------------------------------------------------------------

    async def deposit(
        self,
        object_id: str,
        proposal: Proposal,
        body: AsyncIterator[bytes],
        *,
        content_length: int | None,
        claimed_sha256: str | None,
        sign: bool = True,
    ) -> DepositResult:
        """Run a whole deposit (spec, ``PUT /v1/objects/{id}``); nothing is kept if it fails.
        ``sign=False`` (``Evault-Sign: 0``) leaves the share out of the answer."""
        check_object_id(object_id)
        self.check_proposal(object_id, proposal)
        limit = self.settings.max_object_bytes
        if content_length is not None and content_length > limit:
            raise TooLarge(f"the document ({content_length} bytes)", limit)
        writer = await anyio.to_thread.run_sync(self.store.begin, object_id)
        try:
            ingest = _Ingest(self, object_id, proposal, writer, content_length, claimed_sha256)
        except BaseException:
            writer.abort()
            raise
        try:
            await self._pump(body, ingest, content_length)
            created_at = format_time(self.clock())
            result = await anyio.to_thread.run_sync(ingest.finish, created_at, sign)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(ingest.abort)
            error = _first_error(exc)
            if error is exc:
                raise
            raise error from None
        if self.fault is Fault.SLOW:
            await anyio.sleep(self.slow_delay_s)
        return result

    async def _pump(
        self, body: AsyncIterator[bytes], ingest: _Ingest, content_length: int | None
    ) -> None:
        """Move the body to the worker threads in pieces, checking sizes as bytes arrive."""
        limit = self.settings.max_object_bytes
        to_hash, hash_queue = anyio.create_memory_object_stream[bytes](QUEUE_PIECES)
        to_encode, encode_queue = anyio.create_memory_object_stream[bytes](QUEUE_PIECES)

        async def consume(
            queue: anyio.abc.ObjectReceiveStream[bytes], work: Callable[[bytes], None]
        ) -> None:
            async with queue:
                async for piece in queue:
                    await anyio.to_thread.run_sync(work, piece)

        async def send(piece: bytes) -> None:
            await to_hash.send(piece)
            await to_encode.send(piece)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, hash_queue, ingest.hash)
            tg.start_soon(consume, encode_queue, ingest.encode)
            async with to_hash, to_encode:
                received = 0
                parts: list[bytes] = []
                buffered = 0
                async for chunk in body:
                    received += len(chunk)
                    if received > limit:
                        raise TooLarge("the document", limit)
                    if content_length is not None and received > content_length:
                        raise BadRequestLength(content_length, received)
                    parts.append(chunk)
                    buffered += len(chunk)
                    if buffered >= PIECE_BYTES:
                        await send(b"".join(parts))
                        parts, buffered = [], 0
                if parts:
                    await send(b"".join(parts))

    def _answer_deposit(
        self, statement: bytes, share: WireShare | None, fv: tuple[bytes, ...]
    ) -> DepositResult:
        if self.fault is Fault.LIE:
            if share is not None:
                share = _lie_share(share)
            fv = _lie_fv(fv)
        return DepositResult(node=self.settings.index, statement=statement, share=share, fv=fv)

    async def share(self, object_id: str) -> ShareAnswer:
        """This node's share, with its proof of correctness, of a committed object's statement
        (``GET /v1/objects/{id}/share``): what the gateway asks for when the optimistic
        combination of a deposit's shares fails.  The node signs the statement it stored
        itself, never one it is handed."""
        check_object_id(object_id)
        record = self.store.get(object_id)
        share = await anyio.to_thread.run_sync(self.signer.sign, record.statement)
        if self.fault is Fault.LIE:  # a wrong value under a proof of the right one
            share = _lie_share(share)
        return ShareAnswer(node=self.settings.index, share=share)

    # --- reads -----------------------------------------------------------------------------

    # Index point reads run on the event loop: the store answers them from its own read
    # connection in tens of microseconds (never waiting for a commit), less than a thread hop.

    async def meta(self, object_id: str) -> ObjectMeta:
        check_object_id(object_id)
        record = self.store.get(object_id)
        fv = _lie_fv(record.fv) if self.fault is Fault.LIE else record.fv
        return ObjectMeta(
            node=self.settings.index,
            statement=record.statement,
            fv=fv,
            slice_index=record.slice_index,
            slice_bytes=record.slice_bytes,
            segment_count=record.segment_count,
        )

    async def open_slice(self, object_id: str, from_segment: int) -> SliceReader:
        """The node's slice from ``from_segment`` on; ``BadRange`` if that is past its end."""
        check_object_id(object_id)
        return self.store.open_slice(object_id, from_segment)

    def small_slice_body(self, reader: SliceReader, from_segment: int) -> bytes | None:
        """The whole answer body of ``GET .../slice`` when it is at most ``INLINE_SLICE_BYTES``
        (read right here, ``reader`` closed), or None: then stream :meth:`slice_body`.
        The test-only faults always stream."""
        record = reader.record
        size = len(record.leaves) + record.slice_bytes - record.segment_offset(from_segment)
        if size > INLINE_SLICE_BYTES or self.fault is not None:
            return None
        try:
            parts = [record.leaves]
            while chunk := reader.read_chunk(INLINE_SLICE_BYTES):
                parts.append(chunk)
        finally:
            reader.close()
        return b"".join(parts)

    async def slice_body(
        self, reader: SliceReader, from_segment: int
    ) -> AsyncIterator[bytes | memoryview]:
        """The answer body of ``GET .../slice``: the leaves, then the blocks; closes ``reader``."""
        try:
            yield reader.record.leaves
            if self.fault is None:
                # Several blocks per hand-off to the worker thread: each hop costs more CPU
                # than reading another MiB from the page cache.
                sizes = _block_sizes(reader.record, from_segment)
                for group in _groups(sizes, READ_GROUP_BYTES):
                    data = await anyio.to_thread.run_sync(reader.read_chunk, group)
                    if len(data) <= SEND_BYTES:
                        yield data
                        continue
                    view = memoryview(data)
                    for start in range(0, len(data), SEND_BYTES):
                        yield view[start : start + SEND_BYTES]
                return
            for size in _block_sizes(reader.record, from_segment):
                if self.fault is Fault.SLOW:
                    await anyio.sleep(self.slow_delay_s)
                first = True
                left = size
                while left:
                    chunk = await anyio.to_thread.run_sync(
                        reader.read_chunk, min(left, READ_CHUNK_BYTES)
                    )
                    left -= len(chunk)
                    if first and self.fault is Fault.LIE and chunk:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    first = False
                    yield chunk
        finally:
            reader.close()

    async def delete(self, object_id: str) -> None:
        check_object_id(object_id)
        await anyio.to_thread.run_sync(self.store.delete, object_id)

    async def list_objects(self, after: str | None, limit: int) -> ListPage:
        if after is not None:
            check_object_id(after)
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise BadRequest(f"limit must be in 1..{MAX_LIST_LIMIT}")
        return await anyio.to_thread.run_sync(self.store.list_objects, after, limit)

    async def health(self) -> dict[str, Any]:
        def facts() -> tuple[int, int]:
            return self.store.count(), self.store.free_bytes()

        objects, free = await anyio.to_thread.run_sync(facts)
        return {
            "node": self.settings.index,
            "vault": self.settings.vault,
            "protocol": PROTOCOL_VERSION,
            "objects": objects,
            "free_bytes": free,
        }


def _block_sizes(record: ObjectRecord, from_segment: int) -> Iterator[int]:
    """Length of the node's block of each segment from ``from_segment`` on."""
    for segment in range(from_segment, record.segment_count):
        yield record.segment_offset(segment + 1) - record.segment_offset(segment)


def _groups(sizes: Iterable[int], limit: int) -> Iterator[int]:
    """Sums of consecutive ``sizes`` up to ``limit`` each (a size over it stands alone)."""
    total = 0
    for size in sizes:
        if total and total + size > limit:
            yield total
            total = 0
        total += size
    if total:
        yield total


def _lie_share(share: WireShare) -> WireShare:
    """The test-only liar's share: a wrong value, the rest (proof included) untouched."""
    return WireShare(share.index, share.value ^ 1, share.proof_c, share.proof_z)


def _lie_fv(fv: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return tuple(bytes([root[0] ^ 0xFF]) + root[1:] for root in fv)
