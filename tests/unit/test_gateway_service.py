"""VaultService against fake nodes served in-process (the node protocol, with fault modes).

The fake nodes implement ``docs/spec/node-protocol.md`` with the real IDA and fingerprints; the
signature shares are a stand-in (a hash per signer) checked by a fake combiner, so these tests
exercise the gateway's decisions, not RSA.  ``test_gateway_service_receipts.py`` runs the real
threshold RSA.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from evault.catalog.records import PendingVersion, ReceiptRecord, RestoreResult, VersionRecord
from evault.config import ClusterParams
from evault.errors import (
    BadRequestLength,
    DepositFailed,
    DigestMismatch,
    DocumentCorrupt,
    InvalidSignature,
    NotEnoughShares,
    NotEnoughSlices,
    NotFound,
    WrongState,
)
from evault.gateway import rebuild
from evault.gateway.planner import first_signers
from evault.gateway.service import DepositOutcome, ReceiptCombiner, VaultService
from evault.ida import DEFAULT_CODEC_ID, StreamEncoder, get_codec
from evault.ida.fingerprint import (
    FINGERPRINT_SCHEME,
    DocumentFingerprinter,
    FingerprintVector,
    leaves_to_bytes,
)
from evault.protocol.node_api import (
    HEADER_FV_HASH,
    HEADER_LEAVES_BYTES,
    HEADER_PROPOSAL,
    HEADER_SEGMENT_COUNT,
    HEADER_SHA256,
    HEADER_SIGN,
    HEADER_SLICE_INDEX,
    DepositResult,
    ObjectListing,
    ObjectMeta,
    Proposal,
    ShareAnswer,
    WireShare,
    error_body,
    object_id,
)
from evault.protocol.statement import Statement
from evault.transport.nodes import NodeAddress, NodeSet, Timeouts

VAULT = "0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
SEGMENT = 1024  # small segments: multi-segment documents stay small


def cluster(n: int = 5, m: int = 3, k: int = 4) -> ClusterParams:
    return ClusterParams(
        n=n,
        m=m,
        k=k,
        codec=DEFAULT_CODEC_ID,
        segment_bytes=SEGMENT,
        fingerprint_scheme=FINGERPRINT_SCHEME,
    )


# --- fake signatures -------------------------------------------------------------------------


def fake_share_value(statement: bytes, index: int) -> int:
    return int.from_bytes(hashlib.sha256(b"share|%d|" % index + statement).digest(), "big")


def fake_signature(statement: bytes) -> bytes:
    return hashlib.sha256(b"signature|" + statement).digest()


class FakeCombiner:
    """Accepts the shares fake_share_value makes; the 'signature' is a hash of the statement."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.calls: list[tuple[int, ...]] = []

    def combine(
        self, statement: bytes, shares: Sequence[WireShare]
    ) -> tuple[bytes, Mapping[int, str]]:
        self.calls.append(tuple(s.index for s in shares))
        bad = {
            s.index: "proof of correctness fails"
            for s in shares
            if s.value != fake_share_value(statement, s.index)
        }
        if len(shares) - len(bad) < self.k:
            raise NotEnoughShares(len(shares) - len(bad), self.k, bad)
        return fake_signature(statement), bad

    def verify(self, statement: bytes, signature: bytes) -> None:
        if signature != fake_signature(statement):
            raise InvalidSignature("the receipt's signature does not verify")


# --- fake catalog ----------------------------------------------------------------------------


