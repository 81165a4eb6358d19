"""The gateway's decisions, as pure functions of what the nodes answered (no I/O, no clock).

The service (``evault.gateway.service``) does the talking; this module decides, and says why:

* :func:`plan_deposit` — which statement gets a receipt (DESIGN §5).  Each node's answer is
  checked against the proposal, against what the gateway itself measured while streaming (size,
  SHA-256) and against the client's optional SHA-256; the node's FV must hash to the statement's
  ``fv_hash``.  Honest nodes compute the same statement bytes from the same document (every
  field is pinned by the proposal or by a deterministic computation), so the answers are grouped
  by statement bytes and the group with at least k members is the one to sign.  Any other group,
  and any answer failing a check, names its node as faulty.
* :func:`plan_fv` — the fingerprint vector to retrieve with (DESIGN §6): the one whose hash the
  signed receipt carries, or failing a receipt one that at least t+1 nodes agree on.
* :func:`plan_readers` / :func:`plan_replacement` — which m nodes to read slices from, preferring
  nodes whose FV agreed and the systematic slices 0..m-1 (node i holds slice i-1; with the
  registry's systematic codecs those blocks decode by concatenation), and which node replaces one
  that failed.

Node numbers are the protocol's 1-based indices; slice j is held by node j + 1.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from evault.errors import FormatError, NotEnoughSlices
from evault.ida.fingerprint import FingerprintVector, FVSelection, select_fv
from evault.protocol.node_api import DepositResult, Proposal
from evault.protocol.statement import Statement

#: Fields of the statement that the proposal fixes (everything but size, sha256, fv_hash).
PROPOSED_FIELDS = tuple(Proposal.__dataclass_fields__)


def slice_of(node: int) -> int:
    """The slice index node ``node`` holds."""
    return node - 1


def node_of(slice_index: int) -> int:
    return slice_index + 1


# --- deposit -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DepositPlan:
    """What to do with the node answers of one deposit.

    ``statement``/``parsed``: the statement to combine shares over (None when ``problem``).
    ``signers``: the nodes whose shares go to the combiner, ascending.
    ``faulty``: nodes that answered something wrong, with the reason.
    ``failed``: nodes that gave no answer (down, timed out, refused), with the reason.
    ``problem``: why no receipt can be made, or None.  ``client_fault``: the problem is the
    client's document, not the nodes (its SHA-256 or length differs from what it declared).
    """

    statement: bytes | None
    parsed: Statement | None
    signers: tuple[int, ...]
    faulty: Mapping[int, str]
    failed: Mapping[int, str]
    problem: str | None
    client_fault: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None


def first_signers(object_id: str, nodes: Collection[int], k: int) -> frozenset[int]:
    """The k nodes asked to sign a deposit (the others only store, and sign if needed): k
    consecutive nodes in index order, starting at a place the object id picks, so that the
    signing work of many deposits spreads over all nodes."""
    ordered = sorted(nodes)
    if not 1 <= k <= len(ordered):
        raise ValueError(f"k: expected 1..{len(ordered)}, got {k}")
    start = int(object_id[:8], 16) % len(ordered)
    return frozenset(ordered[(start + i) % len(ordered)] for i in range(k))


def check_deposit_answer(
    node: int,
    answer: DepositResult,
    *,
    proposal: Proposal,
    measured_size: int,
    measured_sha256: str,
) -> tuple[Statement | None, str | None]:
    """Parse and check one node's deposit answer: ``(statement, None)`` or ``(None, reason)``."""
    if answer.node != node:
        return None, f"answered as node {answer.node}"
    if answer.share is not None and answer.share.index != node:
        return None, f"sent a signature share with index {answer.share.index}"
    try:
        statement = Statement.from_bytes(answer.statement)
    except FormatError as exc:
        return None, f"sent a malformed statement: {exc}"
    changed = [
        name for name in PROPOSED_FIELDS if getattr(statement, name) != getattr(proposal, name)
    ]
    if changed:
        return None, "its statement changes the proposed " + ", ".join(changed)
    if statement.size != measured_size:
        return None, (
            f"its statement says {statement.size} bytes, the gateway sent {measured_size}"
        )
    if statement.sha256 != measured_sha256:
        return None, (
            f"its statement says SHA-256 {statement.sha256}, the gateway sent {measured_sha256}"
        )
    if len(answer.fv) != proposal.n:
        return None, f"sent an FV of {len(answer.fv)} roots, n = {proposal.n}"
    fv_hash = FingerprintVector(tuple(answer.fv)).fv_hash().hex()
    if not hmac.compare_digest(fv_hash, statement.fv_hash):
        return None, "its FV does not hash to its statement's fv_hash"
    return statement, None


