"""evault.gateway.planner: deposit decisions, FV settling and reader choice, with reasons."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from evault.errors import ConflictingFingerprints, FingerprintMismatch, NotEnoughSlices
from evault.gateway import planner
from evault.ida.fingerprint import FINGERPRINT_SCHEME, FingerprintVector
from evault.protocol.node_api import DepositResult, Proposal, WireShare

VAULT = "0123456789abcdef0123456789abcdef"
DOC = b"the document"
SHA = hashlib.sha256(DOC).hexdigest()


def proposal(n: int = 5, m: int = 3) -> Proposal:
    return Proposal(
        vault=VAULT,
        owner="alice",
        name="doc.txt",
        version=1,
        n=n,
        m=m,
        codec="rs-isal-cauchy/v1",
        segment_bytes=1 << 20,
        fingerprint_scheme=FINGERPRINT_SCHEME,
        encrypted=False,
        deposited_at="2026-11-25T12:00:00Z",
    )


def fv(seed: int, n: int = 5) -> FingerprintVector:
    return FingerprintVector(tuple(hashlib.sha256(b"%d/%d" % (seed, j)).digest() for j in range(n)))


def answer(
    node: int,
    *,
    p: Proposal | None = None,
    vector: FingerprintVector | None = None,
    size: int = len(DOC),
    sha: str = SHA,
    share_index: int | None = None,
    as_node: int | None = None,
    sent_fv: FingerprintVector | None = None,
    statement: bytes | None = None,
) -> DepositResult:
    p = p or proposal()
    vector = vector or fv(0, p.n)
    raw = statement or p.complete(size=size, sha256=sha, fv_hash=vector.fv_hash().hex()).to_bytes()
    return DepositResult(
        node=as_node or node,
        statement=raw,
        share=WireShare(share_index or node, 1, 1, 1),
        fv=(sent_fv or vector).roots,
    )


def plan(answers: dict[int, DepositResult], **kwargs: object) -> planner.DepositPlan:
    args: dict[str, object] = {
        "proposal": proposal(),
        "k": 4,
        "measured_size": len(DOC),
        "measured_sha256": SHA,
        "answers": answers,
        "failures": {},
    }
    args.update(kwargs)
    return planner.plan_deposit(**args)  # type: ignore[arg-type]


def test_all_honest() -> None:
    result = plan({i: answer(i) for i in range(1, 6)})
    assert result.ok and result.signers == (1, 2, 3, 4, 5)
    assert result.faulty == {} and result.parsed is not None
    assert result.parsed.sha256 == SHA


def test_failures_are_kept_and_k_is_enough() -> None:
    result = plan({i: answer(i) for i in (1, 2, 4, 5)}, failures={3: "down"})
    assert result.ok and result.signers == (1, 2, 4, 5) and result.failed == {3: "down"}


@pytest.mark.parametrize(
    ("liar", "reason"),
    [
        (answer(2, as_node=3), "answered as node 3"),
        (answer(2, share_index=5), "share with index 5"),
        (answer(2, statement=b"{not json"), "malformed statement"),
        (answer(2, p=replace(proposal(), name="other.txt")), "changes the proposed name"),
        (answer(2, p=replace(proposal(), deposited_at="2026-01-01T00:00:00Z")), "deposited_at"),
        (answer(2, size=len(DOC) + 1), "the gateway sent 12"),
        (answer(2, sha="00" * 32), "says SHA-256 000"),
        (answer(2, sent_fv=fv(9)), "does not hash to its statement"),
        (answer(2, vector=fv(9)), "different statement"),
    ],
)
def test_each_kind_of_lie_is_named(liar: DepositResult, reason: str) -> None:
    answers = {i: answer(i) for i in range(1, 6)}
    answers[2] = liar
    result = plan(answers)
    assert result.ok and 2 not in result.signers and len(result.signers) == 4
    assert set(result.faulty) == {2} and reason in result.faulty[2]


def test_too_few_agreeing_is_a_problem_naming_nodes() -> None:
    answers = {i: answer(i) for i in (1, 2, 3)}
    answers[4] = answer(4, vector=fv(7))
    result = plan(answers, failures={5: "timed out"})
    assert not result.ok and "only 3 node(s)" in (result.problem or "")
    assert set(result.faulty) == {4} and result.failed == {5: "timed out"}


def test_no_usable_answer() -> None:
    result = plan({1: answer(1, sha="11" * 32)}, failures={i: "down" for i in range(2, 6)})
    assert not result.ok and "no node returned a usable statement" in (result.problem or "")


def test_client_digest_mismatch_blames_the_client_not_the_nodes() -> None:
    result = plan({i: answer(i) for i in range(1, 6)}, client_sha256="22" * 32)
    assert not result.ok and result.client_fault and result.faulty == {}


def test_client_size_mismatch_blames_the_client() -> None:
    result = plan({}, failures={i: "refused" for i in range(1, 6)}, client_size=3)
    assert not result.ok and result.client_fault and "declared 3" in (result.problem or "")


def test_the_majority_statement_wins_and_the_minority_is_named() -> None:
    answers = {i: answer(i) for i in (2, 3, 4, 5)}
    answers[1] = answer(1, vector=fv(3))
    result = plan(answers)
    assert result.signers == (2, 3, 4, 5) and set(result.faulty) == {1}


def test_programming_errors() -> None:
    with pytest.raises(ValueError, match="k"):
        plan({}, k=6)
    with pytest.raises(ValueError, match="both"):
        plan({1: answer(1)}, failures={1: "x"})


# --- FV -----------------------------------------------------------------------------------


def test_fv_by_receipt_even_against_a_majority() -> None:
    honest, liar = fv(1), fv(2)
    candidates = {1: honest, 2: liar, 3: liar, 4: liar, 5: None}
    settled = planner.plan_fv(candidates, t=1, expected_hash=honest.fv_hash())
    assert settled.fv == honest and settled.agreeing == {1} and settled.by_receipt
    assert set(settled.faulty) == {2, 3, 4}


def test_fv_without_receipt_needs_t_plus_1() -> None:
    honest, liar = fv(1), fv(2)
    settled = planner.plan_fv({1: honest, 2: honest, 3: liar}, t=1, expected_hash=None)
    assert settled.fv == honest and set(settled.faulty) == {3}
    with pytest.raises(ConflictingFingerprints):
        planner.plan_fv({1: honest, 2: honest, 3: liar, 4: liar}, t=1, expected_hash=None)
    with pytest.raises(FingerprintMismatch):
        planner.plan_fv({1: liar}, t=1, expected_hash=honest.fv_hash())


# --- readers ------------------------------------------------------------------------------


def test_readers_prefer_agreed_systematic_slices() -> None:
    read = planner.plan_readers(n=5, m=3, agreeing={1, 2, 3, 4, 5}, excluded={})
    assert read.nodes == (1, 2, 3) and read.spares == (4, 5)
    assert "systematic slice 0" in read.readers[0].reason


def test_readers_skip_excluded_and_unknown_go_last() -> None:
    read = planner.plan_readers(n=5, m=3, agreeing={2, 4, 5}, excluded={1: "down"})
    # agreed nodes first (systematic 2 before parity 4, 5), node 3 not yet seen is a spare
    assert read.nodes == (2, 4, 5) and read.spares == (3,)
    assert "parity slice 3" in read.readers[1].reason


def test_not_enough_readers_names_each_node() -> None:
    with pytest.raises(NotEnoughSlices) as info:
        planner.plan_readers(
            n=5, m=3, agreeing={1, 2}, excluded={3: "down", 4: "lied", 5: "timed out"}
        )
    assert info.value.have == 2 and info.value.need == 3
    assert "node 4: lied" in str(info.value)


def test_replacement() -> None:
    choice = planner.plan_replacement(
        n=5, m=3, agreeing={1, 2, 3, 4, 5}, active={1, 3}, excluded={2: "corrupt"}
    )
    assert choice is not None and choice.node == 4 and "replacement" in choice.reason
    none = planner.plan_replacement(
        n=3, m=2, agreeing={1, 2, 3}, active={1, 3}, excluded={2: "corrupt"}
    )
    assert none is None
