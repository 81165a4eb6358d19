"""Restoring the catalog from the nodes (evault.gateway.restore; docs/spec/catalog.md).

Fake nodes and the fake threshold scheme of ``test_gateway_service`` (the real scheme and the
real catalog are exercised at the end of this file and in the real-process vault tests).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from evault.errors import BadName, CatalogError
from evault.gateway.restore import RestoreReport, restore_catalog
from evault.gateway.service import VaultService
from evault.protocol.node_api import object_id
from tests.unit.test_gateway_service import (
    SEGMENT,
    VAULT,
    FakeCatalog,
    Harness,
    cluster,
    document,
    fake_signature,
)


def restore(h: Harness, **kwargs: Any) -> RestoreReport:
    async def go(service: VaultService) -> RestoreReport:
        return await restore_catalog(service, **kwargs)

    report: RestoreReport = h.run(go)
    return report


FIRST = document(3 * SEGMENT + 5)


def deposited(h: Harness) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Three documents, one of them in two versions (the first is ``FIRST``), then the
    catalog is lost."""
    h.deposit(FIRST, name="a.bin")
    h.deposit(document(7), name="a.bin")
    h.deposit(document(0), name="empty.bin")
    h.deposit(document(SEGMENT), name="dir/b.bin")
    kept = {key: dict(row) for key, row in h.catalog.versions.items()}
    h.catalog = FakeCatalog()
    h.catalog.accounts.clear()
    return kept


def test_a_lost_catalog_comes_back_with_the_very_receipts() -> None:
    h = Harness(cluster())
    before = deposited(h)
    report = restore(h)
    assert report.listed == {node: 4 for node in range(1, 6)}
    assert (report.unlisted, report.ignored, report.known, report.not_restored) == ({}, 0, 0, [])
    assert [(v.owner, v.name, v.version) for v in report.restored] == [
        ("alice", "a.bin", 1),
        ("alice", "a.bin", 2),
        ("alice", "dir/b.bin", 1),
        ("alice", "empty.bin", 1),
    ]
    assert report.accounts_created == ["alice"]
    for key, row in before.items():
        got = h.catalog.versions[key]
        assert got["state"] == "stored"
        for column in ("statement", "signature", "size", "sha256", "fv_hash", "deposited_at"):
            assert got[column] == row[column], column
        assert got["signature"] == fake_signature(got["statement"])
    assert h.catalog.next[("alice", "a.bin")] == 3
    data, _ = h.retrieve("a.bin", 1)
    assert data == FIRST
    # A second run finds everything known and writes nothing.
    again = restore(h)
    assert (again.known, again.restored, again.not_restored) == (4, [], [])
    assert h.catalog.calls.count("restore") == 4


def test_dry_run_checks_the_receipts_and_writes_nothing() -> None:
    h = Harness(cluster())
    deposited(h)
    h.nodes[5].faults.bad_share = True
    report = restore(h, dry_run=True)
    assert report.dry_run and len(report.restored) == 4
    assert h.catalog.versions == {} and "restore" not in h.catalog.calls
    assert h.combiner.calls, "the dry run combined the shares"


def test_versions_the_catalog_knows_are_left_alone() -> None:
    h = Harness(cluster())
    h.deposit(document(10), name="kept.bin")
    h.deposit(document(10), name="gone.bin")
    h.deposit(document(10), name="failed.bin")
    h.catalog.versions[("alice", "gone.bin", 1)]["state"] = "deleted"
    h.catalog.versions[("alice", "failed.bin", 1)]["state"] = "failed"
    rows = {key: dict(row) for key, row in h.catalog.versions.items()}
    report = restore(h)
    assert (report.known, report.restored, report.not_restored) == (3, [], [])
    assert h.catalog.versions == rows


