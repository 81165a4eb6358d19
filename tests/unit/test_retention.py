"""Retention policy: the paper's profile example (§2.3.2), time buckets, globs, bad rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from evault.retention import (
    Glob,
    RetentionRule,
    VersionInfo,
    format_duration,
    parse_duration,
    plan_retention,
    rules_summary,
)

NOW = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)

# Paper §2.3.2: "maintain the 5 latest versions of any c source file, an unlimited number of
# versions of the file my_last_will_and_testament but only the last version of the file
# todays_shopping_list".
PAPER_RULES = (
    RetentionRule.last("*.c", 5),
    RetentionRule.unlimited("my_last_will_and_testament"),
    RetentionRule.only_latest("todays_shopping_list"),
)


def versions_of(name: str, count: int, *, start: datetime, step: timedelta) -> list[VersionInfo]:
    return [
        VersionInfo(name=name, version=i, deposited_at=start + (i - 1) * step, size=100 * i)
        for i in range(1, count + 1)
    ]


def test_paper_example_seven_versions_of_a_c_file_keep_exactly_the_five_latest() -> None:
    vs = versions_of("src/x/main.c", 7, start=NOW - timedelta(days=7), step=timedelta(hours=1))
    plan = plan_retention(vs, PAPER_RULES, now=NOW)

    assert [v.version for v in plan.kept] == [3, 4, 5, 6, 7]
    assert [v.version for v in plan.removed] == [1, 2]
    assert plan.removed_bytes == 100 + 200
    by_version = {d.version.version: d for d in plan.decisions}
    assert by_version[1].reasons == ("beyond last 5 of rule '*.c'",)
    assert by_version[2].reasons == ("beyond last 5 of rule '*.c'",)
    assert by_version[3].reasons == ("last 5 of rule '*.c'",)
    assert by_version[7].reasons == ("latest version: never removed", "last 5 of rule '*.c'")
    assert all(d.rule == PAPER_RULES[0] for d in plan.decisions)


def test_paper_example_unlimited_and_only_latest_and_unmatched() -> None:
    start = NOW - timedelta(days=400)
    will = versions_of("my_last_will_and_testament", 12, start=start, step=timedelta(days=30))
    shopping = versions_of("home/todays_shopping_list", 4, start=start, step=timedelta(days=1))
    other = versions_of("notes.txt", 3, start=start, step=timedelta(days=1))
    plan = plan_retention([*will, *shopping, *other], PAPER_RULES, now=NOW)

    will_plan = plan.for_document("my_last_will_and_testament")
    assert len(will_plan) == 12 and all(d.keep for d in will_plan)
    assert will_plan[0].reasons == ("all versions kept by rule 'my_last_will_and_testament'",)

    shop_plan = plan.for_document("home/todays_shopping_list")
    assert [d.keep for d in shop_plan] == [False, False, False, True]
    assert shop_plan[0].reasons == ("beyond last 1 of rule 'todays_shopping_list'",)

    other_plan = plan.for_document("notes.txt")
    assert all(d.keep for d in other_plan)
    assert other_plan[0].reasons == ("no rule matches: kept (default)",)
    assert other_plan[0].rule is None


def test_first_matching_rule_wins() -> None:
    vs = versions_of("src/main.c", 4, start=NOW - timedelta(days=4), step=timedelta(days=1))
    specific_first = [RetentionRule.unlimited("src/main.c"), RetentionRule.last("*.c", 2)]
    general_first = list(reversed(specific_first))
    assert len(plan_retention(vs, specific_first, now=NOW).kept) == 4
    assert len(plan_retention(vs, general_first, now=NOW).kept) == 2


def test_daily_buckets_keep_the_newest_version_of_each_of_the_newest_days() -> None:
    t = datetime(2026, 11, 20, tzinfo=UTC)
    times = [
        t + timedelta(hours=9),  # v1  2026-11-20
        t + timedelta(hours=17),  # v2  2026-11-20  (newest that day)
        t + timedelta(days=2, hours=8),  # v3  2026-11-22  (no version on the 21st)
        t + timedelta(days=4, hours=1),  # v4  2026-11-24
        t + timedelta(days=4, hours=2),  # v5  2026-11-24
        t + timedelta(days=4, hours=3),  # v6  2026-11-24  (newest that day)
    ]
    vs = [VersionInfo("diary.md", i + 1, when, 10) for i, when in enumerate(times)]
    plan = plan_retention(vs, [RetentionRule("*.md", keep_daily=2)], now=NOW)
    reasons = {d.version.version: d.reasons for d in plan.decisions}

    assert [v.version for v in plan.kept] == [3, 6]
    assert reasons[6] == ("latest version: never removed", "daily bucket 2026-11-24 of rule '*.md'")
    assert reasons[3] == ("daily bucket 2026-11-22 of rule '*.md'",)
    assert reasons[5] == ("daily bucket 2026-11-24 keeps a newer version",)
    assert reasons[2] == (
        "daily bucket 2026-11-20 is beyond the newest 2 daily buckets of rule '*.md'",
    )

    # The empty day (the 21st) does not count, so three days reach back to the 20th.
    plan3 = plan_retention(vs, [RetentionRule("*.md", keep_daily=3)], now=NOW)
    assert [v.version for v in plan3.kept] == [2, 3, 6]


def test_buckets_use_utc_calendar_periods() -> None:
    # 23:30 at UTC-05:00 on the 23rd is 04:30 UTC on the 24th: the same UTC day as v2.
    est = timezone(timedelta(hours=-5))
    v1 = VersionInfo("a.md", 1, datetime(2026, 11, 23, 23, 30, tzinfo=est), 1)
    v2 = VersionInfo("a.md", 2, datetime(2026, 11, 24, 6, 0, tzinfo=UTC), 1)
    plan = plan_retention([v1, v2], [RetentionRule("*.md", keep_daily=5)], now=NOW)
    assert [v.version for v in plan.kept] == [2]
    assert plan.decisions[0].reasons == ("daily bucket 2026-11-24 keeps a newer version",)


@pytest.mark.parametrize(
    ("kind", "when", "label"),
    [
        ("hourly", datetime(2026, 11, 24, 7, 59, tzinfo=UTC), "hourly bucket 2026-11-24T07"),
        ("weekly", datetime(2026, 11, 24, tzinfo=UTC), "weekly bucket 2026-W48"),
        # ISO weeks: 1 January 2027 is a Friday, in week 53 of 2026.
        ("weekly", datetime(2027, 1, 1, tzinfo=UTC), "weekly bucket 2026-W53"),
        ("monthly", datetime(2026, 2, 28, 23, tzinfo=UTC), "monthly bucket 2026-02"),
        ("yearly", datetime(999, 12, 31, tzinfo=UTC), "yearly bucket 0999"),
    ],
)
def test_bucket_labels(kind: str, when: datetime, label: str) -> None:
    rule = RetentionRule("*", **{f"keep_{kind}": 1})  # type: ignore[arg-type]
    plan = plan_retention([VersionInfo("x", 1, when, 0)], [rule], now=NOW)
    assert plan.decisions[0].reasons[1] == f"{label} of rule '*'"


def test_weekly_and_monthly_and_yearly_thin_out_a_long_history() -> None:
    # One version a day for two years.
    start = datetime(2025, 1, 1, 12, tzinfo=UTC)
    vs = versions_of("db.sqlite", 730, start=start, step=timedelta(days=1))
    rule = RetentionRule("*.sqlite", keep_daily=7, keep_weekly=4, keep_monthly=6, keep_yearly=3)
    kept = plan_retention(vs, [rule], now=NOW).kept
    last = vs[-1].deposited_at  # 2026-12-31
    assert last == datetime(2026, 12, 31, 12, tzinfo=UTC)
    kept_days = {v.deposited_at.date().isoformat() for v in kept}
    # 7 daily: Dec 25..31; weekly 4 (Sundays end ISO weeks): Dec 27 (W52), Dec 20, Dec 13, and
    # Dec 31 itself (W53 of 2026); monthly 6: last day of Jul..Dec; yearly 3: Dec 31 2026 and
    # 2025 (only two years hold versions).
    expected = {f"2026-12-{d}" for d in range(25, 32)}
    expected |= {"2026-12-13", "2026-12-20"}
    expected |= {"2026-07-31", "2026-08-31", "2026-09-30", "2026-10-31", "2026-11-30"}
    expected |= {"2025-12-31"}
    assert kept_days == expected


def test_keep_within_is_measured_back_from_now() -> None:
    vs = versions_of("log.txt", 10, start=NOW - timedelta(days=9), step=timedelta(days=1))
    plan = plan_retention(vs, [RetentionRule("*.txt", keep_within=timedelta(days=3))], now=NOW)
    assert [v.version for v in plan.kept] == [7, 8, 9, 10]
    assert plan.decisions[0].reasons == ("deposited more than 3d before now (rule '*.txt')",)
    assert plan.decisions[6].reasons == ("within 3d of now (rule '*.txt')",)


def test_the_latest_version_survives_a_rule_that_keeps_none_of_the_others() -> None:
    # A file unchanged for a year: keep_within=1d alone would remove every version.
    vs = versions_of("old.txt", 3, start=NOW - timedelta(days=400), step=timedelta(days=1))
    plan = plan_retention(vs, [RetentionRule("*", keep_within=timedelta(days=1))], now=NOW)
    assert [v.version for v in plan.kept] == [3]
    assert plan.decisions[-1].reasons == ("latest version: never removed",)


def test_clauses_combine_by_union_and_reasons_list_every_clause() -> None:
    vs = versions_of("a.c", 6, start=NOW - timedelta(days=6), step=timedelta(days=1))
    rule = RetentionRule("*.c", keep_last=2, keep_within=timedelta(days=3, hours=12))
    plan = plan_retention(vs, [rule], now=NOW)
    assert [v.version for v in plan.kept] == [4, 5, 6]  # v4 is 3 days old: within 3d12h
    assert plan.decisions[0].reasons == (
        "beyond last 2 of rule '*.c'",
        "deposited more than 3d12h before now (rule '*.c')",
    )
    assert plan.decisions[3].reasons == ("within 3d12h of now (rule '*.c')",)


def test_newer_means_higher_version_not_later_clock() -> None:
    # A skewed clock put v3 earlier than v2; v3 is still the latest.
    vs = [
        VersionInfo("a.c", 1, NOW - timedelta(hours=3), 1),
        VersionInfo("a.c", 2, NOW - timedelta(hours=1), 1),
        VersionInfo("a.c", 3, NOW - timedelta(hours=2), 1),
    ]
    plan = plan_retention(vs, [RetentionRule.only_latest("*.c")], now=NOW)
    assert [v.version for v in plan.kept] == [3]


def test_match_key_lets_a_profile_match_relative_names() -> None:
    vs = versions_of("laptop/app/src/main.c", 3, start=NOW, step=timedelta(seconds=1))
    rules = [RetentionRule.only_latest("/src/main.c")]
    assert len(plan_retention(vs, rules, now=NOW).kept) == 3  # anchored: no match on full name
    plan = plan_retention(vs, rules, now=NOW, match_key=lambda n: n.removeprefix("laptop/app/"))
    assert len(plan.kept) == 1


def test_plan_sorted_and_empty_input() -> None:
    assert plan_retention([], PAPER_RULES, now=NOW).decisions == ()
    vs = [VersionInfo(n, v, NOW, 0) for n, v in [("b", 2), ("a", 1), ("b", 1), ("a", 2)]]
    plan = plan_retention(vs, [], now=NOW)
    assert [(d.version.name, d.version.version) for d in plan.decisions] == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("b", 2),
    ]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"keep_last": 0}, "keep_last"),
        ({"keep_last": -3}, "keep_last"),
        ({"keep_daily": 0}, "keep_daily"),
        ({"keep_yearly": 0}, "keep_yearly"),
        ({"keep_within": timedelta(0)}, "keep_within"),
        ({"keep_all": True, "keep_last": 3}, "keep_all"),
        ({}, "keeps nothing"),
    ],
)
def test_bad_rules_name_the_parameter(kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        RetentionRule("*.c", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("pattern", ["", "a**", "a//b", "../x", "src/", "[z-a]"])
def test_bad_patterns_name_the_parameter(pattern: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        RetentionRule.last(pattern, 1)


def test_wrong_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="keep_last"):
        RetentionRule("*", keep_last=True)
    with pytest.raises(TypeError, match="keep_within"):
        RetentionRule("*", keep_within=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rules"):
        plan_retention([], ["*.c"], now=NOW)  # type: ignore[list-item]


def test_bad_inputs_to_plan() -> None:
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="now"):
        plan_retention([], [], now=naive)
    with pytest.raises(ValueError, match=r"versions.*timezone-aware"):
        plan_retention([VersionInfo("a", 1, naive, 0)], [], now=NOW)
    with pytest.raises(ValueError, match=r"versions.*listed twice"):
        plan_retention([VersionInfo("a", 1, NOW, 0), VersionInfo("a", 1, NOW, 5)], [], now=NOW)
    with pytest.raises(ValueError, match=r"versions.*size"):
        plan_retention([VersionInfo("a", 1, NOW, -1)], [], now=NOW)


def test_durations() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("1w2d12h") == timedelta(days=9, hours=12)
    for bad in ["", "30", "1m", "1y", "d", "-1d", "0d", "1d ", "99999999999999w"]:
        with pytest.raises(ValueError, match="keep_within"):
            parse_duration(bad, param="keep_within")
    assert format_duration(timedelta(days=9, hours=12)) == "1w2d12h"
    assert format_duration(timedelta(minutes=90)) == "1h30m"


def test_rules_summary_for_dry_run() -> None:
    rules = [*PAPER_RULES, RetentionRule("*.md", keep_daily=7, keep_within=timedelta(days=2))]
    assert rules_summary(rules) == [
        "1. '*.c': last 5",
        "2. 'my_last_will_and_testament': all versions",
        "3. 'todays_shopping_list': last 1",
        "4. '*.md': daily 7, within 2d",
    ]


# ---- globs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*.c", "main.c", True),
        ("*.c", "src/x/main.c", True),  # the paper's "any c source file"
        ("*.c", "main.cc", False),
        ("*.c", "src.c/main.h", False),
        ("my_last_will_and_testament", "legal/my_last_will_and_testament", True),
        ("src/*.c", "src/main.c", True),
        ("src/*.c", "src/x/main.c", False),  # '*' never crosses '/'
        ("src/*.c", "lib/src/main.c", False),  # a '/' anchors at the top
        ("src/**/*.c", "src/main.c", True),  # '**' matches zero segments
        ("src/**/*.c", "src/a/b/main.c", True),
        ("**/test/*.py", "test/a.py", True),
        ("**/test/*.py", "a/b/test/c.py", True),
        ("build/**", "build/a/b.o", True),
        ("build/**", "build", False),
        ("/notes.txt", "notes.txt", True),
        ("/notes.txt", "a/notes.txt", False),
        ("?.c", "a.c", True),
        ("?.c", "ab.c", False),
        ("[!a]*.c", "b.c", True),
        ("[!a]*.c", "a.c", False),
        ("[a-c].h", "b.h", True),
        ("[*].h", "*.h", True),
        ("[*].h", "x.h", False),
        ("*.C", "main.c", False),  # case-sensitive
        (".*", "dir/.hidden", True),
        ("*", ".hidden", True),
    ],
)
def test_glob_semantics(pattern: str, name: str, expected: bool) -> None:
    assert Glob.parse(pattern).matches(name) is expected


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("[+--]", ["+", ",", "-"], ["a", "."]),  # a range ending in '-'
        ("[--0]", ["-", ".", "0"], ["+", "a"]),  # a range starting at '-'
        ("[a-c-e]", ["a", "b", "c", "-", "e"], ["d", "f"]),  # '-' right after a range
        ("[a&&b]", ["a", "&", "b"], ["c"]),
        ("[~~x]", ["~", "x"], ["y"]),
        ("[||]", ["|"], ["a"]),
        ("[\\]", ["\\"], ["a"]),
        ("[]a]", ["]", "a"], ["b"]),
        ("[!--0]x", ["ax"], ["-x", ".x", "0x"]),
    ],
)
def test_class_bodies_never_read_as_regex_set_operations(
    pattern: str, matching: list[str], not_matching: list[str]
) -> None:
    """Python warns (FutureWarning) that '--', '&&', '~~' and '||' in a class may become set
    operations; the translation escapes every character, keeping ranges, so none is there."""
    import fnmatch
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        glob = Glob.parse(pattern)
    for name in matching:
        assert glob.matches(name), name
        assert fnmatch.fnmatchcase(name, pattern), name
    for name in not_matching:
        assert not glob.matches(name), name
        assert not fnmatch.fnmatchcase(name, pattern), name


def test_directory_only_patterns() -> None:
    g = Glob.parse("obj/")
    assert g.dir_only and not g.anchored
    assert g.matches("a/obj", is_dir=True)
    assert not g.matches("a/obj")
    with pytest.raises(ValueError, match=r"pattern.*dir/\*\*"):
        Glob.parse("obj/", allow_dir_only=False)
