"""The local receipt store (SQLite) and the backup state database."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from evault.client.changes import FileState
from evault.client.receipt_store import ReceiptStore
from evault.client.receipts import Receipt
from evault.client.state_store import SqliteChangeState
from evault.errors import ConfigError
from tests.unit.test_client_fakegateway import make_receipt


def receipt(**kwargs: object) -> Receipt:
    statement, signature = make_receipt(**kwargs)  # type: ignore[arg-type]
    return Receipt.from_parts(statement, signature)


def test_put_get_latest_versions_all(tmp_path: Path) -> None:
    with ReceiptStore(tmp_path / "r.sqlite") as store:
        r1 = receipt(name="a", version=1, data=b"1")
        r2 = receipt(name="a", version=2, data=b"22")
        rb = receipt(owner="bob", name="a", version=7, data=b"b")
        assert store.put(r1, "deposit")
        assert store.put(r2, "vault")
        assert store.put(rb, "page")
        got = store.get("alice", "a", 1)
        assert got is not None and got.receipt == r1 and got.source == "deposit"
        latest = store.latest("alice", "a")
        assert latest is not None and latest.version == 2
        assert [r.version for r in store.versions("alice", "a")] == [1, 2]
        assert [r.version for r in store.versions(None, "a")] == [1, 2, 7]
        assert store.get("alice", "a", 3) is None
        assert len(store.all()) == 3 and len(store.all("bob")) == 1
        assert store.known_versions("alice", ["a", "zzz"]) == {("a", 1), ("a", 2)}


def test_the_same_receipt_twice_is_kept_once_and_a_new_one_replaces(tmp_path: Path) -> None:
    with ReceiptStore(tmp_path / "r.sqlite") as store:
        first = receipt(name="a", version=1, data=b"old")
        assert store.put(first, "deposit")
        assert not store.put(first, "vault")
        newer = receipt(name="a", version=1, data=b"new")
        assert store.put(newer, "vault")
        got = store.get("alice", "a", 1)
        assert got is not None and got.receipt == newer
        assert len(store.all()) == 1


def test_receipts_survive_reopening_with_their_exact_bytes(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    r = receipt(name="x/y", data=b"\x00" * 10)
    with ReceiptStore(path) as store:
        store.put(r, "deposit")
    with ReceiptStore(path) as store:
        got = store.get("alice", "x/y", 1)
        assert got is not None
        assert got.receipt.statement_bytes == r.statement_bytes
        assert got.receipt.signature == r.signature
        assert got.receipt.statement.sha256 == hashlib.sha256(b"\x00" * 10).hexdigest()


def test_a_store_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=9")
    db.close()
    with pytest.raises(ConfigError, match="schema version 9"):
        ReceiptStore(path)


def test_threads_can_share_one_store(tmp_path: Path) -> None:
    with ReceiptStore(tmp_path / "r.sqlite") as store:
        receipts = [receipt(name=f"f{i}", data=str(i).encode()) for i in range(40)]
        threads = [
            threading.Thread(target=lambda part=part: [store.put(r, "deposit") for r in part])
            for part in (receipts[0::4], receipts[1::4], receipts[2::4], receipts[3::4])
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(store.all()) == 40


def test_state_store_implements_the_archive_bit_protocol(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    sha = hashlib.sha256(b"x").digest()
    with SqliteChangeState(path, "alice") as state:
        assert state.get("p/a.c") is None
        state.put("p/a.c", FileState(1, 10, sha, 99))
        state.put("p/b_%.c", FileState(2, 20, sha, None))
        state.put("q/c.c", FileState(3, 30, sha, None))
        assert state.get("p/a.c") == FileState(1, 10, sha, 99)
        assert set(state.get_many(["p/a.c", "q/c.c", "none"])) == {"p/a.c", "q/c.c"}
        # '%' and '_' are not wildcards in a prefix.
        assert list(state.keys_under("p/b_%")) == ["p/b_%.c"]
        assert list(state.keys_under("p/")) == ["p/a.c", "p/b_%.c"]
        state.forget("p/a.c")
        state.forget("never")
        assert state.get("p/a.c") is None
    with SqliteChangeState(path, "bob") as other:
        assert other.get("q/c.c") is None  # users never share archive bits
    with SqliteChangeState(path, "alice") as again:
        assert again.get("q/c.c") == FileState(3, 30, sha, None)
