"""The node's slice store: atomic durable commits, crash recovery (fsck), disk full, deletes."""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import IO

import pytest

from evault.errors import (
    BadRange,
    DepositCancelled,
    InsufficientStorage,
    ObjectDamaged,
    ObjectExists,
    ObjectMissing,
    StoreMismatch,
)
from evault.store import DiskSliceStore, ObjectRecord, SliceStore

VAULT = "ab" * 16
BLOCK = 1000


def oid(k: int) -> str:
    return hashlib.sha256(f"object {k}".encode()).hexdigest()


def blocks_for(k: int, segments: int, last: int = BLOCK) -> list[bytes]:
    out = []
    for i in range(segments):
        size = BLOCK if i < segments - 1 else last
        out.append(bytes([(k + i) % 256]) * size)
    return out


def record_for(object_id: str, blocks: list[bytes], **overrides: object) -> ObjectRecord:
    fields: dict[str, object] = {
        "object_id": object_id,
        "owner": "alice",
        "name": "doc.txt",
        "version": 1,
        "statement": b'{"statement":' + object_id.encode() + b"}",
        "fv": tuple(hashlib.sha256(bytes([j])).digest() for j in range(5)),
        "leaves": b"".join(hashlib.sha256(b).digest() for b in blocks),
        "slice_index": 2,
        "slice_bytes": sum(len(b) for b in blocks),
        "segment_count": len(blocks),
        "block_bytes": BLOCK,
        "created_at": "2026-11-25T12:00:00Z",
    }
    fields.update(overrides)
    return ObjectRecord(**fields)  # type: ignore[arg-type]


def deposit(store: DiskSliceStore, k: int, segments: int = 3, last: int = 400) -> ObjectRecord:
    blocks = blocks_for(k, segments, last)
    record = record_for(oid(k), blocks)
    with store.begin(record.object_id) as writer:
        for block in blocks:
            writer.write(block)
        writer.commit(record)
    return record


@pytest.fixture
def store(tmp_path: Path) -> DiskSliceStore:
    s = DiskSliceStore(tmp_path / "data", vault=VAULT, slice_index=2)
    yield s  # type: ignore[misc]
    s.close()


def reopen(store: DiskSliceStore) -> DiskSliceStore:
    store.close()
    return DiskSliceStore(store.data_dir, vault=VAULT, slice_index=2)


def test_disk_store_satisfies_the_protocol(store: DiskSliceStore) -> None:
    seam: SliceStore = store
    assert seam.count() == 0


