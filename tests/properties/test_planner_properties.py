"""Properties of the gateway planner under Byzantine nodes (DESIGN §2, §5, §6).

- With at most t liars among n >= 2t + 1 nodes and every honest node answering, FV settling
  without a receipt picks the honest FV; with the receipt's hash it does so however many lie.
- Deposit planning picks the honest statement whenever at least k honest nodes answer and at
  most t lie, signs with only nodes that sent it, and names every node that sent another.
- Reader choice never picks an excluded node and prefers systematic slices.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from evault.gateway import planner
from evault.ida.fingerprint import FINGERPRINT_SCHEME, FingerprintVector
from evault.protocol.node_api import DepositResult, Proposal, WireShare
from evault.protocol.statement import Statement

VAULT = "0123456789abcdef0123456789abcdef"
DOC_SIZE = 1234
DOC_SHA = hashlib.sha256(b"doc").hexdigest()


def fv(seed: int, n: int) -> FingerprintVector:
    return FingerprintVector(tuple(hashlib.sha256(b"%d/%d" % (seed, j)).digest() for j in range(n)))


@st.composite
def cluster_with_liars(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    t = draw(st.integers(0, 4))
    n = draw(st.integers(2 * t + 1, 2 * t + 4))
    liars = draw(st.lists(st.integers(1, n), unique=True, max_size=t))
    return n, t, liars


@given(cluster_with_liars(), st.data())
@settings(max_examples=200, deadline=None)
def test_fv_settles_on_the_honest_vector(
    setting: tuple[int, int, list[int]], data: st.DataObject
) -> None:
    n, t, liars = setting
    honest = fv(0, n)
    candidates: dict[int, FingerprintVector | None] = {}
    for node in range(1, n + 1):
        if node in liars:
            # colluding (same seed) or independent lies, or silence
            seed = data.draw(st.one_of(st.none(), st.integers(1, 3)))
            candidates[node] = None if seed is None else fv(seed, n)
        else:
            candidates[node] = honest
    settled = planner.plan_fv(candidates, t=t, expected_hash=None)
    assert settled.fv == honest
    assert settled.agreeing == {node for node in candidates if node not in liars}
    assert set(settled.faulty) == {node for node in liars if candidates[node] is not None}

    # With the receipt's hash, only one honest source needs to answer.
    keep = data.draw(st.sampled_from(sorted(set(candidates) - set(liars))))
    few = {node: v for node, v in candidates.items() if node in liars or node == keep}
    settled = planner.plan_fv(few, t=t, expected_hash=honest.fv_hash())
    assert settled.fv == honest and settled.agreeing == {keep}


def _proposal(n: int, m: int) -> Proposal:
    return Proposal(
        vault=VAULT,
        owner="alice",
        name="doc",
        version=3,
        n=n,
        m=m,
        codec="rs-isal-cauchy/v1",
        segment_bytes=4096,
        fingerprint_scheme=FINGERPRINT_SCHEME,
        encrypted=False,
        deposited_at="2026-11-25T12:00:00Z",
    )


def _honest(node: int, p: Proposal, vector: FingerprintVector) -> DepositResult:
    statement = p.complete(size=DOC_SIZE, sha256=DOC_SHA, fv_hash=vector.fv_hash().hex())
    return DepositResult(node, statement.to_bytes(), WireShare(node, 1, 1, 1), vector.roots)


LIES = ("other_fv", "consistent_other_fv", "wrong_size", "wrong_sha", "wrong_index", "copy")


def _lie(node: int, p: Proposal, honest_fv: FingerprintVector, kind: str) -> DepositResult:
    if kind == "copy":  # the honest answer, bad share or not: the combiner judges the share
        return _honest(node, p, honest_fv)
    if kind == "consistent_other_fv":
        return _honest(node, p, fv(node + 100, p.n))
    if kind == "other_fv":  # statement honest, FV not matching it
        good = _honest(node, p, honest_fv)
        return DepositResult(node, good.statement, good.share, fv(node + 100, p.n).roots)
    fields = {"size": DOC_SIZE, "sha256": DOC_SHA, "fv_hash": honest_fv.fv_hash().hex()}
    if kind == "wrong_size":
        fields["size"] = DOC_SIZE + node
    if kind == "wrong_sha":
        fields["sha256"] = hashlib.sha256(b"%d" % node).hexdigest()
    statement = p.complete(**fields).to_bytes()  # type: ignore[arg-type]
    index = node if kind != "wrong_index" else (node % p.n) + 1
    return DepositResult(node, statement, WireShare(index, 1, 1, 1), honest_fv.roots)


@given(cluster_with_liars(), st.data())
@settings(max_examples=200, deadline=None)
def test_deposit_plan_picks_the_honest_statement(
    setting: tuple[int, int, list[int]], data: st.DataObject
) -> None:
    n, t, liars = setting
    m = data.draw(st.integers(1, max(1, n - 2 * t)))
    k = data.draw(st.integers(min(n, m + t), n - t)) if m + t <= n - t else n - t
    p = _proposal(n, m)
    honest_fv = fv(0, n)
    down = data.draw(
        st.lists(
            st.sampled_from([i for i in range(1, n + 1) if i not in liars] or [1]),
            unique=True,
            max_size=max(0, n - len(liars) - k),
        )
    )
    answers: dict[int, DepositResult] = {}
    failures: dict[int, str] = {}
    for node in range(1, n + 1):
        if node in liars:
            answers[node] = _lie(node, p, honest_fv, data.draw(st.sampled_from(LIES)))
        elif node in down:
            failures[node] = "down"
        else:
            answers[node] = _honest(node, p, honest_fv)
    honest_answering = [i for i in range(1, n + 1) if i not in liars and i not in down]
    result = planner.plan_deposit(
        proposal=p,
        k=k,
        measured_size=DOC_SIZE,
        measured_sha256=DOC_SHA,
        answers=answers,
        failures=failures,
    )
    honest_statement = _honest(1, p, honest_fv).statement
    assert len(honest_answering) >= k
    assert result.ok and result.statement == honest_statement
    assert set(honest_answering) <= set(result.signers)
    assert all(answers[i].statement == honest_statement for i in result.signers)
    parsed = Statement.from_bytes(honest_statement)
    assert result.parsed == parsed
    for node in liars:
        if answers[node].statement != honest_statement:
            assert node in result.faulty
    assert not set(result.faulty) & set(honest_answering)
    assert result.failed == failures


@given(
    st.integers(1, 10).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.integers(1, n),
            st.sets(st.integers(1, n)),
            st.sets(st.integers(1, n)),
        )
    )
)
@settings(max_examples=300, deadline=None)
def test_readers_avoid_excluded_and_prefer_systematic(
    case: tuple[int, int, set[int], set[int]],
) -> None:
    n, m, agreeing, excluded_nodes = case
    excluded = {node: "x" for node in excluded_nodes}
    usable = [node for node in range(1, n + 1) if node not in excluded]
    if len(usable) < m:
        try:
            planner.plan_readers(n=n, m=m, agreeing=agreeing, excluded=excluded)
        except Exception as exc:  # NotEnoughSlices names every excluded node
            assert all(f"node {node}" in str(exc) for node in excluded_nodes)
            return
        raise AssertionError("expected NotEnoughSlices")
    read = planner.plan_readers(n=n, m=m, agreeing=agreeing, excluded=excluded)
    assert len(set(read.nodes)) == m and not set(read.nodes) & excluded_nodes
    assert set(read.nodes) | set(read.spares) == set(usable)
    # Among agreed nodes, a parity slice is only read when no agreed systematic one is left out.
    chosen_agreed = [node for node in read.nodes if node in agreeing]
    spare_agreed_systematic = [
        node for node in read.spares if node in agreeing and planner.slice_of(node) < m
    ]
    if any(planner.slice_of(node) >= m for node in chosen_agreed):
        assert not spare_agreed_systematic
    # Unknown nodes are only read when the agreed ones do not suffice.
    if any(node not in agreeing for node in read.nodes):
        assert all(node not in agreeing for node in read.spares)