def plan_deposit(
    *,
    proposal: Proposal,
    k: int,
    measured_size: int,
    measured_sha256: str,
    answers: Mapping[int, DepositResult],
    failures: Mapping[int, str],
    client_sha256: str | None = None,
    client_size: int | None = None,
) -> DepositPlan:
    """Decide which statement gets a receipt and who is faulty.  See the module docstring."""
    if not isinstance(k, int) or not 1 <= k <= proposal.n:
        raise ValueError(f"k: must be an integer in 1..{proposal.n}")
    overlap = set(answers) & set(failures)
    if overlap:
        raise ValueError(f"answers, failures: node(s) {sorted(overlap)} appear in both")
    failed = dict(failures)
    if client_size is not None and client_size != measured_size:
        return DepositPlan(
            None,
            None,
            (),
            {},
            failed,
            f"the body is {measured_size} bytes, the client declared {client_size}",
            client_fault=True,
        )
    if client_sha256 is not None and client_sha256 != measured_sha256:
        return DepositPlan(
            None,
            None,
            (),
            {},
            failed,
            f"the document hashes to {measured_sha256}, not to the client's {client_sha256}",
            client_fault=True,
        )

    faulty: dict[int, str] = {}
    groups: dict[bytes, list[int]] = {}
    parsed: dict[bytes, Statement] = {}
    for node in sorted(answers):
        statement, reason = check_deposit_answer(
            node,
            answers[node],
            proposal=proposal,
            measured_size=measured_size,
            measured_sha256=measured_sha256,
        )
        if statement is None:
            faulty[node] = reason or "unusable answer"
            continue
        raw = answers[node].statement
        groups.setdefault(raw, []).append(node)
        parsed[raw] = statement

    if not groups:
        return DepositPlan(
            None,
            None,
            (),
            faulty,
            failed,
            f"no node returned a usable statement, {k} needed",
        )
    # Largest group wins; a tie goes to the group holding the lowest node number (any
    # deterministic rule will do: two groups of k or more would need more than t liars).
    best = max(groups, key=lambda raw: (len(groups[raw]), -groups[raw][0]))
    chosen = parsed[best]
    for raw, nodes in groups.items():
        if raw is best:
            continue
        for node in nodes:
            faulty[node] = (
                f"signed a different statement (fv_hash {parsed[raw].fv_hash[:16]}…) than "
                f"the {len(groups[best])} node(s) that agree (fv_hash {chosen.fv_hash[:16]}…)"
            )
    signers = tuple(groups[best])
    if len(signers) < k:
        return DepositPlan(
            best,
            chosen,
            signers,
            faulty,
            failed,
            f"only {len(signers)} node(s) stored and signed the document, {k} needed",
        )
    return DepositPlan(best, chosen, signers, faulty, failed, None)


# --- retrieval -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FVPlan:
    """The settled FV, the nodes that sent it, and the nodes named for sending another."""

    fv: FingerprintVector
    agreeing: frozenset[int]
    faulty: Mapping[int, str]
    by_receipt: bool


def plan_fv(
    candidates: Mapping[int, FingerprintVector | None],
    *,
    t: int,
    expected_hash: bytes | None,
) -> FVPlan:
    """Settle the FV (DESIGN §6) from what each node sent (None: it sent nothing usable).

    With ``expected_hash`` (from a receipt whose signature verified) the one vector hashing to
    it; else one agreed by t+1 nodes.  Raises ``FingerprintMismatch``, ``NoFingerprintQuorum``
    or ``ConflictingFingerprints`` (see ``evault.ida.fingerprint.select_fv``).
    """
    selection: FVSelection = select_fv(
        {str(node): fv for node, fv in candidates.items()}, t, expected_hash
    )
    what = "the receipt's fv_hash" if expected_hash is not None else "the agreed FV"
    faulty = {int(name): f"holds an FV that differs from {what}" for name in selection.disagreeing}
    return FVPlan(
        fv=selection.fv,
        agreeing=frozenset(int(name) for name in selection.agreeing),
        faulty=faulty,
        by_receipt=expected_hash is not None,
    )


@dataclass(frozen=True)
class ReaderChoice:
    node: int
    slice_index: int
    reason: str


@dataclass(frozen=True)
class ReadPlan:
    """The nodes to read from, in order, with why each was chosen."""

    readers: tuple[ReaderChoice, ...]
    #: the other usable nodes, best first: replacements if a reader fails
    spares: tuple[int, ...] = field(default=())

    @property
    def nodes(self) -> tuple[int, ...]:
        return tuple(choice.node for choice in self.readers)


def rank_nodes(n: int, m: int, agreeing: Collection[int], excluded: Collection[int]) -> list[int]:
    """Usable nodes best first: FV agreed before unknown, then systematic slices, then index."""
    usable = [node for node in range(1, n + 1) if node not in excluded]
    return sorted(usable, key=lambda node: (node not in agreeing, slice_of(node) >= m, node))


def _why(node: int, m: int, agreeing: Collection[int]) -> str:
    kind = "systematic slice" if slice_of(node) < m else "parity slice"
    status = "its FV agreed" if node in agreeing else "its FV not yet seen"
    return f"{kind} {slice_of(node)}, {status}"


def plan_readers(
    *,
    n: int,
    m: int,
    agreeing: Collection[int],
    excluded: Mapping[int, str],
) -> ReadPlan:
    """Choose m nodes to read (see :func:`rank_nodes`); ``NotEnoughSlices`` if fewer remain."""
    ranked = rank_nodes(n, m, agreeing, excluded)
    if len(ranked) < m:
        raise not_enough_slices(have=len(ranked), need=m, failed=excluded)
    readers = tuple(
        ReaderChoice(node, slice_of(node), _why(node, m, agreeing)) for node in ranked[:m]
    )
    return ReadPlan(readers, tuple(ranked[m:]))


def plan_replacement(
    *,
    n: int,
    m: int,
    agreeing: Collection[int],
    active: Collection[int],
    excluded: Mapping[int, str],
) -> ReaderChoice | None:
    """The best node not reading and not excluded, or None when none is left."""
    for node in rank_nodes(n, m, agreeing, excluded):
        if node not in active:
            return ReaderChoice(node, slice_of(node), "replacement: " + _why(node, m, agreeing))
    return None


def not_enough_slices(have: int, need: int, failed: Mapping[int, str]) -> NotEnoughSlices:
    """The error for too few good slices, naming each node (``node-<i>``) and why."""
    return NotEnoughSlices(
        have=have, need=need, failed={f"node {node}": why for node, why in failed.items()}
    )


def merge_reasons(*maps: Mapping[int, str]) -> dict[int, str]:
    """One reason per node, the first map's reason winning."""
    out: dict[int, str] = {}
    for reasons in maps:
        for node, why in reasons.items():
            out.setdefault(node, why)
    return out