def test_too_few_holders_or_shares_is_not_restored_and_says_why() -> None:
    h = Harness(cluster())  # n=5, m=3, k=4: a receipt needs 4 holders
    deposited(h)
    thin = object_id(VAULT, "alice", "dir/b.bin", 1)
    for node in (1, 2):
        del h.nodes[node].objects[thin]
    bad = object_id(VAULT, "alice", "empty.bin", 1)
    h.nodes[3].faults.bad_share = True  # with node 4 down, 3 good shares of 4 remain
    h.nodes[4].faults.share_down = True
    report = restore(h)
    why = {(v.name, v.version): v.reason for v in report.not_restored}
    assert set(why) == {("dir/b.bin", 1), ("a.bin", 1), ("a.bin", 2), ("empty.bin", 1)}
    assert "held by 3 nodes (3, 4, 5), 4 nodes needed" in why[("dir/b.bin", 1)]
    assert "only 3 valid signature shares of 4" in why[("empty.bin", 1)]
    assert "node 3: proof of correctness fails" in why[("empty.bin", 1)]
    assert "node 4: share:" in why[("empty.bin", 1)]
    assert report.restored == [] and h.catalog.versions == {}
    assert [v.object_id for v in report.not_restored if v.name == "empty.bin"] == [bad]
    # With node 4 back, node 3's bad share is outvoted: 4 valid shares of 5 holders.
    h.nodes[4].faults.share_down = False
    again = restore(h)
    assert [(v.name, v.version) for v in again.restored] == [
        ("a.bin", 1),
        ("a.bin", 2),
        ("empty.bin", 1),
    ]
    assert [v.name for v in again.not_restored] == ["dir/b.bin"]


def test_a_node_cannot_make_the_catalog_list_a_version_alone() -> None:
    h = Harness(cluster())
    h.deposit(document(10), name="real.bin")
    h.catalog = FakeCatalog()
    # Node 2 makes up an object with a statement of its own (a version never deposited).
    real = object_id(VAULT, "alice", "real.bin", 1)
    forged = h.nodes[2].objects[real].statement.replace(b'"version":1', b'"version":7')
    assert forged != h.nodes[2].objects[real].statement
    oid7 = object_id(VAULT, "alice", "real.bin", 7)
    h.nodes[2].objects[oid7] = replace(h.nodes[2].objects[real], statement=forged)
    # and lists a real statement under an object id it does not name
    h.nodes[2].objects["e" * 64] = h.nodes[2].objects[real]
    report = restore(h)
    assert [(v.name, v.version) for v in report.restored] == [("real.bin", 1)]
    assert [(v.name, v.version) for v in report.not_restored] == [("real.bin", 7)]
    assert "held by 1 node (2), 4 nodes needed" in report.not_restored[0].reason
    assert report.ignored == 1
    assert ("alice", "real.bin", 7) not in h.catalog.versions


def test_a_node_whose_listing_fails_is_named_and_the_others_suffice() -> None:
    h = Harness(cluster())
    deposited(h)
    h.nodes[3].faults.down = True
    ticks: list[tuple[int, int]] = []
    checked: list[int] = []
    report = restore(h, on_listed=lambda *a: ticks.append(a), on_checked=checked.append)
    assert set(report.unlisted) == {3} and "connect" in report.unlisted[3]
    assert len(report.restored) == 4  # 4 holders are enough for k = 4
    assert {node for node, _ in ticks} == {1, 2, 4, 5} and (1, 4) in ticks
    assert checked == [1, 2, 3, 4]


