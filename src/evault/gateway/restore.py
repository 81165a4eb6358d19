"""Restoring the catalog from the nodes (DESIGN §8: the nodes are the source of truth).

The protocol is specified in ``docs/spec/catalog.md``, "Restoring the catalog from the nodes";
in short:

1. walk every node's listing (the sweep's walk), merging them by object id as they arrive
   (each node lists in increasing id order), and keep the objects whose statement names this
   vault and that very object id; a node whose listing stopped is asked directly for each later
   object id that lacks holders;
2. leave alone every version the catalog has, in any state;
3. for each other object id, try the statements the nodes hold for it, the most widely held
   first: at least max(k, m) nodes must hold it, k of them must give a valid signature share
   (``GET .../share``, with its proof), and the combined signature must verify under the
   vault's key — the receipt the depositor got, byte for byte (the PSS salt comes from the
   statement);
4. write the version back with ``Catalog.restore_version`` (its owner's account, if missing,
   created locked).

It never changes or removes a catalog row, so it may run beside serving gateways and twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from evault.errors import BadName, EvaultError, InvalidSignature, NodeRejected, NotEnoughShares
from evault.gateway.fanout import describe_failure, each_node, receipt_record
from evault.gateway.service import VaultService, walk_listing
from evault.protocol.node_api import WireShare, object_id
from evault.protocol.statement import Statement

log = logging.getLogger("evault.gateway.restore")

#: Object ids whose receipts are rebuilt at once (each asks k nodes for a share and its proof).
RESTORE_CONCURRENCY: Final = 4
#: Versions not restored that the report names one by one (and the log line by line); past
#: this only their number grows, so that a node listing made-up objects cannot fill memory.
MAX_NAMED_NOT_RESTORED: Final = 10_000


@dataclass(frozen=True)
class RestoredVersion:
    owner: str
    name: str
    version: int
    size: int
    sha256: str
    #: its owner's account was created by this restore, locked
    account_created: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "name": self.name,
            "version": self.version,
            "size": self.size,
            "sha256": self.sha256,
            "account_created": self.account_created,
        }


@dataclass(frozen=True)
class NotRestored:
    object_id: str
    owner: str
    name: str
    version: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "owner": self.owner,
            "name": self.name,
            "version": self.version,
            "reason": self.reason,
        }


@dataclass
class RestoreReport:
    """What a restore found and did (with ``dry_run``, what it would have written)."""

    dry_run: bool
    #: node → objects its listing gave
    listed: dict[int, int] = field(default_factory=dict)
    #: node → why its listing stopped before the end
    unlisted: dict[int, str] = field(default_factory=dict)
    #: listed objects whose statement does not fit (another vault or object id, unreadable)
    ignored: int = 0
    #: versions the catalog already had (any state)
    known: int = 0
    restored: list[RestoredVersion] = field(default_factory=list)
    #: the first ``MAX_NAMED_NOT_RESTORED`` versions not restored, with why
    not_restored: list[NotRestored] = field(default_factory=list)
    #: all versions not restored (``not_restored`` names the first of them)
    not_restored_count: int = 0

    @property
    def accounts_created(self) -> list[str]:
        return sorted({v.owner for v in self.restored if v.account_created})

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "listed": {str(node): count for node, count in sorted(self.listed.items())},
            "unlisted": {str(node): why for node, why in sorted(self.unlisted.items())},
            "ignored": self.ignored,
            "known": self.known,
            "restored": [v.to_json() for v in self.restored],
            "not_restored": [v.to_json() for v in self.not_restored],
            "not_restored_count": self.not_restored_count,
            "accounts_created": self.accounts_created,
        }


#: Called with (node, objects listed so far by it) as the listings arrive.
ListedCallback = Callable[[int, int], None]
#: Called with the number of object ids checked so far (the total is known only at the end).
CheckedCallback = Callable[[int], None]


@dataclass
class _Candidate:
    """One object id: the statements nodes hold for it, each with its holders."""

    oid: str
    #: (owner, name, version) of the first fitting statement listed
    owner: str
    name: str
    version: int
    holders: dict[bytes, set[int]] = field(default_factory=dict)
    #: nodes whose listing had stopped before this object id (asked directly if need be)
    unlisted: frozenset[int] = frozenset()

    def by_support(self) -> list[tuple[bytes, set[int]]]:
        """The statements, the most widely held first (ties: by their bytes, for a fixed order)."""
        return sorted(self.holders.items(), key=lambda item: (-len(item[1]), item[0]))


async def restore_catalog(
    service: VaultService,
    *,
    dry_run: bool = False,
    concurrency: int = RESTORE_CONCURRENCY,
    on_listed: ListedCallback | None = None,
    on_checked: CheckedCallback | None = None,
) -> RestoreReport:
    """Put back into the service's catalog the versions the nodes hold with a valid receipt
    and the catalog lacks (see the module text); ``dry_run`` writes nothing.

    Every node lists its objects in increasing id order, so the listings are merged as they
    arrive and each object id is checked as soon as every node has listed past it, at most
    ``concurrency`` at once: memory stays a page per node, whatever the vault holds.  A catalog
    failure (the database down) stops the restore with that error.
    """
    if concurrency < 1:
        raise ValueError("concurrency: must be >= 1")
    report = RestoreReport(dry_run=dry_run)
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def check(candidate: _Candidate) -> None:
        nonlocal done
        try:
            await _restore_one(service, candidate, report)
        finally:
            gate.release()
        done += 1
        if on_checked is not None:
            on_checked(done)

    try:
        async with (
            asyncio.TaskGroup() as group,
            contextlib.aclosing(_merged_listings(service, report, on_listed)) as candidates,
        ):
            async for candidate in candidates:
                await gate.acquire()
                group.create_task(check(candidate))
    except BaseExceptionGroup as failed:  # one clear error, not a group, for the caller
        raise failed.exceptions[0] from None
    report.restored.sort(key=lambda v: (v.owner, v.name, v.version))
    report.not_restored.sort(key=lambda v: (v.owner, v.name, v.version, v.object_id))
    return report


async def _merged_listings(
    service: VaultService, report: RestoreReport, on_listed: ListedCallback | None
) -> AsyncGenerator[_Candidate, None]:
    """Every object id any node lists, in increasing order, each with the statements its
    holders list for it; objects that do not fit are counted in ``report.ignored``.  A node
    whose listing fails drops out (``report.unlisted``) and the merge goes on without it."""
    walks = {c.index: walk_listing(c) for c in service.clients.values()}
    heads: dict[int, tuple[str, bytes]] = {}
    report.listed.update({node: 0 for node in walks})

    async def advance(node: int) -> None:
        heads.pop(node, None)
        try:
            heads[node] = await anext(walks[node])
        except StopAsyncIteration:
            return
        except EvaultError as exc:
            report.unlisted[node] = describe_failure(exc)
            log.warning("node %d: listing stopped: %s", node, report.unlisted[node])
            return
        report.listed[node] += 1
        if on_listed is not None:
            on_listed(node, report.listed[node])

    try:
        await asyncio.gather(*(advance(node) for node in walks))
        while heads:
            oid = min(head[0] for head in heads.values())
            at = sorted(node for node, head in heads.items() if head[0] == oid)
            candidate: _Candidate | None = None
            for node in at:
                statement = heads[node][1]
                st = _fitting(service.vault, oid, statement)
                if st is None:
                    report.ignored += 1
                    continue
                if candidate is None:
                    unlisted = frozenset(report.unlisted)
                    candidate = _Candidate(oid, st.owner, st.name, st.version, unlisted=unlisted)
                candidate.holders.setdefault(statement, set()).add(node)
            if candidate is not None:
                yield candidate
            await asyncio.gather(*(advance(node) for node in at))
    finally:
        for walk in walks.values():
            await walk.aclose()


def _fitting(vault: str, oid: str, statement: bytes) -> Statement | None:
    """The statement if it names this vault and this very object id, else None."""
    try:
        st = Statement.from_bytes(statement)
    except EvaultError:
        return None
    if st.vault != vault or object_id(st.vault, st.owner, st.name, st.version) != oid:
        return None
    return st


async def _restore_one(service: VaultService, candidate: _Candidate, report: RestoreReport) -> None:
    c = candidate
    oid = c.oid

    def refuse(reason: str) -> None:
        report.not_restored_count += 1
        if report.not_restored_count > MAX_NAMED_NOT_RESTORED:
            return
        report.not_restored.append(NotRestored(oid, c.owner, c.name, c.version, reason))
        log.warning(
            "version %d of %r (owner %s) not restored: %s", c.version, c.name, c.owner, reason
        )

    try:
        state = await service.catalog_call(
            service.catalog.version_state, c.owner, c.name, c.version
        )
    except BadName as exc:  # a statement the catalog cannot hold; any other error stops all
        refuse(f"the catalog refuses it: {exc}")
        return
    if state is not None:
        report.known += 1
        return
    need = max(service.cluster.k, service.cluster.m)
    reasons: list[str] = []
    best = max(len(holders) for holders in c.holders.values())
    if best < need and c.unlisted:
        await _ask_unlisted(service, c, reasons)
    for statement, holders in candidate.by_support():
        if len(holders) < need:
            reasons.append(f"held by {_nodes(holders)}, {need} nodes needed")
            continue
        signature = await _receipt(service, oid, statement, holders, reasons)
        if signature is None:
            continue
        if not await _write(service, statement, signature, report):
            report.known += 1  # the catalog got it meanwhile (a deposit or another restore)
        return
    refuse("; ".join(reasons))


async def _ask_unlisted(service: VaultService, c: _Candidate, reasons: list[str]) -> None:
    """Ask the nodes whose listing stopped before ``c`` for its statement directly
    (``GET /v1/objects/{id}``); each that holds a fitting one becomes one of its holders."""
    clients = {node: service.clients[node] for node in c.unlisted}
    answers = await each_node(clients, lambda client: client.meta(c.oid), service.node_timeout_s)
    for node, answer in sorted(answers.items()):
        if isinstance(answer, NodeRejected) and answer.status == 404:
            continue  # it does not hold the object
        if isinstance(answer, BaseException):
            reasons.append(f"node {node}, whose listing stopped: {describe_failure(answer)}")
            continue
        if _fitting(service.vault, c.oid, answer.statement) is not None:
            c.holders.setdefault(answer.statement, set()).add(node)


async def _receipt(
    service: VaultService, oid: str, statement: bytes, holders: set[int], reasons: list[str]
) -> bytes | None:
    """The vault's signature over ``statement`` from its holders' shares, or None (and why in
    ``reasons``)."""
    clients = {node: service.clients[node] for node in holders}
    answers = await each_node(clients, lambda c: c.share(oid), service.node_timeout_s)
    shares: list[WireShare] = [a for a in answers.values() if isinstance(a, WireShare)]
    silent = {
        node: describe_failure(a) for node, a in answers.items() if isinstance(a, BaseException)
    }
    try:
        signature, bad = await asyncio.to_thread(service.combiner.combine, statement, shares)
        await asyncio.to_thread(service.combiner.verify, statement, signature)
    except NotEnoughShares as exc:
        why = {**silent, **exc.bad}
        reasons.append(
            f"only {exc.have} valid signature shares of {exc.need}"
            + (f" ({_reasons(why)})" if why else "")
        )
        return None
    except InvalidSignature as exc:
        reasons.append(f"the combined signature does not verify: {exc}")
        return None
    if bad:
        log.warning("restore of %s: bad signature shares: %s", oid, _reasons(bad))
    return signature


async def _write(
    service: VaultService, statement: bytes, signature: bytes, report: RestoreReport
) -> bool:
    """Write the version back (unless a dry run); False if the catalog had it meanwhile."""
    st = Statement.from_bytes(statement)
    created = False
    if not report.dry_run:
        result = await service.catalog_call(
            service.catalog.restore_version,
            st.owner,
            st.name,
            st.version,
            receipt_record(st, statement, signature),
        )
        if not result.restored:
            return False
        created = result.account_created
    report.restored.append(
        RestoredVersion(st.owner, st.name, st.version, st.size, st.sha256, created)
    )
    log.info("restored version %d of %r (owner %s)", st.version, st.name, st.owner)
    return True


def _nodes(nodes: set[int]) -> str:
    listed = ", ".join(str(n) for n in sorted(nodes))
    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} ({listed})"


def _reasons(why: Mapping[int, str]) -> str:
    return "; ".join(f"node {node}: {reason}" for node, reason in sorted(why.items()))


__all__ = [
    "NotRestored",
    "RestoreReport",
    "RestoredVersion",
    "restore_catalog",
]