class FakeCatalog:
    """In memory, same states and errors as evault.catalog.Catalog for what the service uses."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.next: dict[tuple[str, str], int] = {}
        self.audits: list[tuple[str, dict[str, Any]]] = []
        self.calls: list[str] = []
        #: owners with an account (restore_version creates the missing ones)
        self.accounts: set[str] = {"alice"}

    def begin_deposit(self, owner: str, name: str) -> int:
        self.calls.append("begin")
        version = self.next.get((owner, name), 1)
        self.next[(owner, name)] = version + 1
        self.versions[(owner, name, version)] = {"state": "pending", "began_at": NOW}
        return version

    def complete_deposit(
        self, owner: str, name: str, version: int, receipt: ReceiptRecord
    ) -> VersionRecord:
        self.calls.append("complete")
        row = self.versions[(owner, name, version)]
        if row["state"] != "pending":
            raise WrongState(owner, name, version, row["state"], "pending")
        row.update(asdict(receipt), state="stored")
        return self._record(owner, name, version)

    def _record(self, owner: str, name: str, version: int) -> VersionRecord:
        row = self.versions[(owner, name, version)]
        return VersionRecord(
            owner=owner,
            name=name,
            version=version,
            state=row["state"],
            size=row["size"],
            sha256=row["sha256"],
            fv_hash=row["fv_hash"],
            codec_id=row["codec_id"],
            m=row["m"],
            n=row["n"],
            segment_bytes=row["segment_bytes"],
            statement=row["statement"],
            signature=row["signature"],
            deposited_at=row["deposited_at"],
            completed_at=NOW,
            encrypted=row.get("encrypted", False),
        )

    def fail_deposit(self, owner: str, name: str, version: int, reason: str) -> None:
        self.calls.append("fail")
        row = self.versions[(owner, name, version)]
        if row["state"] not in ("pending", "failed"):
            raise WrongState(owner, name, version, row["state"], "pending")
        row.update(state="failed", reason=reason)

    def get_version(self, owner: str, name: str, version: int | None = None) -> VersionRecord:
        stored = sorted(
            v
            for (o, n, v), row in self.versions.items()
            if (o, n) == (owner, name) and row["state"] == "stored"
        )
        if version is None and stored:
            version = stored[-1]
        if version not in stored:
            raise NotFound("version", f"no version {version} of {name!r}")
        assert version is not None
        return self._record(owner, name, version)

    def mark_deleted(self, owner: str, name: str, version: int) -> VersionRecord:
        record = self.get_version(owner, name, version)
        self.versions[(owner, name, version)]["state"] = "deleted"
        return replace(record, state="deleted")

    def pending_versions(self, older_than: datetime | timedelta) -> list[PendingVersion]:
        return [
            PendingVersion(owner=o, name=n, version=v, began_at=row["began_at"])
            for (o, n, v), row in self.versions.items()
            if row["state"] == "pending"
        ]

    def restore_version(
        self, owner: str, name: str, version: int, receipt: ReceiptRecord
    ) -> RestoreResult:
        self.calls.append("restore")
        if (owner, name, version) in self.versions:
            return RestoreResult(restored=False, account_created=False)
        row = {"state": "stored", "began_at": NOW, **asdict(receipt)}
        self.versions[(owner, name, version)] = row
        self.next[(owner, name)] = max(self.next.get((owner, name), 1), version + 1)
        created = owner not in self.accounts
        self.accounts.add(owner)
        return RestoreResult(restored=True, account_created=created)

    def audit(self, action: str, **kwargs: Any) -> None:
        self.audits.append((action, kwargs))

    def state(self, owner: str, name: str, version: int) -> str:
        return str(self.versions[(owner, name, version)]["state"])

    def version_state(self, owner: str, name: str, version: int) -> str | None:
        row = self.versions.get((owner, name, version))
        return None if row is None else str(row["state"])


# --- fake nodes ------------------------------------------------------------------------------


@dataclass
class StoredObject:
    statement: bytes
    fv: tuple[bytes, ...]
    leaves: list[bytes]
    blocks: list[bytes]


@dataclass
class Faults:
    down: bool = False
    bad_share: bool = False
    other_statement: bool = False  # signs a statement over a different FV (consistent lie)
    bad_fv: bool = False  # sends an FV that does not hash to its statement
    stall_body_after: int | None = None  # stop reading the deposit body after this many bytes
    flip_blocks_from: int | None = None  # flip a byte of every block from this segment on
    meta_fv_lie: bool = False
    slice_fail_at: int | None = None  # connection breaks before this segment's block
    slice_hang_at: int | None = None  # stops sending before this segment's block
    lose_objects: bool = False  # answers 404 for everything it holds
    share_down: bool = False  # GET .../share fails to connect
    slice_chunk_bytes: int | None = None  # sends a slice in pieces of this size, across blocks


class _Stream(httpx.AsyncByteStream):
    def __init__(self, gen: AsyncIterator[bytes]) -> None:
        self.gen = gen

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.gen:
            yield chunk


@dataclass
class FakeNode:
    index: int
    params: ClusterParams
    faults: Faults = field(default_factory=Faults)
    objects: dict[str, StoredObject] = field(default_factory=dict)
    log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    body_bytes_read: int = 0
    #: makes this node's signature share (default: the fake scheme FakeCombiner checks)
    sign: Callable[[int, bytes], WireShare] | None = None
    #: deposit answers carry the share's value alone; GET .../share gives it with its proof
    unproven_shares: bool = False

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.log.append((request.method, request.url.path, dict(request.url.params)))
        if self.faults.down:
            raise httpx.ConnectError("connection refused", request=request)
        parts = request.url.path.strip("/").split("/")
        if request.method == "GET" and parts == ["v1", "objects"]:
            return self._listing(request.url.params.get("after"), int(request.url.params["limit"]))
        if request.method == "PUT" and len(parts) == 3:
            return await self._deposit(request, parts[2])
        oid = parts[2] if len(parts) >= 3 else ""
        if request.method == "DELETE":
            self.objects.pop(oid, None)
            return httpx.Response(204)
        obj = self.objects.get(oid)
        if obj is None or self.faults.lose_objects:
            return httpx.Response(404, json=error_body("not_found", "no such object"))
        if request.method == "GET" and len(parts) == 3:
            return self._meta(obj)
        if request.method == "GET" and len(parts) == 4 and parts[3] == "slice":
            return self._slice(obj, int(request.url.params.get("from_segment", "0")))
        if request.method == "GET" and len(parts) == 4 and parts[3] == "share":
            if self.faults.share_down:
                raise httpx.ConnectError("connection refused", request=request)
            share = self._share(obj.statement)
            return httpx.Response(200, json=ShareAnswer(self.index, share).to_json_obj())
        return httpx.Response(404, json=error_body("unknown_path", "no such path"))

    def _listing(self, after: str | None, limit: int) -> httpx.Response:
        held = sorted(oid for oid in self.objects if after is None or oid > after)
        page = tuple((oid, self.objects[oid].statement) for oid in held[:limit])
        next_after = page[-1][0] if len(held) > limit else None
        return httpx.Response(200, json=ObjectListing(page, next_after).to_json_obj())

    def _share(self, statement: bytes) -> WireShare:
        """This node's share with its proof (a bad one keeps the proof of the right value)."""
        if self.sign is not None:
            share = self.sign(self.index, statement)
        else:
            share = WireShare(self.index, fake_share_value(statement, self.index), 1, 1)
        if self.faults.bad_share:
            share = replace(share, value=share.value + 1)
        return share

    async def _deposit(self, request: httpx.Request, oid: str) -> httpx.Response:
        proposal = Proposal.from_header(request.headers[HEADER_PROPOSAL])
        if proposal.object_id() != oid:
            return httpx.Response(409, json=error_body("bad_proposal", "object id"))
        if oid in self.objects:
            return httpx.Response(409, json=error_body("exists", "a committed object exists"))
        codec = get_codec(proposal.codec, proposal.m, proposal.n)
        encoder = StreamEncoder(codec, proposal.segment_bytes)
        fingerprints = DocumentFingerprinter(proposal.n)
        mine: list[bytes] = []
        hasher = hashlib.sha256()
        j = self.index - 1

        def take(blocks: list[bytes]) -> None:
            fingerprints.add(blocks)
            mine.append(blocks[j])

        async for chunk in request.stream:  # type: ignore[union-attr]
            self.body_bytes_read += len(chunk)
            if (
                self.faults.stall_body_after is not None
                and self.body_bytes_read > self.faults.stall_body_after
            ):
                await asyncio.Event().wait()  # never set: only cancellation ends this
            hasher.update(chunk)
            for blocks in encoder.feed(chunk):
                take(blocks)
        for blocks in encoder.finish():
            take(blocks)
        declared = request.headers.get("Content-Length")
        if declared is not None and int(declared) != encoder.size:
            return httpx.Response(422, json=error_body("bad_request_length", "length"))
        digest = hasher.hexdigest()
        claimed = request.headers.get(HEADER_SHA256)
        if claimed is not None and claimed != digest:
            return httpx.Response(409, json=error_body("digest_mismatch", "digest"))
        fv = fingerprints.fv()
        roots = fv.roots
        if self.faults.other_statement:
            roots = (bytes(32), *roots[1:])
            fv = FingerprintVector(roots)
        statement = proposal.complete(
            size=encoder.size, sha256=digest, fv_hash=fv.fv_hash().hex()
        ).to_bytes()
        sent_fv = roots if not self.faults.bad_fv else (bytes(32), *roots[1:])
        leaves = fingerprints.slices[j].leaves()
        self.objects[oid] = StoredObject(statement, tuple(roots), leaves, mine)
        share: WireShare | None = self._share(statement)
        if self.unproven_shares and share is not None:  # as real nodes answer: proof on demand
            share = WireShare(share.index, share.value)
        if request.headers.get(HEADER_SIGN, "1") == "0":
            share = None  # asked only to store
        answer = DepositResult(self.index, statement, share, sent_fv)
        return httpx.Response(201, json=answer.to_json_obj())

    def _meta(self, obj: StoredObject) -> httpx.Response:
        fv = obj.fv if not self.faults.meta_fv_lie else (bytes(32), *obj.fv[1:])
        meta = ObjectMeta(
            node=self.index,
            statement=obj.statement,
            fv=fv,
            slice_index=self.index - 1,
            slice_bytes=sum(len(b) for b in obj.blocks),
            segment_count=len(obj.blocks),
        )
        return httpx.Response(200, json=meta.to_json_obj())

    def _slice(self, obj: StoredObject, start: int) -> httpx.Response:
        statement = Statement.from_bytes(obj.statement)
        f = self.faults

        async def body() -> AsyncIterator[bytes]:
            yield leaves_to_bytes(obj.leaves)
            for i in range(start, len(obj.blocks)):
                if f.slice_fail_at is not None and i >= f.slice_fail_at:
                    raise httpx.ReadError("connection reset by peer")
                if f.slice_hang_at is not None and i >= f.slice_hang_at:
                    await asyncio.Event().wait()
                block = obj.blocks[i]
                if f.flip_blocks_from is not None and i >= f.flip_blocks_from:
                    block = bytes([block[0] ^ 0x01]) + block[1:]
                yield block

        async def rechunked(size: int) -> AsyncIterator[bytes]:
            held = b""
            async for data in body():
                held += data
                while len(held) >= size:
                    yield held[:size]
                    held = held[size:]
            if held:
                yield held

        size = f.slice_chunk_bytes
        headers = {
            HEADER_SLICE_INDEX: str(self.index - 1),
            HEADER_LEAVES_BYTES: str(32 * len(obj.blocks)),
            HEADER_FV_HASH: statement.fv_hash,
            HEADER_SEGMENT_COUNT: str(len(obj.blocks)),
        }
        stream = _Stream(body() if size is None else rechunked(size))
        return httpx.Response(200, headers=headers, stream=stream)


