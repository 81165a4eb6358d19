"""The catalog's naming rules (pure functions; see evault.catalog.names)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evault.catalog.names import (
    MAX_DOCUMENT_NAME_CHARS,
    canonical_user_id,
    validate_document_name,
    validate_profile_text,
)
from evault.errors import BadName


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "report.pdf",
        "home/me/.bashrc",  # hidden files are fine: only "." and ".." segments are not
        "home/me/..hidden",
        "a b/c d",  # inner spaces
        "Zürich/Übersicht – 2026.ods",
        "日本語/ファイル",
        "emoji 👩‍💻.txt",  # contains U+200D ZERO WIDTH JOINER, which emoji need
        "back\\slash",
        "x" * MAX_DOCUMENT_NAME_CHARS,
    ],
)
def test_valid_document_names_are_returned_unchanged(name: str) -> None:
    assert validate_document_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * (MAX_DOCUMENT_NAME_CHARS + 1), "256 characters"),
        ("/etc/passwd", "start or end with '/'"),
        ("dir/", "start or end with '/'"),
        ("a//b", "empty path segment"),
        ("a/./b", "'.' path segment"),
        ("..", "'..' path segment"),
        ("a/../../b", "'..' path segment"),
        ("nul\x00byte", "control character (U+0000)"),
        ("tab\there", "control character (U+0009)"),
        ("new\nline", "control character (U+000A)"),
        ("del\x7f", "control character (U+007F)"),
        ("c1\x85", "control character (U+0085)"),
        ("line\u2028sep", "line separator"),
        ("para\u2029sep", "paragraph separator"),
        ("invoice\u202efdp.exe", "text-reordering"),  # right-to-left override spoofing
        ("\ufeffbom", "invisible"),
        ("bad\udcffutf8", "surrogate"),
        (" leading", "white space"),
        ("trailing ", "white space"),
        ("trailing\u3000", "white space"),  # ideographic space
    ],
)
def test_invalid_document_names(name: str, reason: str) -> None:
    with pytest.raises(BadName) as info:
        validate_document_name(name)
    assert reason in str(info.value)
    assert info.value.field == "document name"
    assert "\n" not in str(info.value)  # the offending name is shown escaped


def test_document_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="name"):
        validate_document_name(b"bytes")  # type: ignore[arg-type]


@given(st.text(min_size=1, max_size=300))
def test_accepted_names_satisfy_every_rule(name: str) -> None:
    try:
        accepted = validate_document_name(name)
    except BadName:
        return
    assert accepted == name
    assert 1 <= len(name) <= MAX_DOCUMENT_NAME_CHARS
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name)
    name.encode("utf-8")  # no lone surrogates: always valid UTF-8
    assert name == name.strip()
    assert all(segment not in ("", ".", "..") for segment in name.split("/"))


@given(
    st.text(min_size=0, max_size=20),
    st.characters(categories=["Cc"]),
    st.text(min_size=0, max_size=20),
)
def test_any_control_character_is_rejected(before: str, control: str, after: str) -> None:
    with pytest.raises(BadName):
        validate_document_name("a" + before + control + after + "z")


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("alice", "alice"), ("Alice", "alice"), ("B.O_B-42", "b.o_b-42"), ("0xy", "0xy")],
)
def test_user_ids_fold_to_lower_case(raw: str, canonical: str) -> None:
    assert canonical_user_id(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    ["ab", "a" * 65, "_alice", ".alice", "al ice", "alice!", "ålice", "\u212aelvin", "ａlice", ""],
)
def test_bad_user_ids(raw: str) -> None:
    with pytest.raises(BadName) as info:
        canonical_user_id(raw)
    assert info.value.field == "user_id"


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{2,63}", fullmatch=True))
def test_user_id_folding_is_idempotent(raw: str) -> None:
    once = canonical_user_id(raw)
    assert canonical_user_id(once) == once
    assert canonical_user_id(raw.upper()) == once


def test_profile_text() -> None:
    assert validate_profile_text("contact", "", max_chars=10, required=False) == ""
    with pytest.raises(BadName, match="empty"):
        validate_profile_text("name", "   ", max_chars=10, required=True)
    with pytest.raises(BadName, match="limit is 10"):
        validate_profile_text("name", "x" * 11, max_chars=10, required=True)
