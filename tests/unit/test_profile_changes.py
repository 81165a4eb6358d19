"""The archive bit of backup profiles: evault.client.changes (pure part)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evault.client.changes import (
    ChangeKind,
    FileStat,
    FileState,
    decide_change,
    plan_changes,
)

OLD = hashlib.sha256(b"old content").digest()
NEW = hashlib.sha256(b"new content").digest()
T0 = 1_700_000_000_000_000_000  # ns
HOUR = 3_600_000_000_000


class CountingHasher:
    """A hash_file that records how often it was called."""

    def __init__(self, digest: bytes) -> None:
        self.digest = digest
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.digest


def test_a_file_without_state_is_new_and_hashed_once() -> None:
    h = CountingHasher(NEW)
    d = decide_change("app/a.c", None, FileStat(11, T0), h, recorded_ns=T0 + HOUR)
    assert d.kind is ChangeKind.NEW and d.needs_deposit
    assert h.calls == 1 and d.sha256 == NEW
    assert d.new_state == FileState(11, T0, NEW, T0 + HOUR)
    assert not d.record_without_deposit  # recorded only after a verified deposit


def test_equal_size_and_mtime_is_unchanged_without_reading_the_file() -> None:
    h = CountingHasher(NEW)  # would say "modified" if it were asked
    prev = FileState(11, T0, OLD, recorded_ns=T0 + HOUR)
    d = decide_change("a", prev, FileStat(11, T0), h)
    assert d.kind is ChangeKind.UNCHANGED and not d.needs_deposit
    assert h.calls == 0 and d.sha256 is None
    assert d.new_state == prev and not d.record_without_deposit
    assert d.reason == "size and mtime unchanged"


def test_a_size_change_is_modified() -> None:
    h = CountingHasher(NEW)
    d = decide_change("a", FileState(11, T0, OLD), FileStat(12, T0), h)
    assert d.kind is ChangeKind.MODIFIED and d.needs_deposit
    assert d.reason == "size changed from 11 to 12 bytes"
    assert h.calls == 1 and d.new_state.sha256 == NEW  # hashed once, for the deposit and state


def test_new_mtime_same_content_is_touched_and_not_deposited() -> None:
    h = CountingHasher(OLD)
    d = decide_change("a", FileState(11, T0, OLD), FileStat(11, T0 + HOUR), h, recorded_ns=5)
    assert d.kind is ChangeKind.TOUCHED and d.kind.value == "touched-but-same-content"
    assert not d.needs_deposit and d.record_without_deposit
    assert d.new_state == FileState(11, T0 + HOUR, OLD, 5)
    assert h.calls == 1


def test_new_mtime_new_content_is_modified() -> None:
    d = decide_change("a", FileState(11, T0, OLD), FileStat(11, T0 + 1), CountingHasher(NEW))
    assert d.kind is ChangeKind.MODIFIED and d.reason == "content changed (SHA-256 differs)"


def test_racily_clean_files_are_rehashed() -> None:
    # The state was taken 1 s after the file's mtime: a write in the same tick could hide.
    prev = FileState(11, T0, OLD, recorded_ns=T0 + 1_000_000_000)
    same = CountingHasher(OLD)
    d = decide_change("a", prev, FileStat(11, T0), same, recorded_ns=T0 + HOUR)
    assert d.kind is ChangeKind.UNCHANGED and same.calls == 1
    # Re-recorded with the later time, so the next run trusts size and mtime again.
    assert d.record_without_deposit and d.new_state.recorded_ns == T0 + HOUR
    after = decide_change("a", d.new_state, FileStat(11, T0), CountingHasher(NEW))
    assert after.kind is ChangeKind.UNCHANGED and after.sha256 is None

    changed = decide_change("a", prev, FileStat(11, T0), CountingHasher(NEW))
    assert changed.kind is ChangeKind.MODIFIED and "same timestamp tick" in changed.reason

    # Granularity 0 turns the check off; a state without recorded_ns cannot be checked.
    assert decide_change("a", prev, FileStat(11, T0), same, mtime_granularity_ns=0).sha256 is None
    plain = FileState(11, T0, OLD)
    assert decide_change("a", plain, FileStat(11, T0), CountingHasher(NEW)).sha256 is None


def test_bad_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="sha256"):
        FileState(1, T0, b"short")
    with pytest.raises(ValueError, match="size"):
        FileStat(-1, T0)
    with pytest.raises(TypeError, match="mtime_ns"):
        FileStat(1, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"hash_file\(\)"):
        decide_change("a", None, FileStat(1, T0), lambda: b"x" * 31)
    with pytest.raises(TypeError, match="current"):
        decide_change("a", None, (1, T0), lambda: NEW)  # type: ignore[arg-type]


def test_plan_changes_over_a_tree() -> None:
    previous = {
        "app/same.c": FileState(3, T0, OLD),
        "app/touched.c": FileState(3, T0, OLD),
        "app/edited.c": FileState(3, T0, OLD),
        "app/gone.c": FileState(3, T0, OLD),
    }
    current = [
        ("app/same.c", FileStat(3, T0)),
        ("app/touched.c", FileStat(3, T0 + HOUR)),
        ("app/edited.c", FileStat(4, T0 + HOUR)),
        ("app/fresh.c", FileStat(9, T0)),
    ]
    contents = {"app/touched.c": OLD, "app/edited.c": NEW, "app/fresh.c": NEW}
    asked: list[str] = []

    def hash_file(key: str) -> bytes:
        asked.append(key)
        return contents[key]

    plan = plan_changes(current, previous, hash_file)
    kinds = {d.key: d.kind for d in plan.decisions}
    assert kinds == {
        "app/same.c": ChangeKind.UNCHANGED,
        "app/touched.c": ChangeKind.TOUCHED,
        "app/edited.c": ChangeKind.MODIFIED,
        "app/fresh.c": ChangeKind.NEW,
    }
    assert [d.key for d in plan.decisions] == sorted(kinds)
    assert [d.key for d in plan.to_deposit] == ["app/edited.c", "app/fresh.c"]
    assert plan.vanished == ("app/gone.c",)
    assert plan.count(ChangeKind.UNCHANGED) == 1
    assert sorted(asked) == ["app/edited.c", "app/fresh.c", "app/touched.c"]  # not same.c
    with pytest.raises(ValueError, match="twice"):
        plan_changes([current[0], current[0]], previous, hash_file)


@given(
    st.integers(0, 10),
    st.integers(0, 10),
    st.integers(T0 - 5, T0 + 5),
    st.integers(T0 - 5, T0 + 5),
    st.booleans(),
)
def test_a_change_of_content_is_never_missed_unless_stat_is_identical(
    old_size: int, new_size: int, old_mtime: int, new_mtime: int, same_content: bool
) -> None:
    prev = FileState(old_size, old_mtime, OLD)
    current_digest = OLD if same_content else NEW
    d = decide_change("a", prev, FileStat(new_size, new_mtime), lambda: current_digest)
    stat_identical = (old_size, old_mtime) == (new_size, new_mtime)
    if stat_identical:
        assert d.kind is ChangeKind.UNCHANGED
    elif not same_content or old_size != new_size:
        assert d.needs_deposit
    else:
        assert d.kind is ChangeKind.TOUCHED
    # Whatever happened, the state to record describes the file as it is now.
    assert (d.new_state.size, d.new_state.mtime_ns) == (new_size, new_mtime)