class FakeCluster(httpx.AsyncBaseTransport):
    """Routes ``http://node-<i>.test`` to fake node i, streaming request bodies to it."""

    def __init__(self, nodes: Mapping[int, FakeNode]) -> None:
        self.nodes = nodes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = int(request.url.host.split(".")[0].split("-")[1])
        return await self.nodes[index].handle(request)


class Harness:
    def __init__(
        self, params: ClusterParams, combiner: ReceiptCombiner | None = None, **service_kwargs: Any
    ) -> None:
        self.params = params
        self.nodes = {i: FakeNode(i, params) for i in range(1, params.n + 1)}
        self.catalog = FakeCatalog()
        self.combiner: Any = combiner or FakeCombiner(params.k)
        self.service_kwargs = service_kwargs

    def service(self) -> VaultService:
        node_set = NodeSet(
            [NodeAddress(i, f"http://node-{i}.test") for i in self.nodes],
            transport=FakeCluster(self.nodes),
            timeouts=Timeouts(connect_s=5, read_s=5, write_s=5, pool_s=5),
        )
        kwargs: dict[str, Any] = {"node_timeout_s": 5.0, **self.service_kwargs}
        return VaultService.from_parts(
            vault=VAULT,
            cluster=self.params,
            nodes=node_set,
            catalog=self.catalog,
            combiner=self.combiner,
            clock=lambda: NOW,
            **kwargs,
        )

    def run(self, coro_fn: Any) -> Any:
        async def main() -> Any:
            service = self.service()
            try:
                return await coro_fn(service)
            finally:
                await service.aclose()

        return asyncio.run(main())

    def deposit(self, data: bytes, name: str = "doc.bin", **kwargs: Any) -> DepositOutcome:
        async def go(service: VaultService) -> DepositOutcome:
            return await service.deposit("alice", name, chunks(data), **kwargs)

        result: DepositOutcome = self.run(go)
        return result

    def retrieve(self, name: str = "doc.bin", version: int | None = None) -> tuple[bytes, Any]:
        pieces, retrieval = self.retrieve_pieces(name, version)
        return b"".join(pieces), retrieval

    def retrieve_pieces(
        self, name: str = "doc.bin", version: int | None = None
    ) -> tuple[list[bytes | memoryview], Any]:
        async def go(service: VaultService) -> tuple[list[bytes | memoryview], Any]:
            retrieval = await service.retrieve("alice", name, version)
            return [chunk async for chunk in retrieval], retrieval

        result: tuple[list[bytes | memoryview], Any] = self.run(go)
        return result

    def slice_requests(self, node: int) -> list[dict[str, str]]:
        return [params for method, path, params in self.nodes[node].log if path.endswith("/slice")]