def test_listings_are_merged_page_by_page_and_restored_as_they_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each object id is checked once every node has listed past it: restores begin before
    the listings end, and nodes holding different objects, or failing half-way, are merged."""
    monkeypatch.setattr("evault.gateway.service.SWEEP_PAGE_OBJECTS", 2)
    h = Harness(cluster())
    datas = {f"d{i}.bin": document(10 + i) for i in range(7)}
    for name, data in datas.items():
        h.deposit(data, name=name)
    oids = sorted(h.nodes[1].objects)
    del h.nodes[2].objects[oids[0]]  # node 2 lacks the first object, node 4 the last
    del h.nodes[4].objects[oids[-1]]
    h.catalog = FakeCatalog()

    real_listing = h.nodes[5]._listing

    def failing_listing(after: str | None, limit: int) -> httpx.Response:
        if after is not None and after >= oids[3]:
            raise httpx.ReadError("connection reset by peer")
        return real_listing(after, limit)

    h.nodes[5]._listing = failing_listing  # type: ignore[method-assign]
    pages_at_first_restore: list[int] = []
    restore_version = h.catalog.restore_version

    def recording(*args: Any, **kwargs: Any) -> Any:
        if not pages_at_first_restore:
            pages_at_first_restore.append(
                sum(1 for _, path, _ in h.nodes[1].log if path == "/v1/objects")
            )
        return restore_version(*args, **kwargs)

    h.catalog.restore_version = recording  # type: ignore[method-assign]
    h.nodes[5].log.clear()
    report = restore(h)
    assert report.listed == {1: 7, 2: 6, 3: 7, 4: 6, 5: 4}
    assert set(report.unlisted) == {5} and "connection reset" in report.unlisted[5]
    # The last object: node 4 lacks it and node 5 stopped listing before it, so the three
    # that listed it are too few; node 5 is asked for it directly, and holds it.
    assert sorted(v.name for v in report.restored) == sorted(datas)
    assert report.not_restored == []
    # Asked for the object itself only where holders were short (shares: where it holds one).
    asked = [p for m, p, _ in h.nodes[5].log if m == "GET" and p.count("/") == 3]
    assert asked == [f"/v1/objects/{oids[-1]}"]
    assert pages_at_first_restore and pages_at_first_restore[0] < 4  # 4 pages list 7 objects
    assert sorted(h.catalog.versions) == sorted(("alice", n, 1) for n in datas)

    # Node 5 down from the start: the two objects another node lacks stay out, and why.
    h.catalog = FakeCatalog()
    h.nodes[5].faults.down = True
    report = restore(h)
    name_of = {object_id(VAULT, "alice", name, 1): name for name in datas}
    short = {name_of[oids[0]], name_of[oids[-1]]}
    assert sorted(v.name for v in report.restored) == sorted(set(datas) - short)
    assert {v.name for v in report.not_restored} == short
    for why in report.not_restored:
        assert why.reason.startswith("node 5, whose listing stopped: meta: cannot connect")
        assert why.reason.endswith(", 4 nodes needed") and "held by 3 nodes" in why.reason


def test_a_node_whose_listing_stopped_is_asked_only_for_objects_short_of_holders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One listing failing half-way in the paper's setting (k = n = 3) would otherwise leave
    every later version short; a node that does not hold the object answers 404 and is not
    named."""
    monkeypatch.setattr("evault.gateway.service.SWEEP_PAGE_OBJECTS", 1)
    h = Harness(cluster(3, 2, 3))
    for i in range(4):
        h.deposit(document(5 + i), name=f"p{i}.bin")
    h.catalog = FakeCatalog()
    oids = sorted(h.nodes[1].objects)
    del h.nodes[3].objects[oids[-1]]  # node 3 does not hold the last one at all
    real_listing = h.nodes[3]._listing

    def failing_listing(after: str | None, limit: int) -> httpx.Response:
        if after is not None:
            raise httpx.ReadError("connection reset by peer")
        return real_listing(after, limit)

    h.nodes[3]._listing = failing_listing  # type: ignore[method-assign]
    report = restore(h)
    assert report.listed[3] == 1 and set(report.unlisted) == {3}
    assert len(report.restored) == 3
    [why] = report.not_restored
    assert why.object_id == oids[-1]
    assert why.reason == "held by 2 nodes (1, 2), 3 nodes needed"


def test_a_catalog_failure_stops_the_restore_with_that_error() -> None:
    h = Harness(cluster())
    deposited(h)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise CatalogError("catalog database error (sqlite): disk I/O error")

    h.catalog.restore_version = broken  # type: ignore[method-assign]
    with pytest.raises(CatalogError, match="disk I/O error"):
        restore(h)
    h.catalog.version_state = broken  # type: ignore[method-assign]
    with pytest.raises(CatalogError, match="disk I/O error"):
        restore(h)


def test_a_statement_the_catalog_cannot_hold_is_reported() -> None:
    h = Harness(cluster())
    deposited(h)

    def refusing(owner: str, name: str, version: int) -> str | None:
        raise BadName("document name", "not one here", name)

    h.catalog.version_state = refusing  # type: ignore[method-assign]
    report = restore(h)
    assert len(report.not_restored) == 4 and report.restored == []
    assert all("the catalog refuses it" in v.reason for v in report.not_restored)


def test_paper_setting_needs_every_node_for_a_receipt() -> None:
    h = Harness(cluster(3, 2, 3))
    h.deposit(document(2 * SEGMENT), name="doc.bin")
    h.catalog = FakeCatalog()
    h.nodes[1].faults.down = True
    report = restore(h)
    assert report.restored == []
    assert "held by 2 nodes (2, 3), 3 nodes needed" in report.not_restored[0].reason
    h.nodes[1].faults.down = False
    assert len(restore(h).restored) == 1


