"""Backup profiles: parsing and validation, include/exclude selection, document names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evault.client.profile import (
    BackupProfile,
    FileSelector,
    ProfileRoot,
    explain_selection,
    parse_profile,
    select_files,
)
from evault.errors import ConfigError, ProfileError
from evault.retention import RetentionRule, VersionInfo

PAPER = """
name = "application"
roots = ["/important/new/application"]
include = ["*.c", "*.h"]
exclude = ["*.o"]

[[retention]]
pattern = "*.c"
keep_last = 5
"""

TREE = [
    ("main.c", False),
    ("main.o", False),
    ("util.h", False),
    ("README", False),
    ("src", True),
    ("src/x", True),
    ("src/x/deep.c", False),
    ("src/x/deep.o", False),
    ("src/x/deep.c.o", False),
    ("build", True),
    ("build/gen.c", False),
    ("build/sub", True),
    ("build/sub/gen.h", False),
]


# ---- selection ------------------------------------------------------------------------------


def test_the_papers_selection_every_c_and_h_file_and_no_object_files() -> None:
    assert select_files(TREE, ["*.c", "*.h"], ["*.o"]) == [
        "build/gen.c",
        "build/sub/gen.h",
        "main.c",
        "src/x/deep.c",
        "util.h",
    ]


def test_exclude_wins_over_include() -> None:
    # 'deep.c.o' would not be included anyway; '*' includes everything, then '*.o' removes.
    assert select_files(TREE, ["*"], ["*.o"]) == [
        "README",
        "build/gen.c",
        "build/sub/gen.h",
        "main.c",
        "src/x/deep.c",
        "util.h",
    ]
    assert select_files(TREE, ["main.c"], ["main.c"]) == []


def test_an_excluded_directory_prunes_its_subtree() -> None:
    selected = select_files(TREE, ["*.c", "*.h"], ["build/"])
    assert selected == ["main.c", "src/x/deep.c", "util.h"]
    # Same answer when the listing holds no directory entries (a flat list of files).
    files_only = [(p, d) for p, d in TREE if not d]
    assert select_files(files_only, ["*.c", "*.h"], ["build/"]) == selected
    # A nested exclusion of an anchored directory.
    assert select_files(TREE, ["*.c"], ["src/x"]) == ["build/gen.c", "main.c"]


def test_directory_verdicts_for_a_walker() -> None:
    sel = FileSelector.from_patterns(["*.c"], ["build/", "*.tmp"])
    assert sel.directory("src").selected
    build = sel.directory("build")
    assert not build.selected and build.reason == "excluded by 'build/' (subtree pruned)"
    inner = sel.directory("build/sub")
    assert not inner.selected and inner.reason == "under excluded directory 'build' ('build/')"
    # A pattern without a trailing '/' excludes files and directories alike.
    assert not sel.directory("a/cache.tmp").selected


def test_directory_only_patterns_never_match_files() -> None:
    listing = [("obj", False), ("x/obj", True), ("x/obj/a.c", False), ("obj.c", False)]
    assert select_files(listing, ["*", "*.c"], ["obj/"]) == ["obj", "obj.c"]


def test_an_include_that_matches_a_directory_takes_its_subtree() -> None:
    listing = [("src/a.txt", False), ("src/b/c.txt", False), ("lib/src", False), ("doc.txt", False)]
    assert select_files(listing, ["src/"], []) == ["src/a.txt", "src/b/c.txt"]
    assert select_files(listing, ["/src"], []) == ["src/a.txt", "src/b/c.txt"]


def test_no_include_means_every_file() -> None:
    assert select_files(TREE, [], ["*.o", "build/"]) == [
        "README",
        "main.c",
        "src/x/deep.c",
        "util.h",
    ]


def test_explain_gives_a_reason_for_every_entry() -> None:
    verdicts = {s.path: s for s in explain_selection(TREE, ["*.c", "*.h"], ["*.o", "build/"])}
    assert set(verdicts) == {p for p, _ in TREE}
    assert verdicts["main.c"].reason == "included by '*.c'"
    assert verdicts["main.o"].reason == "excluded by '*.o'"
    assert verdicts["README"].reason == "not matched by any include pattern"
    assert verdicts["build/sub/gen.h"].reason == "under excluded directory 'build' ('build/')"
    assert verdicts["src/x"].selected and verdicts["src/x"].is_dir


@pytest.mark.parametrize("bad", ["/abs", "a//b", "./a", "a/../b", ""])
def test_listing_paths_must_be_clean_relative_paths(bad: str) -> None:
    with pytest.raises(ValueError, match="listing"):
        select_files([(bad, False)], [], [])


def test_bad_patterns_name_their_list() -> None:
    with pytest.raises(ValueError, match="exclude"):
        select_files([], [], ["a**"])
    with pytest.raises(ValueError, match="include"):
        select_files([], ["x//y"], [])
    with pytest.raises(TypeError, match="include"):
        select_files([], "*.c", [])


SEGMENTS = st.sampled_from(["a", "b", "src", "build", "x.c", "y.o", "obj"])


@given(
    st.lists(st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join), max_size=20),
    st.lists(st.sampled_from(["*.c", "*.o", "src/**", "a", "/b", "obj/", "**/x.c"]), max_size=3),
    st.lists(st.sampled_from(["*.o", "build/", "src", "a/*", "**/obj/**"]), max_size=3),
)
def test_selection_properties(files: list[str], include: list[str], exclude: list[str]) -> None:
    listing = [(f, False) for f in files]
    selected = select_files(listing, include, exclude)
    assert selected == sorted(set(selected))
    assert set(selected) <= set(files)
    # Exclude wins: adding exclusions only removes; a file matched by an exclude is never chosen.
    assert set(select_files(listing, include, [*exclude, "*.c"])) <= set(selected)
    assert not any(f.endswith(".c") for f in select_files(listing, include, [*exclude, "*.c"]))
    # Pattern order and listing order do not matter.
    assert select_files(reversed(listing), include[::-1], exclude[::-1]) == selected
    # More include patterns never select less (an empty include already means every file).
    if include:
        assert set(selected) <= set(select_files(listing, [*include, "*.o"], exclude))


# ---- parsing ---------------------------------------------------------------------------------


def test_parse_the_papers_profile() -> None:
    p = parse_profile(PAPER, source="app.toml")
    assert p.name == "application"
    assert p.roots == (ProfileRoot("/important/new/application", "application"),)
    assert p.include == ("*.c", "*.h")
    assert p.exclude == ("*.o",)
    assert p.retention == (RetentionRule.last("*.c", 5),)
    assert p.encrypt is False and p.name_prefix == ""
    assert p.source == "app.toml"
    assert parse_profile(PAPER.encode(), source="app.toml") == p


def test_names_are_prefix_label_relative_path_and_reversible() -> None:
    p = parse_profile(
        'name = "n"\nname_prefix = "/laptop/work/"\n'
        'roots = ["/srv/app", { path = "/home/a/app", label = "home-app" }]\n'
    )
    assert p.name_prefix == "laptop/work"
    assert p.document_name("app", "src/main.c") == "laptop/work/app/src/main.c"
    assert p.document_name(p.roots[1], "x") == "laptop/work/home-app/x"
    assert p.locate("laptop/work/app/src/main.c") == (p.roots[0], "src/main.c")
    assert p.locate("laptop/work/home-app/x") == (p.roots[1], "x")
    for foreign in ["laptop/work/other/x", "laptop/app/x", "laptop/work/app", "app/src/main.c"]:
        assert p.locate(foreign) is None and not p.owns(foreign)
    with pytest.raises(ValueError, match="label"):
        p.document_name("nope", "x")
    with pytest.raises(ValueError, match="relative_path"):
        p.document_name("app", "../etc/passwd")


@given(st.lists(st.sampled_from(["a", "b.c", "dir", "x y", "é"]), min_size=1, max_size=5))
def test_document_name_round_trips(segments: list[str]) -> None:
    p = parse_profile('name = "n"\nname_prefix = "pre"\nroots = ["/r/one", "/r/two"]\n')
    relative = "/".join(segments)
    for root in p.roots:
        assert p.locate(p.document_name(root, relative)) == (root, relative)


def test_profile_retention_patterns_see_root_relative_paths() -> None:
    p = parse_profile(
        'name = "n"\nname_prefix = "pre"\nroots = ["/srv/app"]\n'
        '[[retention]]\npattern = "/todo.txt"\nkeep_last = 1\n'
        '[[retention]]\npattern = "*.c"\nkeep_last = 2\n'
    )
    now = datetime(2026, 11, 24, tzinfo=UTC)

    def versions(relative: str) -> list[VersionInfo]:
        name = p.document_name("app", relative)
        return [VersionInfo(name, i, now - timedelta(days=5 - i), 1) for i in range(1, 5)]

    plan = p.plan_retention([*versions("todo.txt"), *versions("sub/todo.txt")], now=now)
    assert len(plan.for_document("pre/app/todo.txt")) == 4
    assert [d.keep for d in plan.for_document("pre/app/todo.txt")] == [False] * 3 + [True]
    assert all(d.keep for d in plan.for_document("pre/app/sub/todo.txt"))
    with pytest.raises(ValueError, match=r"versions.*do not belong"):
        p.plan_retention([VersionInfo("other/x.c", 1, now, 1)], now=now)


def test_a_root_without_a_basename_needs_a_label() -> None:
    assert parse_profile('name = "n"\nroots = [{ path = "/", label = "sys" }]').roots[0].label == (
        "sys"
    )


def errors_of(text: str) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        parse_profile(text, source="p.toml")
    return info.value


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('roots = ["/a"]', "name", "needs a 'name'"),
        ('name = "has space"\nroots = ["/a"]', "name", "letters, digits"),
        ('name = 3\nroots = ["/a"]', "name", "must be a string, got an integer"),
        ('name = "n"', "roots", "needs 'roots'"),
        ('name = "n"\nroots = []', "roots", "non-empty list"),
        ('name = "n"\nroots = "/a"', "roots", "non-empty list"),
        ('name = "n"\nroots = ["rel/dir"]', "roots[1]", "absolute"),
        ('name = "n"\nroots = ["/"]', "roots[1]", "label"),
        ('name = "n"\nroots = ["/a/x", "/b/x"]', "roots[2]", "label 'x' is already used"),
        ('name = "n"\nroots = ["/a", "/a/b"]', "roots[2]", "overlaps"),
        ('name = "n"\nroots = [{ label = "x" }]', "roots[1]", "needs a 'path'"),
        ('name = "n"\nroots = [{ path = "/a", lable = "x" }]', "roots[1].lable", "unknown key"),
        ('name = "n"\nroots = [{ path = "/a", label = "x/y" }]', "roots[1].label", "segment"),
        ('name = "n"\nroots = ["/a"]\ninclude = []', "include", "selects nothing"),
        ('name = "n"\nroots = ["/a"]\ninclude = "*.c"', "include", "list of glob patterns"),
        ('name = "n"\nroots = ["/a"]\nexclude = ["*.o", 3]', "exclude[2]", "must be a string"),
        ('name = "n"\nroots = ["/a"]\nexclude = ["a**b"]', "exclude[1]", "whole path segment"),
        ('name = "n"\nroots = ["/a"]\nexclude = ["!keep.o"]', "exclude[1]", "negation"),
        ('name = "n"\nroots = ["/a"]\nencrypt = "yes"', "encrypt", "true or false"),
        ('name = "n"\nroots = ["/a"]\nname_prefix = "a/../b"', "name_prefix", "'..'"),
        ('name = "n"\nroots = ["/a"]\nformat_version = 2', "format_version", "format 1"),
        ('name = "n"\nroots = ["/a"]\nincludes = ["*.c"]', "includes", "unknown key"),
        ('name = "n"\nroots = ["/a"]\nretention = 5', "retention", "[[retention]]"),
        ('name = "n"\nroots = ["/a"]\n[[retention]]\nkeep_last = 5', "retention[1]", "pattern"),
        (
            'name = "n"\nroots = ["/a"]\n[[retention]]\npattern = "*.c"\nkeep_lats = 5',
            "retention[1].keep_lats",
            "unknown key",
        ),
        (
            'name = "n"\nroots = ["/a"]\n[[retention]]\npattern = "*"\nkeep_last = 1\n'
            '[[retention]]\npattern = "*.c"\nkeep_last = 0',
            "retention[2].keep_last",
            "integer >= 1, got 0",
        ),
        (
            'name = "n"\nroots = ["/a"]\n[[retention]]\npattern = "*.c"\nkeep_daily = true',
            "retention[1].keep_daily",
            "integer >= 1",
        ),
        (
            'name = "n"\nroots = ["/a"]\n[[retention]]\npattern = "*.c"\nkeep_within = "1m"',
            "retention[1].keep_within",
            "units w, d, h",
        ),
        (
            'name = "n"\nroots = ["/a"]\n[[retention]]\npattern = "*.c"',
            "retention[1]",
            "keeps nothing",
        ),
        (
            'name = "n"\nroots = ["/a"]\n[[retention]]\npattern = "*.c"\nkeep_all = true\n'
            "keep_last = 2",
            "retention[1]",
            "cannot be combined",
        ),
        (
            'name = "n"\nroots = ["/a"]\n[[retention]]\npattern = "src/"\nkeep_last = 2',
            "retention[1]",
            "dir/**",
        ),
    ],
)
def test_validation_errors_name_the_key_in_one_sentence(text: str, field: str, words: str) -> None:
    err = errors_of(text)
    assert isinstance(err, ConfigError) and err.code == "profile_error"
    assert err.field == field
    assert err.source == "p.toml"
    assert words in err.problem
    assert str(err).startswith(f"backup profile p.toml: {field}: ")
    assert "\n" not in str(err)


def test_toml_syntax_and_encoding_errors() -> None:
    err = errors_of('name = "n"\nroots = ["/a"]\nexclude = [*.o]\n')
    assert err.field is None and "not valid TOML" in str(err) and "line 3" in str(err)
    with pytest.raises(ProfileError, match="not UTF-8"):
        parse_profile(b'name = "\xff"')


def test_profile_is_a_frozen_value() -> None:
    p = parse_profile(PAPER)
    assert isinstance(p, BackupProfile)
    with pytest.raises(AttributeError):
        p.name = "other"  # type: ignore[misc]
    assert p == parse_profile(PAPER)
