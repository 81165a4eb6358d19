"""docs/spec/backup-profile.md is tested against the code, so the two cannot drift apart.

Every ```toml block must parse as a profile; the first is the paper's example (§2.3.2) and is
checked key by key; the glob, selection and retention tables between their HTML-comment markers
are replayed row by row.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evault.client.profile import BackupProfile, ProfileRoot, parse_profile
from evault.retention import Glob, RetentionRule, VersionInfo

SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec" / "backup-profile.md"


def spec_text() -> str:
    return SPEC.read_text(encoding="utf-8")


def toml_blocks() -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```$", spec_text(), flags=re.M | re.S)


def table(marker: str) -> list[list[str]]:
    """Rows of the markdown table between ``<!-- marker:start -->`` and ``<!-- marker:end -->``."""
    match = re.search(
        rf"<!-- {marker}:start -->\n(.*?)<!-- {marker}:end -->", spec_text(), flags=re.S
    )
    assert match is not None, f"marker {marker} missing from {SPEC}"
    rows = []
    for line in match.group(1).strip().splitlines()[2:]:  # skip the header and its rule
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append([c[1:-1] if c.startswith("`") and c.endswith("`") else c for c in cells])
    assert rows, f"table {marker} is empty"
    return rows


def example_profile() -> BackupProfile:
    return parse_profile(toml_blocks()[0], source="backup-profile.md")


def test_every_toml_block_in_the_spec_is_a_valid_profile() -> None:
    blocks = toml_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        assert parse_profile(block, source="backup-profile.md").roots


def test_the_spec_example_is_the_papers_profile() -> None:
    p = example_profile()
    assert p.name == "application"
    assert p.roots == (
        ProfileRoot("/important/new/application", "application"),
        ProfileRoot("/home/alice/personal", "personal"),
    )
    assert {"*.c", "*.h"} <= set(p.include)
    assert "*.o" in p.exclude
    assert p.encrypt is True
    assert p.name_prefix == "alice-laptop"
    assert p.retention == (
        RetentionRule.last("*.c", 5),
        RetentionRule.unlimited("my_last_will_and_testament"),
        RetentionRule.only_latest("todays_shopping_list"),
        RetentionRule("journal/*.md", keep_daily=7, keep_weekly=4, keep_within=timedelta(days=2)),
    )
    # The prose under the example names two documents.
    assert p.document_name("application", "src/x/main.c") == "alice-laptop/application/src/x/main.c"
    assert (
        p.document_name("personal", "todays_shopping_list")
        == "alice-laptop/personal/todays_shopping_list"
    )


def test_glob_table() -> None:
    rows = table("glob-examples")
    assert len(rows) >= 10
    for pattern, path, expected in rows:
        assert expected in ("yes", "no")
        assert Glob.parse(pattern).matches(path) is (expected == "yes"), (pattern, path)


def test_selection_table() -> None:
    selector = example_profile().selector
    for path, kind, backed_up, reason in table("selection-examples"):
        verdict = selector.classify(path, kind == "dir")
        assert verdict.selected is (backed_up == "yes"), path
        assert verdict.reason == reason, path


def test_retention_table() -> None:
    p = example_profile()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    main = [
        VersionInfo(
            p.document_name("application", "src/x/main.c"), i, now - timedelta(days=9 - i), 1
        )
        for i in range(1, 8)
    ]
    journal_days = {1: 20, 2: 22, 3: 24, 4: 24, 5: 25}
    journal = [
        VersionInfo(
            p.document_name("personal", "journal/a.md"),
            i,
            datetime(2026, 11, day, 8 + i, tzinfo=UTC),
            1,
        )
        for i, day in journal_days.items()
    ]
    header = [VersionInfo(p.document_name("application", "include/vault.h"), 1, now, 1)]
    plan = p.plan_retention([*main, *journal, *header], now=now)
    decisions = {(p.locate(d.version.name)[1], d.version.version): d for d in plan.decisions}  # type: ignore[index]

    for document, version, fate, reasons in table("retention-examples"):
        d = decisions[(document, int(version))]
        assert d.keep is (fate == "keep"), (document, version)
        assert "; ".join(d.reasons) == reasons, (document, version)
    assert [v.version for v in plan.kept if v.name.endswith("main.c")] == [3, 4, 5, 6, 7]


@pytest.mark.parametrize(
    "key",
    [
        "format_version",
        "name",
        "roots",
        "include",
        "exclude",
        "encrypt",
        "name_prefix",
        "keep_all",
        "keep_last",
        "keep_daily",
        "keep_within",
    ],
)
def test_every_key_is_documented(key: str) -> None:
    assert f"| `{key}`" in spec_text() or f"`{key}`," in spec_text()