def test_index_is_wal_with_full_sync(store: DiskSliceStore) -> None:
    db = sqlite3.connect(store.data_dir / "index.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    # synchronous is per connection: ask the store's own (2 = FULL).
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_commit_then_read_back_every_part(store: DiskSliceStore) -> None:
    record = deposit(store, 1, segments=3, last=400)
    got = store.get(record.object_id)
    assert got == record
    assert store.has_committed(record.object_id)
    assert store.count() == 1
    with store.open_slice(record.object_id) as reader:
        assert reader.record.leaves == record.leaves
        data = b"".join(reader.iter_blocks(333))
    assert data == b"".join(blocks_for(1, 3, 400))
    with store.open_slice(record.object_id, from_segment=2) as reader:
        assert b"".join(reader.iter_blocks(10_000)) == blocks_for(1, 3, 400)[2]
    with store.open_slice(record.object_id, from_segment=3) as reader:
        assert b"".join(reader.iter_blocks(10_000)) == b""
    for beyond in (4, -1):
        with pytest.raises(BadRange):
            store.open_slice(record.object_id, from_segment=beyond)
    assert store.slice_path(record.object_id).stat().st_size == 2400


def test_reads_are_bounded_by_the_chunk_size(store: DiskSliceStore) -> None:
    record = deposit(store, 2, segments=4)
    with store.open_slice(record.object_id) as reader:
        sizes = [len(c) for c in reader.iter_blocks(700)]
    assert max(sizes) == 700
    assert sum(sizes) == record.slice_bytes


def test_empty_document_has_no_segments(store: DiskSliceStore) -> None:
    record = record_for(oid(3), [])
    with store.begin(record.object_id) as writer:
        writer.commit(record)
    with store.open_slice(record.object_id) as reader:
        assert list(reader.iter_blocks(100)) == []
    assert store.get(record.object_id).segment_count == 0


def test_nothing_is_visible_before_commit(store: DiskSliceStore) -> None:
    writer = store.begin(oid(4))
    writer.write(b"x" * 500)
    assert not store.has_committed(oid(4))
    assert store.list_objects(None, 10).objects == ()
    with pytest.raises(ObjectMissing):
        store.get(oid(4))
    writer.abort()
    assert list(store.slice_path(oid(4)).parent.iterdir()) == []


def test_versions_are_never_rewritten(store: DiskSliceStore) -> None:
    deposit(store, 5)
    with pytest.raises(ObjectExists) as info:
        store.begin(oid(5))
    assert not info.value.in_progress


def test_a_second_deposit_of_the_same_id_is_refused_while_one_runs(store: DiskSliceStore) -> None:
    with store.begin(oid(6)):
        with pytest.raises(ObjectExists) as info:
            store.begin(oid(6))
        assert info.value.in_progress
    # Once the first is aborted the id is free again.
    deposit(store, 6)
    assert store.has_committed(oid(6))


def test_commit_refuses_a_record_that_does_not_match_the_bytes(store: DiskSliceStore) -> None:
    blocks = blocks_for(7, 2)
    with store.begin(oid(7)) as writer:
        writer.write(blocks[0])
        with pytest.raises(ValueError, match="slice_bytes"):
            writer.commit(record_for(oid(7), blocks))
    assert not store.has_committed(oid(7))


def test_delete_is_idempotent(store: DiskSliceStore) -> None:
    record = deposit(store, 8)
    assert store.delete(record.object_id) is True
    assert store.delete(record.object_id) is False
    assert store.delete(oid(999)) is False
    assert not store.slice_path(record.object_id).exists()
    with pytest.raises(ObjectMissing):
        store.get(record.object_id)
    # A deleted version may be deposited again (the gateway discards failed deposits).
    deposit(store, 8)
    assert store.count() == 1


def test_delete_cancels_a_running_deposit(store: DiskSliceStore) -> None:
    blocks = blocks_for(9, 2)
    with store.begin(oid(9)) as writer:
        for b in blocks:
            writer.write(b)
        store.delete(oid(9))
        with pytest.raises(DepositCancelled):
            writer.commit(record_for(oid(9), blocks))
    assert not store.has_committed(oid(9))
    assert list(store.slice_path(oid(9)).parent.iterdir()) == []


def test_listing_pages_through_committed_objects_in_id_order(store: DiskSliceStore) -> None:
    ids = sorted(deposit(store, k, segments=1).object_id for k in range(7))
    with store.begin(oid(100)) as writer:  # in progress: never listed
        writer.write(b"z")
        seen: list[str] = []
        after = None
        while True:
            page = store.list_objects(after, 3)
            seen += [object_id for object_id, _ in page.objects]
            assert all(st.startswith(b'{"statement":') for _, st in page.objects)
            if page.next_after is None:
                break
            after = page.next_after
    assert seen == ids


# --- crash recovery ------------------------------------------------------------------------


def test_fsck_removes_temp_files_and_orphans_and_marks_damage(store: DiskSliceStore) -> None:
    kept = deposit(store, 10)
    missing = deposit(store, 11)
    short = deposit(store, 12)
    store.slice_path(missing.object_id).unlink()
    with store.slice_path(short.object_id).open("r+b") as fh:
        fh.truncate(10)
    orphan = store.slice_path(oid(13))
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"left by a crash between rename and index commit")
    temp = store.slice_path(oid(14)).parent / f".{oid(14)}.0123456789abcdef.tmp"
    temp.parent.mkdir(exist_ok=True)
    temp.write_bytes(b"left by a crash before rename")

    store = reopen(store)
    report = store.last_fsck
    assert report.temp_files_removed == (temp.name,)
    assert report.orphan_files_removed == (orphan.name,)
    assert dict(report.damaged) == {
        missing.object_id: "slice file is missing",
        short.object_id: f"slice file has 10 bytes, the index says {short.slice_bytes}",
    }
    assert not temp.exists() and not orphan.exists()
    assert store.get(kept.object_id) == kept
    with pytest.raises(ObjectDamaged, match="missing"):
        store.get(missing.object_id)
    assert store.count() == 1
    assert [o for o, _ in store.list_objects(None, 10).objects] == [kept.object_id]
    # The next check finds nothing new.
    assert store.fsck().clean
    # A damaged object may be deposited again, which repairs it.
    deposit(store, 11)
    assert store.has_committed(missing.object_id)
    store.close()