async def chunks(data: bytes, size: int = 700) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def document(size: int) -> bytes:
    return os.urandom(size)


# --- deposits --------------------------------------------------------------------------------


def test_deposit_all_nodes_up_gives_a_committed_receipt() -> None:
    h = Harness(cluster())
    data = document(5000)
    outcome = h.deposit(data, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    statement = Statement.from_bytes(outcome.statement)
    assert outcome.version == 1 and outcome.size == 5000
    assert outcome.sha256 == hashlib.sha256(data).hexdigest() == statement.sha256
    assert (statement.vault, statement.owner, statement.name) == (VAULT, "alice", "doc.bin")
    assert statement.deposited_at == "2026-11-25T12:00:00Z"
    assert outcome.signature == fake_signature(outcome.statement)
    assert outcome.faulty == {} and outcome.failed == {}
    assert h.catalog.state("alice", "doc.bin", 1) == "stored"
    assert h.catalog.calls == ["begin", "complete"]
    assert outcome.record.statement == outcome.statement
    assert all(len(node.objects) == 1 for node in h.nodes.values())
    # k = 4 nodes were asked to sign and the combiner got exactly their shares; the fifth
    # stored its slice without signing, and nobody was asked for a share afterwards
    assert h.combiner.calls == [tuple(signers_of())]
    assert not any(path.endswith("/share") for node in h.nodes.values() for _, path, _ in node.log)


def test_deposit_with_one_node_down_still_gets_a_receipt() -> None:
    h = Harness(cluster())
    h.nodes[2].faults.down = True
    outcome = h.deposit(document(3000))
    assert set(outcome.failed) == {2} and "connect" in outcome.failed[2]
    assert outcome.faulty == {}
    assert h.catalog.state("alice", "doc.bin", 1) == "stored"


def test_bad_share_is_excluded_and_named(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(cluster())
    h.nodes[4].faults.bad_share = True
    with caplog.at_level(logging.WARNING, logger="evault.gateway"):
        outcome = h.deposit(document(2000))
    assert set(outcome.faulty) == {4} and "signature share" in outcome.faulty[4]
    assert "node 4 is faulty" in caplog.text
    assert h.catalog.audits and h.catalog.audits[0][0] == "faulty_nodes"


def test_node_signing_another_statement_is_named() -> None:
    h = Harness(cluster())
    h.nodes[5].faults.other_statement = True
    outcome = h.deposit(document(4000))
    assert set(outcome.faulty) == {5} and "different statement" in outcome.faulty[5]
    assert h.combiner.calls == [(1, 2, 3, 4)]


def test_node_with_fv_not_matching_its_statement_is_named() -> None:
    h = Harness(cluster())
    h.nodes[1].faults.bad_fv = True
    outcome = h.deposit(document(100))
    assert set(outcome.faulty) == {1} and "fv_hash" in outcome.faulty[1]


def test_too_few_nodes_is_a_clear_error_and_nothing_is_listed() -> None:
    h = Harness(cluster())
    h.nodes[1].faults.down = True
    h.nodes[3].faults.bad_share = True
    with pytest.raises(DepositFailed) as info:
        h.deposit(document(1500))
    assert set(info.value.failed) == {1, 3}
    assert "node 1" in str(info.value) and "node 3" in str(info.value)
    assert h.catalog.state("alice", "doc.bin", 1) == "failed"
    with pytest.raises(NotFound):
        h.catalog.get_version("alice", "doc.bin")
    for i in (2, 4, 5):  # every node that might hold the object was told to delete it
        assert ("DELETE", f"/v1/objects/{next(iter(h.nodes[2].log))[1].split('/')[3]}", {}) in [
            entry for entry in h.nodes[i].log if entry[0] == "DELETE"
        ]
        assert h.nodes[i].objects == {}


def test_two_nodes_down_fails_fast_without_waiting_for_the_body() -> None:
    h = Harness(cluster())
    h.nodes[1].faults.down = True
    h.nodes[2].faults.down = True
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(1000):
            pulled += 1
            yield bytes(1000)

    async def go(service: VaultService) -> None:
        await service.deposit("alice", "doc.bin", body())

    with pytest.raises(DepositFailed, match="only 3 node"):
        h.run(go)
    assert pulled < 20
    assert h.catalog.state("alice", "doc.bin", 1) == "failed"


def test_client_digest_mismatch_is_the_clients_fault() -> None:
    h = Harness(cluster())
    with pytest.raises(DigestMismatch):
        h.deposit(document(800), sha256="00" * 32)
    assert h.catalog.state("alice", "doc.bin", 1) == "failed"
    assert all(node.objects == {} for node in h.nodes.values())


def test_body_shorter_than_declared() -> None:
    h = Harness(cluster())
    with pytest.raises(BadRequestLength):
        h.deposit(document(800), size=801)
    assert h.catalog.state("alice", "doc.bin", 1) == "failed"


def test_body_longer_than_declared_stops_early() -> None:
    h = Harness(cluster())
    with pytest.raises(BadRequestLength):
        h.deposit(document(5000), size=1000)
    assert h.catalog.state("alice", "doc.bin", 1) == "failed"


def test_client_body_error_propagates_and_cleans_up() -> None:
    h = Harness(cluster())

    class ClientGone(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield bytes(3000)
        raise ClientGone

    async def go(service: VaultService) -> None:
        await service.deposit("alice", "doc.bin", body())

    with pytest.raises(ClientGone):
        h.run(go)
    assert h.catalog.state("alice", "doc.bin", 1) == "failed"
    assert all(any(e[0] == "DELETE" for e in node.log) for node in h.nodes.values())


def test_cancelled_deposit_still_cleans_up() -> None:
    h = Harness(cluster())
    started = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield bytes(3000)
        started.set()
        await asyncio.Event().wait()
        yield b""

    async def go(service: VaultService) -> None:
        task = asyncio.ensure_future(service.deposit("alice", "doc.bin", body()))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    h.run(go)
    assert h.catalog.state("alice", "doc.bin", 1) == "failed"
    assert all(any(e[0] == "DELETE" for e in node.log) for node in h.nodes.values())


def test_stalled_node_is_dropped_with_bounded_buffering() -> None:
    h = Harness(cluster(), stall_timeout_s=0.2, queue_chunks=4)
    h.nodes[3].faults.stall_body_after = 2000
    pulled_bytes = 0
    data = document(200_000)

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled_bytes
        for start in range(0, len(data), 1000):
            pulled_bytes += 1000
            yield data[start : start + 1000]

    pulled_when_dropped: list[int] = []

    class AtDrop(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "dropped" in record.getMessage():
                pulled_when_dropped.append(pulled_bytes)

    async def go(service: VaultService) -> DepositOutcome:
        return await service.deposit("alice", "doc.bin", body())

    handler = AtDrop()
    logging.getLogger("evault.gateway").addHandler(handler)
    try:
        outcome = h.run(go)
    finally:
        logging.getLogger("evault.gateway").removeHandler(handler)
    assert set(outcome.failed) == {3} and "stalled" in outcome.failed[3]
    # While node 3 stalled, the pump pulled no more than its queue (4 chunks) past what node 3
    # had read: the other nodes waited, memory stayed bounded.
    assert pulled_when_dropped and pulled_when_dropped[0] <= 2000 + 1000 * (4 + 2)
    assert Statement.from_bytes(outcome.statement).size == len(data)


def test_catalog_refusing_the_commit_gives_no_receipt() -> None:
    h = Harness(cluster())

    original = h.catalog.complete_deposit

    def racing_cleanup(
        owner: str, name: str, version: int, receipt: ReceiptRecord
    ) -> VersionRecord:
        h.catalog.versions[(owner, name, version)]["state"] = "failed"
        return original(owner, name, version, receipt)

    h.catalog.complete_deposit = racing_cleanup  # type: ignore[method-assign]
    with pytest.raises(WrongState):
        h.deposit(document(1000))
    assert all(node.objects == {} for node in h.nodes.values())


def test_objects_the_catalog_forgot_are_not_deleted() -> None:
    h = Harness(cluster())
    h.deposit(document(100))
    h.catalog = FakeCatalog()  # restored from a backup taken before that deposit
    with pytest.raises(DepositFailed, match="exists"):
        h.deposit(document(100))
    assert all(len(node.objects) == 1 for node in h.nodes.values())
    assert h.catalog.state("alice", "doc.bin", 1) == "failed"


def test_paper_setting_3_2_3() -> None:
    h = Harness(cluster(3, 2, 3))
    data = document(10_000)
    outcome = h.deposit(data)
    assert h.combiner.calls == [(1, 2, 3)]
    h.nodes[3].faults.down = True
    got, retrieval = h.retrieve()
    assert got == data and retrieval.failed == {} and outcome.faulty == {}


# --- retrievals ------------------------------------------------------------------------------


def test_retrieve_reads_the_systematic_slices() -> None:
    h = Harness(cluster())
    data = document(10 * SEGMENT + 17)
    h.deposit(data)
    got, retrieval = h.retrieve()
    assert got == data
    assert retrieval.faulty == {} and retrieval.failed == {}
    assert retrieval.size == len(data)
    for node in (1, 2, 3):
        assert h.slice_requests(node) == [{}]
    for node in (4, 5):
        assert h.slice_requests(node) == []


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT])
@pytest.mark.parametrize("segments", ["small", "big"])
def test_round_trip_sizes(size: int, segments: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if segments == "big":  # checked in a worker thread, sent as rows
        monkeypatch.setattr("evault.gateway.rebuild.INLINE_DECODE_BYTES", 0)
    h = Harness(cluster())
    data = document(size)
    outcome = h.deposit(data)
    assert outcome.size == size
    got, _ = h.retrieve()
    assert got == data


def test_big_segments_stay_on_the_loop_when_no_core_is_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # decode_in_thread=False (a gateway worker on every core): big segments are checked,
    # decoded and hashed on the event loop, still sent as rows, and a liar is still caught.
    monkeypatch.setattr("evault.gateway.rebuild.INLINE_DECODE_BYTES", 0)
    hops: list[object] = []

    async def no_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if fn is rebuild._verify_and_decode:
            hops.append(fn)
        return fn(*args, **kwargs)

    monkeypatch.setattr("evault.gateway.rebuild.asyncio.to_thread", no_thread)
    for in_thread in (True, False):
        hops.clear()
        h = Harness(cluster(), decode_in_thread=in_thread)
        data = document(6 * SEGMENT + 5)
        h.deposit(data)
        h.nodes[2].faults.flip_blocks_from = 3
        pieces, retrieval = h.retrieve_pieces()
        assert b"".join(pieces) == data and set(retrieval.faulty) == {2}
        assert len(pieces) > 7  # rows, not joined segments
        assert (len(hops) > 0) is in_thread


@pytest.mark.parametrize("checked_in", ["event loop", "worker thread"])
def test_node_flipping_bytes_is_named_and_bytes_are_right(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, checked_in: str
) -> None:
    if checked_in == "worker thread":  # big segments: blocks checked where they are decoded
        monkeypatch.setattr("evault.gateway.rebuild.INLINE_DECODE_BYTES", 0)
    h = Harness(cluster())
    data = document(6 * SEGMENT)
    h.deposit(data)
    h.nodes[2].faults.flip_blocks_from = 3
    with caplog.at_level(logging.WARNING, logger="evault.gateway"):
        got, retrieval = h.retrieve()
    assert got == data
    assert set(retrieval.faulty) == {2} and "fingerprint" in retrieval.faulty[2]
    assert "node 2" in caplog.text
    # the replacement resumed at the segment where the liar was caught
    assert h.slice_requests(4) == [{"from_segment": "3"}]


@pytest.mark.parametrize("down", [(), (2,), (1, 3)])
def test_big_segments_go_out_as_their_data_rows(
    monkeypatch: pytest.MonkeyPatch, down: tuple[int, ...]
) -> None:
    # Several segments above INLINE_DECODE_BYTES: each goes out as its m data rows, padding
    # cut through a view, nothing joined; a one-segment document goes out whole.
    monkeypatch.setattr("evault.gateway.rebuild.INLINE_DECODE_BYTES", 0)
    h = Harness(cluster())  # m = 3: a 1024-byte segment has rows of 342 bytes
    data = document(4 * SEGMENT + 5)
    h.deposit(data)
    h.deposit(data[:SEGMENT], name="one-segment.bin")
    for node in down:
        h.nodes[node].faults.down = True
    pieces, retrieval = h.retrieve_pieces()
    assert b"".join(pieces) == data and set(retrieval.failed) == set(down)
    assert [len(p) for p in pieces] == [342, 342, 340] * 4 + [2, 2, 1]
    assert isinstance(pieces[2], memoryview) and isinstance(pieces[0], bytes)
    whole, _ = h.retrieve_pieces("one-segment.bin")
    assert whole == [data[:SEGMENT]]


@pytest.mark.parametrize("chunk", [1, 100, 341, 342, 343, 1000])
def test_rows_go_out_in_the_pieces_the_network_cut(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    # The slices arrive in pieces that straddle blocks; each row goes out as its pieces (no
    # join), cut at the row's end and at the segment's padding, and the bytes are right.
    monkeypatch.setattr("evault.gateway.rebuild.INLINE_DECODE_BYTES", 0)
    h = Harness(cluster())
    data = document(4 * SEGMENT + 5)
    h.deposit(data)
    for node in h.nodes.values():
        node.faults.slice_chunk_bytes = chunk
    pieces, retrieval = h.retrieve_pieces()
    assert b"".join(pieces) == data and retrieval.faulty == {}
    assert all(0 < len(piece) <= max(chunk, 342) for piece in pieces)
    if chunk < 342:
        assert len(pieces) > 3 * 4 + 3  # more pieces than rows: nothing was joined


def test_two_nodes_down_still_right_bytes() -> None:
    h = Harness(cluster())
    data = document(4 * SEGMENT + 5)
    h.deposit(data)
    h.nodes[1].faults.down = True
    h.nodes[3].faults.down = True
    got, retrieval = h.retrieve()
    assert got == data
    assert set(retrieval.failed) == {1, 3}


def test_node_lying_about_its_fv_is_named() -> None:
    h = Harness(cluster())
    data = document(2 * SEGMENT)
    h.deposit(data)
    h.nodes[1].faults.meta_fv_lie = True
    got, retrieval = h.retrieve()
    assert got == data
    assert "differs from the receipt" in retrieval.faulty[1]
    assert h.slice_requests(1) == []


def test_too_many_faults_is_not_enough_slices_and_no_bytes() -> None:
    h = Harness(cluster())
    data = document(3 * SEGMENT)
    h.deposit(data)
    h.nodes[1].faults.down = True
    h.nodes[2].faults.flip_blocks_from = 0
    h.nodes[5].faults.lose_objects = True

    async def go(service: VaultService) -> None:
        await service.retrieve("alice", "doc.bin")

    with pytest.raises(NotEnoughSlices) as info:
        h.run(go)
    message = str(info.value)
    for node in ("node 1", "node 2", "node 5"):
        assert node in message
    assert "does not hold the object" in message


def test_liars_mid_document_never_deliver_the_whole_document() -> None:
    h = Harness(cluster())
    data = document(8 * SEGMENT)
    h.deposit(data)
    for node in (1, 2, 3):
        h.nodes[node].faults.flip_blocks_from = 5
    received = bytearray()

    async def go(service: VaultService) -> None:
        retrieval = await service.retrieve("alice", "doc.bin")
        async for chunk in retrieval:
            received.extend(chunk)

    with pytest.raises(NotEnoughSlices):
        h.run(go)
    assert len(received) < len(data)
    assert data.startswith(bytes(received))  # what was sent is right, and it is not all


def test_mid_stream_failure_resumes_on_a_replacement() -> None:
    h = Harness(cluster())
    data = document(7 * SEGMENT + 100)
    h.deposit(data)
    h.nodes[3].faults.slice_fail_at = 4
    got, retrieval = h.retrieve()
    assert got == data
    assert set(retrieval.failed) == {3} and retrieval.faulty == {}
    assert h.slice_requests(4) == [{"from_segment": "4"}]


def test_slow_node_is_replaced() -> None:
    h = Harness(cluster(), slow_node_s=0.2)
    data = document(5 * SEGMENT)
    h.deposit(data)
    h.nodes[1].faults.slice_hang_at = 2
    got, retrieval = h.retrieve()
    assert got == data
    assert "no block within" in retrieval.failed[1]
    assert h.slice_requests(4) == [{"from_segment": "2"}]


def test_wrong_document_digest_is_never_delivered_whole() -> None:
    h = Harness(cluster())
    data = document(4 * SEGMENT)
    outcome = h.deposit(data)
    # Receipt, catalog and every node agree on a statement whose SHA-256 is not the data's:
    # the FV checks pass, only the final digest check can catch it.
    forged = replace(Statement.from_bytes(outcome.statement), sha256="ab" * 32).to_bytes()
    row = h.catalog.versions[("alice", "doc.bin", 1)]
    row.update(statement=forged, signature=fake_signature(forged))
    for node in h.nodes.values():
        for obj in node.objects.values():
            obj.statement = forged
    received = bytearray()

    async def go(service: VaultService) -> None:
        retrieval = await service.retrieve("alice", "doc.bin")
        async for chunk in retrieval:
            received.extend(chunk)

    with pytest.raises(DocumentCorrupt):
        h.run(go)
    assert len(received) == 3 * SEGMENT and data.startswith(bytes(received))


def test_catalog_receipt_that_does_not_verify_is_refused() -> None:
    h = Harness(cluster())
    h.deposit(document(100))
    h.catalog.versions[("alice", "doc.bin", 1)]["signature"] = b"forged"
    with pytest.raises(InvalidSignature):
        h.retrieve()


def test_idle_readers_give_back_their_connections_and_resume() -> None:
    h = Harness(cluster(), reader_idle_s=0.05)
    data = document(8 * SEGMENT)
    h.deposit(data)

    async def go(service: VaultService) -> tuple[bytes, Any]:
        retrieval = await service.retrieve("alice", "doc.bin")
        iterator = aiter(retrieval)
        first = await anext(iterator)
        readers = list(retrieval._reader.readers.values())
        await asyncio.wait([r.task for r in readers])  # each gave up, its queue full
        assert all(r.idle for r in readers)
        rest = b"".join([chunk async for chunk in iterator])
        return first + rest, retrieval

    got, retrieval = h.run(go)
    assert got == data
    assert retrieval.faulty == {} and retrieval.failed == {}
    # reopened where the consumer stopped taking blocks, on the same nodes
    assert h.slice_requests(1)[0] == {} and len(h.slice_requests(1)) >= 2
    assert h.slice_requests(4) == [] and h.slice_requests(5) == []


def test_abandoned_retrieval_closes_its_streams() -> None:
    h = Harness(cluster())
    h.deposit(document(6 * SEGMENT))

    async def go(service: VaultService) -> list[bool]:
        retrieval = await service.retrieve("alice", "doc.bin")
        readers = list(retrieval._reader.readers.values())
        # Regression: readers blocked on a full queue once ignored cancellation (wait_for).
        async with asyncio.timeout(5):
            async with retrieval:
                iterator = aiter(retrieval)
                await anext(iterator)
        return [reader.task.done() for reader in readers]

    assert h.run(go) == [True, True, True]


# --- deletion and clean-up ---------------------------------------------------------------------


def test_delete_marks_the_catalog_then_deletes_everywhere() -> None:
    h = Harness(cluster())
    h.deposit(document(100))
    h.nodes[5].faults.down = True

    async def go(service: VaultService) -> Any:
        return await service.delete("alice", "doc.bin", 1)

    outcome = h.run(go)
    assert outcome.record.state == "deleted"
    assert set(outcome.failed) == {5}
    assert h.catalog.state("alice", "doc.bin", 1) == "deleted"
    assert all(h.nodes[i].objects == {} for i in (1, 2, 3, 4))
    assert len(h.nodes[5].objects) == 1


def test_cleanup_pending_deletes_and_fails_leftovers() -> None:
    h = Harness(cluster())
    version = h.catalog.begin_deposit("alice", "crashed.bin")

    async def go(service: VaultService) -> Any:
        return await service.cleanup_pending()

    outcomes = h.run(go)
    assert [o.pending.version for o in outcomes] == [version]
    assert h.catalog.state("alice", "crashed.bin", version) == "failed"
    oid = Proposal(
        VAULT, "alice", "crashed.bin", version, 5, 3, "x", 1, "x", False, "x"
    ).object_id()
    for node in h.nodes.values():
        assert ("DELETE", f"/v1/objects/{oid}", {}) in node.log


def test_sweep_deletes_only_slices_of_deleted_and_failed_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("evault.gateway.service.SWEEP_PAGE_OBJECTS", 2)  # several pages
    h = Harness(cluster())
    for name in ("keep.bin", "gone.bin", "failed.bin", "forgotten.bin", "pending.bin"):
        h.deposit(document(2 * SEGMENT + 3), name=name)
    h.nodes[2].faults.down = True

    async def delete(service: VaultService) -> Any:
        return await service.delete("alice", "gone.bin", 1)

    assert set(h.run(delete).failed) == {2}  # node 2 kept its slice of gone.bin
    h.nodes[2].faults.down = False
    h.catalog.versions[("alice", "failed.bin", 1)]["state"] = "failed"  # its clean-up missed
    h.catalog.versions[("alice", "pending.bin", 1)]["state"] = "pending"
    del h.catalog.versions[("alice", "forgotten.bin", 1)]  # unknown to the catalog: kept
    oid = {name: object_id(VAULT, "alice", name, 1) for name in ("gone.bin", "failed.bin")}

    async def sweep(service: VaultService) -> Any:
        return await service.sweep()

    outcome = h.run(sweep)
    assert outcome.failed == {} and outcome.seen == 5 * 4 + 1
    assert outcome.unknown == 5  # forgotten.bin, on every node
    assert {node: set(oids) for node, oids in outcome.swept.items()} == {
        node: {oid["failed.bin"]} | ({oid["gone.bin"]} if node == 2 else set())
        for node in range(1, 6)
    }
    for node in h.nodes.values():
        held = set(node.objects)
        assert oid["gone.bin"] not in held and oid["failed.bin"] not in held
        assert len(held) == 3  # keep, forgotten, pending
    got, _ = h.retrieve("keep.bin")
    assert len(got) == 2 * SEGMENT + 3

    h.nodes[4].faults.down = True
    again = h.run(sweep)
    assert again.swept == {} and set(again.failed) == {4}


def test_a_node_listing_without_end_is_named_not_swept_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("evault.gateway.service.SWEEP_PAGE_OBJECTS", 1)
    monkeypatch.setattr("evault.gateway.service.SWEEP_MAX_OBJECTS", 2)
    h = Harness(cluster())
    for name in ("a.bin", "b.bin", "c.bin"):
        h.deposit(document(10), name=name)

    async def sweep(service: VaultService) -> Any:
        return await service.sweep()

    outcome = h.run(sweep)
    assert set(outcome.failed) == set(h.nodes) and outcome.swept == {}
    assert all("more than 2 objects" in why for why in outcome.failed.values())


def test_sweep_leaves_objects_whose_statement_does_not_fit() -> None:
    h = Harness(cluster())
    h.deposit(document(100), name="doc.bin")
    h.catalog.versions[("alice", "doc.bin", 1)]["state"] = "deleted"
    real = object_id(VAULT, "alice", "doc.bin", 1)
    impostor = "f" * 64  # holds doc.bin's statement under another object id
    h.nodes[1].objects[impostor] = h.nodes[1].objects[real]

    async def sweep(service: VaultService) -> Any:
        return await service.sweep()

    outcome = h.run(sweep)
    assert all(oids == [real] for oids in outcome.swept.values()) and len(outcome.swept) == 5
    assert list(h.nodes[1].objects) == [impostor]


def test_health_reports_each_node() -> None:
    h = Harness(cluster(3, 2, 3))
    h.nodes[2].faults.down = True

    async def health_handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"node": 1, "vault": VAULT, "protocol": 1, "objects": 0, "free_bytes": 1}
        )

    async def go(service: VaultService) -> dict[int, str]:
        return await service.health()

    for i in (1, 3):
        h.nodes[i].handle = health_handler  # type: ignore[method-assign]
    result = h.run(go)
    assert result[1] == "ok"
    assert "connect" in result[2]
    assert "answers as node 1" in result[3]


# --- with the real catalog (SQLite) ------------------------------------------------------------


def test_with_the_real_sqlite_catalog(tmp_path: Path) -> None:
    from argon2 import PasswordHasher

    from evault.catalog import Catalog

    catalog = Catalog(
        f"sqlite:///{tmp_path / 'catalog.sqlite'}",
        password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
    )
    try:
        catalog.migrate()
        catalog.create_user("alice", "correct horse battery", "Alice", "")
        h = Harness(cluster())
        h.catalog = catalog  # type: ignore[assignment]
        data = document(3 * SEGMENT + 1)
        outcome = h.deposit(data)
        assert catalog.get_version("alice", "doc.bin").statement == outcome.statement
        got, _ = h.retrieve()
        assert got == data
        # a failed deposit is never listed
        h.nodes[1].faults.down = True
        h.nodes[2].faults.down = True
        with pytest.raises(DepositFailed):
            h.deposit(document(10), name="never.bin")
        assert [d.name for d in catalog.list_documents("alice")] == ["doc.bin"]

        async def delete(service: VaultService) -> Any:
            return await service.delete("alice", "doc.bin", 1)

        h.nodes[1].faults.down = False
        h.nodes[2].faults.down = False
        h.run(delete)
        assert catalog.list_documents("alice") == []
    finally:
        catalog.close()


def test_nothing_is_undone_once_the_receipt_is_committed() -> None:
    h = Harness(cluster())
    h.nodes[3].faults.bad_share = True  # so that an audit row is written after the commit

    def broken_audit(action: str, **kwargs: Any) -> None:
        raise RuntimeError("audit table is gone")

    h.catalog.audit = broken_audit  # type: ignore[method-assign]
    outcome = h.deposit(document(500))
    assert h.catalog.state("alice", "doc.bin", 1) == "stored"
    assert set(outcome.faulty) == {3}
    assert all(len(node.objects) == 1 for node in h.nodes.values())


def signers_of(name: str = "doc.bin", version: int = 1, n: int = 5, k: int = 4) -> list[int]:
    """The nodes the gateway asks to sign this deposit (planner.first_signers), ascending."""
    return sorted(first_signers(object_id(VAULT, "alice", name, version), range(1, n + 1), k))


def share_requests(h: Harness) -> list[int]:
    return sorted(
        node.index
        for node in h.nodes.values()
        for method, path, _ in node.log
        if method == "GET" and path.endswith("/share")
    )


def test_a_signer_down_gets_the_share_of_a_node_that_only_stored() -> None:
    h = Harness(cluster())
    signers = signers_of()
    (storer,) = set(range(1, 6)) - set(signers)
    down = signers[1]  # one of the k = 4 nodes asked to sign
    h.nodes[down].faults.down = True
    outcome = h.deposit(document(2000))
    assert outcome.signature == fake_signature(outcome.statement)
    assert set(outcome.failed) == {down} and outcome.faulty == {}
    assert share_requests(h) == [storer]  # it stored without signing; now asked for its share
    assert h.combiner.calls == [tuple(sorted(set(signers) - {down} | {storer}))]


def test_nodes_that_only_stored_are_asked_when_a_share_is_bad() -> None:
    h = Harness(cluster())
    signers = signers_of()
    (storer,) = set(range(1, 6)) - set(signers)
    liar = signers[0]
    h.nodes[liar].faults.bad_share = True
    data = document(2000)
    outcome = h.deposit(data)
    assert set(outcome.faulty) == {liar} and "signature share" in outcome.faulty[liar]
    assert share_requests(h) == [storer]
    got, _ = h.retrieve()
    assert got == data


def test_first_signers_are_k_consecutive_nodes_spread_by_object_id() -> None:
    nodes = range(1, 6)
    counts = dict.fromkeys(nodes, 0)
    for version in range(1, 501):
        chosen = first_signers(object_id(VAULT, "alice", "doc.bin", version), nodes, 4)
        assert len(chosen) == 4
        (left_out,) = set(nodes) - chosen
        # consecutive, wrapping: the node left out is the one just before the first signer
        assert chosen == {(left_out + i - 1) % 5 + 1 for i in range(1, 5)}
        for node in chosen:
            counts[node] += 1
    # each node signs about 4/5 of 500 deposits
    assert all(340 <= c <= 460 for c in counts.values()), counts
    assert first_signers("00" * 32, nodes, 5) == frozenset(nodes)
    with pytest.raises(ValueError):
        first_signers("00" * 32, nodes, 6)