def test_a_node_listing_made_up_objects_cannot_fill_the_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("evault.gateway.restore.MAX_NAMED_NOT_RESTORED", 3)
    h = Harness(cluster())
    h.deposit(document(10), name="real.bin")
    h.catalog = FakeCatalog()
    real = h.nodes[2].objects[object_id(VAULT, "alice", "real.bin", 1)]
    for version in range(2, 10):  # node 2 alone lists eight versions nobody deposited
        made_up = real.statement.replace(b'"version":1', b'"version":%d' % version)
        h.nodes[2].objects[object_id(VAULT, "alice", "real.bin", version)] = replace(
            real, statement=made_up
        )
    report = restore(h)
    assert [v.version for v in report.restored] == [1]
    assert report.not_restored_count == 8 and len(report.not_restored) == 3
    assert report.to_json()["not_restored_count"] == 8


def test_concurrency_must_be_positive() -> None:
    h = Harness(cluster())
    with pytest.raises(ValueError, match="concurrency"):
        restore(h, concurrency=0)


# --- the real catalog (SQLite) ---------------------------------------------------------------


def test_restore_into_a_new_sqlite_catalog_then_deposit_and_log_in(tmp_path: Path) -> None:
    from argon2 import PasswordHasher

    from evault.catalog import Catalog
    from evault.errors import AuthFailed

    def open_catalog(name: str) -> Catalog:
        catalog = Catalog(
            f"sqlite:///{tmp_path / name}",
            password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
        )
        catalog.migrate()
        return catalog

    first = open_catalog("first.sqlite")
    second = open_catalog("second.sqlite")
    try:
        first.create_user("alice", "correct horse battery", "Alice", "")
        h = Harness(cluster())
        h.catalog = first  # type: ignore[assignment]
        data = document(2 * SEGMENT + 1)
        outcome = h.deposit(data)
        h.deposit(document(3))
        h.catalog = second  # type: ignore[assignment]
        report = restore(h)
        assert len(report.restored) == 2 and report.accounts_created == ["alice"]
        assert second.get_version("alice", "doc.bin", 1).signature == outcome.signature
        got, _ = h.retrieve("doc.bin", 1)
        assert got == data
        with pytest.raises(AuthFailed):
            second.authenticate("alice", "correct horse battery")
        second.set_password("alice", "a password from the operator")
        assert second.authenticate("alice", "a password from the operator") == "alice"
        assert h.deposit(document(4)).version == 3  # after the restored versions
    finally:
        first.close()
        second.close()


# --- the operator's commands (evault admin ...) ------------------------------------------------


def test_restore_command_reports_what_was_not_restored_and_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from evault.cli import main
    from evault.gateway import admin
    from evault.gateway.restore import NotRestored, RestoredVersion

    report = RestoreReport(dry_run=False, listed={1: 2, 2: 0}, unlisted={2: "list: cannot connect"})
    report.restored.append(RestoredVersion("alice", "will.pdf", 2, 5, "ab" * 32, True))
    report.restored.append(RestoredVersion("alice", "a[/]b [red]c", 1, 5, "cd" * 32, False))
    report.not_restored.append(
        NotRestored("f" * 64, "bob", "x.bin", 1, "held by 1 node (1), 4 nodes needed")
    )
    report.not_restored_count = 3  # two more than named
    seen: dict[str, Any] = {}

    def fake_restore(config_path: Path, *, dry_run: bool, console: Any) -> RestoreReport:
        seen.update(config=config_path, dry_run=dry_run)
        return report

    monkeypatch.setattr(admin, "restore", fake_restore)
    config = tmp_path / "gateway.toml"
    result = CliRunner().invoke(
        main, ["admin", "restore-catalog", "--config", str(config), "--dry-run", "--json"]
    )
    assert result.exit_code == 1
    assert seen == {"config": config, "dry_run": True}
    assert "4 nodes needed" in result.output and "will.pdf" in result.output
    assert "a[/]b [red]c" in result.output  # names print as they are, never as markup
    assert "Node 2's listing stopped: list: cannot connect" in result.output
    assert "… and 2 more not restored" in result.output
    assert "3 version(s) not restored, 1 node(s) not listed" in result.output
    last = [line for line in result.output.splitlines() if line.startswith("{")][-1]
    assert json.loads(last) == report.to_json()
    assert json.loads(last)["accounts_created"] == ["alice"]


def test_admin_commands_name_a_missing_config(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from evault.cli import main

    missing = str(tmp_path / "nowhere.toml")
    for args, stdin in (
        (["admin", "restore-catalog", "--config", missing], None),
        (["admin", "set-password", "--config", missing, "alice", "--password-stdin"], "pw\n"),
    ):
        result = CliRunner().invoke(main, args, input=stdin)
        assert result.exit_code == 1, result.output
        assert "does not exist" in result.output and "Traceback" not in result.output