def test_a_slice_file_that_shrank_is_caught_when_opened(store: DiskSliceStore) -> None:
    record = deposit(store, 15)
    with store.slice_path(record.object_id).open("r+b") as fh:
        fh.truncate(5)
    with pytest.raises(ObjectDamaged, match="5 bytes"):
        store.open_slice(record.object_id)
    assert not store.has_committed(record.object_id)


_CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path[:0] = {paths!r}
    from tests.unit.test_store import record_for, blocks_for, oid, VAULT
    from evault.store import disk
    store = disk.DiskSliceStore({data!r}, vault=VAULT, slice_index=2)
    blocks = blocks_for(20, 3)
    writer = store.begin(oid(20))
    for b in blocks:
        writer.write(b)
    where = {where!r}
    if where == "before-rename":
        real_replace = os.replace
        disk.os.replace = lambda *a: os._exit(9)
    else:
        store._write_tx = lambda work: os._exit(9)
    writer.commit(record_for(oid(20), blocks))
    os._exit(0)
    """
)


@pytest.mark.parametrize("where", ["before-rename", "before-index-commit"])
def test_a_process_killed_mid_commit_leaves_nothing_listed(tmp_path: Path, where: str) -> None:
    data = tmp_path / "data"
    root = Path(__file__).parents[2]
    script = _CRASH_SCRIPT.format(paths=[str(root), str(root / "src")], data=str(data), where=where)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 9, result.stderr.decode()
    fanout = data / "objects" / oid(20)[:2]
    leftover = sorted(p.name for p in fanout.iterdir())
    assert len(leftover) == 1  # the temp file, or the renamed slice without its row
    with DiskSliceStore(data, vault=VAULT, slice_index=2) as store:
        assert store.list_objects(None, 10).objects == ()
        assert not store.has_committed(oid(20))
        assert list(fanout.iterdir()) == []
        removed = store.last_fsck.temp_files_removed + store.last_fsck.orphan_files_removed
        assert removed == tuple(leftover)
        # The deposit can be retried.
        deposit(store, 20)
        assert store.has_committed(oid(20))


# --- disk full -----------------------------------------------------------------------------


class _FullDisk:
    """A file that takes ``room`` bytes, then fails like a full disk (write or flush)."""

    def __init__(self, real: IO[bytes], room: int, fail_on: str = "write") -> None:
        self.real = real
        self.room = room
        self.fail_on = fail_on

    def write(self, data: object) -> int:
        view = memoryview(data)  # type: ignore[arg-type]
        if self.fail_on == "write" and len(view) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(view)
        return self.real.write(view)

    def flush(self) -> None:
        if self.fail_on == "flush":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.real.flush()

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.real.close()


def _full_disk_store(tmp_path: Path, room: int, fail_on: str = "write") -> DiskSliceStore:
    def opener(path: Path) -> IO[bytes]:
        return _FullDisk(path.open("xb"), room, fail_on)  # type: ignore[return-value]

    return DiskSliceStore(tmp_path / "data", vault=VAULT, slice_index=2, open_temp=opener)


def test_disk_full_while_writing_commits_nothing(tmp_path: Path) -> None:
    store = _full_disk_store(tmp_path, room=1500)
    blocks = blocks_for(30, 3)
    with store.begin(oid(30)) as writer:
        writer.write(blocks[0])
        with pytest.raises(InsufficientStorage) as info:
            writer.write(blocks[1])
    assert info.value.code == "insufficient_storage"
    assert "nothing was committed" in str(info.value)
    assert not store.has_committed(oid(30))
    assert list(store.slice_path(oid(30)).parent.iterdir()) == []
    # The store is still usable, and the same id can be deposited once there is room.
    small = record_for(oid(30), [b"s" * 10], block_bytes=10)
    with store.begin(oid(30)) as writer:
        writer.write(b"s" * 10)
        writer.commit(small)
    assert store.get(oid(30)) == small
    store.close()


def test_disk_full_at_flush_commits_nothing(tmp_path: Path) -> None:
    store = _full_disk_store(tmp_path, room=10**9, fail_on="flush")
    blocks = blocks_for(31, 2)
    with store.begin(oid(31)) as writer:
        for b in blocks:
            writer.write(b)
        with pytest.raises(InsufficientStorage):
            writer.commit(record_for(oid(31), blocks))
    assert not store.has_committed(oid(31))
    assert list(store.slice_path(oid(31)).parent.iterdir()) == []
    store.close()


def test_a_full_index_commits_nothing_and_leaves_no_orphan(store: DiskSliceStore) -> None:
    deposit(store, 32)
    # Cap the database at its current size, so the next row does not fit (SQLITE_FULL).
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    blocks = blocks_for(33, 2)
    big = record_for(oid(33), blocks, statement=b"s" * 200_000)
    with store.begin(oid(33)) as writer:
        for b in blocks:
            writer.write(b)
        with pytest.raises(InsufficientStorage, match="index"):
            writer.commit(big)
    assert not store.has_committed(oid(33))
    assert not store.slice_path(oid(33)).exists()
    assert store.count() == 1


# --- identity and validation ---------------------------------------------------------------


def test_a_data_dir_belongs_to_one_vault_and_slice(tmp_path: Path) -> None:
    DiskSliceStore(tmp_path / "d", vault=VAULT, slice_index=2).close()
    with pytest.raises(StoreMismatch, match="vault"):
        DiskSliceStore(tmp_path / "d", vault="cd" * 16, slice_index=2)
    with pytest.raises(StoreMismatch, match="slice_index"):
        DiskSliceStore(tmp_path / "d", vault=VAULT, slice_index=3)


def test_records_refuse_inconsistent_fields() -> None:
    blocks = blocks_for(40, 2)
    with pytest.raises(ValueError, match="leaves"):
        record_for(oid(40), blocks, leaves=b"x" * 31)
    with pytest.raises(ValueError, match="slice_index"):
        record_for(oid(40), blocks, slice_index=5)
    with pytest.raises(ValueError, match="slice_bytes"):
        record_for(oid(40), blocks, slice_bytes=BLOCK * 3)


def test_bad_object_ids_are_programming_errors(store: DiskSliceStore) -> None:
    for bad in ("", "AB" * 32, "../" + "a" * 61, "a" * 63):
        with pytest.raises(ValueError, match="object_id"):
            store.begin(bad)
        with pytest.raises(ValueError, match="object_id"):
            store.delete(bad)


def test_concurrent_deposits_of_different_objects(store: DiskSliceStore) -> None:
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            deposit(store, 50 + k)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count() == 8
