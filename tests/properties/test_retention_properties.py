"""Hypothesis properties of the retention policy and its globs."""

from __future__ import annotations

import fnmatch
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from evault.retention import (
    BUCKET_KINDS,
    Glob,
    RetentionPlan,
    RetentionRule,
    VersionInfo,
    plan_retention,
)

NAMES = ["a.c", "src/b.c", "src/x/c.h", "notes.md", "my_last_will_and_testament"]
PATTERNS = ["*.c", "*.h", "src/**", "*", "notes.md", "/a.c", "src/*/*.h"]
TIMES = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
NOWS = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2031, 1, 1), timezones=st.just(UTC)
)


@st.composite
def version_lists(draw: st.DrawFn) -> list[VersionInfo]:
    out: list[VersionInfo] = []
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4)):
        numbers = draw(st.lists(st.integers(0, 60), unique=True, min_size=1, max_size=25))
        for number in numbers:
            out.append(VersionInfo(name, number, draw(TIMES), draw(st.integers(0, 10**6))))
    return out


@st.composite
def rules(draw: st.DrawFn) -> RetentionRule:
    pattern = draw(st.sampled_from(PATTERNS))
    if draw(st.integers(0, 9)) == 0:
        return RetentionRule.unlimited(pattern)
    counts = st.none() | st.integers(1, 8)
    kwargs: dict[str, int | timedelta | None] = {
        f"keep_{kind}": draw(counts) for kind in ("last", *BUCKET_KINDS)
    }
    kwargs["keep_within"] = draw(st.none() | st.timedeltas(timedelta(hours=1), timedelta(days=400)))
    if all(v is None for v in kwargs.values()):
        kwargs["keep_last"] = draw(st.integers(1, 8))
    return RetentionRule(pattern, **kwargs)  # type: ignore[arg-type]


def kept_keys(plan: RetentionPlan) -> set[tuple[str, int]]:
    return {(v.name, v.version) for v in plan.kept}


@given(version_lists(), st.lists(rules(), max_size=4), NOWS)
def test_the_latest_version_of_every_document_is_kept(
    versions: list[VersionInfo], rule_list: list[RetentionRule], now: datetime
) -> None:
    plan = plan_retention(versions, rule_list, now=now)
    latest: dict[str, int] = {}
    for v in versions:
        latest[v.name] = max(latest.get(v.name, v.version), v.version)
    assert {(n, m) for n, m in latest.items()} <= kept_keys(plan)


@given(version_lists(), st.lists(rules(), max_size=4), NOWS)
def test_the_plan_is_a_partition_of_its_input(
    versions: list[VersionInfo], rule_list: list[RetentionRule], now: datetime
) -> None:
    plan = plan_retention(versions, rule_list, now=now)
    assert [d.version for d in plan.decisions] == sorted(
        versions, key=lambda v: (v.name, v.version)
    )
    assert len(plan.decisions) == len(versions)
    assert set(plan.kept).isdisjoint(plan.removed)
    assert set(plan.kept) | set(plan.removed) == set(versions)
    assert all(d.reasons for d in plan.decisions)  # every decision says why


@given(version_lists(), st.lists(rules(), max_size=4), NOWS, st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_input_order(
    versions: list[VersionInfo], rule_list: list[RetentionRule], now: datetime, rnd: object
) -> None:
    shuffled = list(versions)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert plan_retention(shuffled, rule_list, now=now) == plan_retention(
        versions, rule_list, now=now
    )


@given(version_lists(), st.integers(1, 30), NOWS)
def test_keep_last_n_keeps_min_n_count_of_each_matching_document(
    versions: list[VersionInfo], n: int, now: datetime
) -> None:
    plan = plan_retention(versions, [RetentionRule.last("*", n)], now=now)
    for name in {v.name for v in versions}:
        mine = sorted(v.version for v in versions if v.name == name)
        kept = [d.version.version for d in plan.for_document(name) if d.keep]
        assert kept == mine[-n:]
        assert len(kept) == min(n, len(mine))


@given(version_lists(), st.lists(rules(), max_size=4), NOWS)
def test_planning_again_with_the_same_now_removes_nothing_more(
    versions: list[VersionInfo], rule_list: list[RetentionRule], now: datetime
) -> None:
    first = plan_retention(versions, rule_list, now=now)
    again = plan_retention(first.kept, rule_list, now=now)
    assert again.removed == ()


@given(version_lists(), st.integers(1, 10), st.sampled_from(BUCKET_KINDS), NOWS)
def test_a_larger_count_never_keeps_less(
    versions: list[VersionInfo], n: int, kind: str, now: datetime
) -> None:
    small = plan_retention(versions, [RetentionRule("*", **{f"keep_{kind}": n})], now=now)  # type: ignore[arg-type]
    large = plan_retention(versions, [RetentionRule("*", **{f"keep_{kind}": n + 1})], now=now)  # type: ignore[arg-type]
    assert kept_keys(small) <= kept_keys(large)


@given(version_lists(), st.sampled_from(BUCKET_KINDS), NOWS)
def test_at_most_one_version_per_bucket_besides_the_latest(
    versions: list[VersionInfo], kind: str, now: datetime
) -> None:
    plan = plan_retention(versions, [RetentionRule("*", **{f"keep_{kind}": 100})], now=now)  # type: ignore[arg-type]
    for name in {v.name for v in versions}:
        labels = [d.reasons[-1] for d in plan.for_document(name) if d.keep]
        assert len(labels) == len(set(labels))


# ---- globs, cross-checked against fnmatch ------------------------------------------------

#: '&', '~', '|' and '\\' in a class once read as regex set operations or escapes ('^' is left out:
#: like .gitignore, and unlike fnmatch, a class starting with it is negated).
SEGMENT_ALPHABET = "ab.c*?[]!-&~|\\"


@settings(max_examples=400)
@given(
    # '**' inside a segment and the segments '.' and '..' are refused by design.
    st.text(alphabet=SEGMENT_ALPHABET, min_size=1, max_size=6).filter(
        lambda p: "**" not in p and p not in (".", "..")
    ),
    st.text(alphabet="ab.c-![]&~|\\", min_size=1, max_size=6),
)
def test_a_one_segment_pattern_on_a_one_segment_name_agrees_with_fnmatchcase(
    pattern: str, name: str
) -> None:
    try:
        glob = Glob.parse(pattern)
    except ValueError as exc:
        # A reversed range such as "[?-.]" is refused with a clear error, where fnmatch
        # silently matches nothing: a profile typo should not quietly select no file.
        assert "bad character range" in str(exc)
        assert not fnmatch.fnmatchcase(name, pattern)
        return
    assert glob.matches(name) == fnmatch.fnmatchcase(name, pattern)


@given(
    st.lists(st.text(alphabet="abc.", min_size=1, max_size=4), max_size=4).filter(
        lambda segs: all(s not in (".", "..") for s in segs)
    ),
    st.text(alphabet="abc", min_size=1, max_size=4),
)
def test_a_basename_pattern_matches_at_any_depth(dirs: list[str], stem: str) -> None:
    name = "/".join([*dirs, stem + ".c"])
    assert Glob.parse("*.c").matches(name)
    assert Glob.parse("**/*.c").matches(name)
    assert not Glob.parse("*.h").matches(name)
    assert Glob.parse("/*.c").matches(name) == (not dirs)
