"""`evault backup` / `evault restore` with the paper's profile (§2.3.2), against a fake gateway."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from evault import cli_client
from evault.client.backup import walk_root
from evault.client.profile import parse_profile
from evault.client.state_store import SqliteChangeState
from tests.unit.test_client_cli import GW_A, Env
from tests.unit.test_client_fakegateway import FakeGateway, write_client_config

BASE_NS = 1_700_000_000 * 10**9


def paper_profile(app: Path, personal: Path) -> str:
    return f"""
# Paper §2.3.2
name = "application"
roots = ["{app}", {{ path = "{personal}", label = "personal" }}]
include = ["*.c", "*.h", "my_last_will_and_testament", "todays_shopping_list"]
exclude = ["*.o", "obj/"]

[[retention]]
pattern = "*.c"
keep_last = 5

[[retention]]
pattern = "my_last_will_and_testament"
keep_all = true

[[retention]]
pattern = "todays_shopping_list"
keep_last = 1
"""


class Backup(Env):
    app: Path
    personal: Path
    profile: Path
    tick: int = 0

    def write(self, path: Path, data: bytes) -> None:
        """Write with an mtime of our own, distinct and in the past (no racy-clean rehash)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.tick += 1
        os.utime(path, ns=(BASE_NS + self.tick * 10**9, BASE_NS + self.tick * 10**9))

    def backup(self, *extra: str) -> dict:  # type: ignore[type-arg]
        result = self.ok("backup", str(self.profile), "--json", *extra)
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def versions(self, name: str) -> list[int]:
        return self.fake.versions_of("alice", name)


@pytest.fixture
def bk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backup]:
    fake = FakeGateway()
    monkeypatch.setattr(cli_client, "TRANSPORT_FACTORY", fake.transport)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    config = write_client_config(tmp_path / "client", [GW_A])
    env = Backup(fake, config, tmp_path, tmp_path / "work")
    env.app = tmp_path / "important" / "new" / "application"
    env.personal = tmp_path / "home" / "personal"
    env.app.mkdir(parents=True)
    env.personal.mkdir(parents=True)
    env.profile = tmp_path / "profile.toml"
    env.profile.write_text(paper_profile(env.app, env.personal))
    env.ok("register", "--user-id", "alice", "--name", "Alice", "--contact", "")
    yield env


def test_seven_changes_of_a_c_file_leave_exactly_its_five_latest_versions(bk: Backup) -> None:
    main_c = bk.app / "src" / "main.c"
    will = bk.personal / "my_last_will_and_testament"
    shopping = bk.personal / "todays_shopping_list"
    for i in range(1, 8):
        bk.write(main_c, f"int main(void) {{ return {i}; }}\n".encode())
        bk.write(will, f"will, revision {i}\n".encode())
        bk.write(shopping, f"milk x{i}\n".encode())
        out = bk.backup()
        assert len(out["result"]["deposited"]) == 3
        assert out["result"]["failures"] == []
    assert bk.versions("application/src/main.c") == [3, 4, 5, 6, 7]
    assert bk.versions("personal/my_last_will_and_testament") == list(range(1, 8))
    assert bk.versions("personal/todays_shopping_list") == [7]
    # Removed in order as versions fell out of the window, each exactly once.
    removed_c = [v for n, v in bk.fake.deleted if n == "application/src/main.c"]
    assert removed_c == [1, 2]


def state_rows(bk: Backup) -> list[tuple[object, ...]]:
    db = sqlite3.connect(bk.paths.state_db)
    try:
        return db.execute("SELECT * FROM file_state ORDER BY owner, key").fetchall()
    finally:
        db.close()


def test_dry_run_prints_the_plan_and_changes_nothing(bk: Backup) -> None:
    main_c = bk.app / "main.c"
    for i in range(1, 6):
        bk.write(main_c, b"v%d" % i)
        bk.backup()
    assert bk.versions("application/main.c") == [1, 2, 3, 4, 5]
    bk.write(main_c, b"v6")
    deposits, deleted = bk.fake.deposits, list(bk.fake.deleted)
    state_before = state_rows(bk)

    plan = bk.backup("--dry-run")
    assert plan["dry_run"] is True
    assert [(d["name"], d["change"]) for d in plan["plan"]["deposit"]] == [
        ("application/main.c", "modified")
    ]
    assert [(r["name"], r["version"]) for r in plan["plan"]["remove"]] == [
        ("application/main.c", 1)
    ]
    assert plan["plan"]["remove"][0]["reasons"] == ["beyond last 5 of rule '*.c'"]
    kept_new = [k for k in plan["plan"]["keep"] if k["new"]]
    assert [(k["name"], k["version"]) for k in kept_new] == [("application/main.c", 6)]

    human = bk.ok("backup", str(bk.profile), "--dry-run").stdout
    assert "Would deposit" in human and "application/main.c" in human
    assert "Would remove from the vault" in human and "beyond last 5 of rule '*.c'" in human
    assert "Dry run: nothing was deposited, removed or recorded." in human

    assert (bk.fake.deposits, bk.fake.deleted) == (deposits, deleted)
    assert bk.versions("application/main.c") == [1, 2, 3, 4, 5]
    assert state_rows(bk) == state_before
    # The real run then does what the plan said.
    out = bk.backup()
    assert [d["name"] for d in out["result"]["deposited"]] == ["application/main.c"]
    assert out["result"]["removed"] == [
        {
            "name": "application/main.c",
            "version": 1,
            "deposited_at": plan["plan"]["remove"][0]["deposited_at"],
        }
    ]
    assert bk.versions("application/main.c") == [2, 3, 4, 5, 6]


def test_include_and_exclude_behave_as_written(bk: Backup) -> None:
    files = {
        "main.c": True,
        "include/vault.h": True,
        "src/x/deep.c": True,
        "main.o": False,
        "Makefile": False,
        "src/obj/gen.c": False,  # under an excluded directory: pruned
        "obj/other.h": False,
        "notes.txt": False,
    }
    for rel in files:
        bk.write(bk.app / rel, rel.encode())
    out = bk.backup()
    deposited = sorted(d["name"] for d in out["result"]["deposited"])
    assert deposited == sorted(f"application/{rel}" for rel, yes in files.items() if yes)


def test_an_unchanged_file_is_not_deposited_again(bk: Backup) -> None:
    a = bk.app / "a.c"
    b = bk.app / "b.c"
    bk.write(a, b"aaa")
    bk.write(b, b"bbb")
    assert len(bk.backup()["result"]["deposited"]) == 2
    again = bk.backup()
    assert again["result"]["deposited"] == [] and again["plan"]["unchanged"] == 2
    # Touched (new mtime, same content): still not deposited, and no longer rehashed.
    os.utime(a, ns=(BASE_NS + 10**12, BASE_NS + 10**12))
    touched = bk.backup()
    assert touched["result"]["deposited"] == []
    assert touched["result"]["recorded_without_deposit"] == 1
    # Modified: deposited, only that one.
    bk.write(b, b"bbbb")
    changed = bk.backup()
    assert [d["name"] for d in changed["result"]["deposited"]] == ["application/b.c"]
    assert bk.versions("application/a.c") == [1] and bk.versions("application/b.c") == [1, 2]


def test_a_failed_deposit_leaves_the_archive_bit_set(bk: Backup) -> None:
    a = bk.app / "a.c"
    bk.write(a, b"first")
    bk.fake.forge_signature = True
    result = bk.run("backup", str(bk.profile), "--json")
    assert result.exit_code == 1 and "backup failed: application/a.c: the receipt" in result.stderr
    with SqliteChangeState(bk.paths.state_db, "alice") as state:
        assert state.get("application/a.c") is None
    bk.fake.forge_signature = False
    out = bk.backup()
    assert [d["name"] for d in out["result"]["deposited"]] == ["application/a.c"]


def test_symlinks_do_not_lead_out_of_the_root(bk: Backup, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.c").write_bytes(b"secret")
    bk.write(bk.app / "real.c", b"real")
    (bk.app / "out.c").symlink_to(outside / "secret.c")
    (bk.app / "outdir").symlink_to(outside)
    (bk.app / "alias.c").symlink_to(bk.app / "real.c")
    profile = parse_profile(bk.profile.read_text())
    files, skipped = walk_root(profile, profile.roots[0])
    assert sorted(f.relative for f in files) == ["alias.c", "real.c"]
    assert [(s.relative, s.reason) for s in skipped] == [
        ("out.c", "symbolic link pointing out of the root")
    ]


def test_files_the_vault_cannot_name_are_skipped_visibly(bk: Backup) -> None:
    bk.profile.write_text(f'name = "all"\nroots = ["{bk.app}"]\n')
    bk.write(bk.app / "docs" / "receipt", b"a file named receipt")
    bk.write(bk.app / "docs" / "ok.txt", b"fine")
    out = bk.backup()
    assert [d["name"] for d in out["result"]["deposited"]] == ["application/docs/ok.txt"]
    assert [s["path"] for s in out["plan"]["skipped"]] == ["application/docs/receipt"]
    assert "refuses document names ending in 'receipt'" in out["plan"]["skipped"][0]["reason"]


def test_restore_brings_the_tree_back_verified(bk: Backup, tmp_path: Path) -> None:
    bk.write(bk.app / "src" / "main.c", b"int main;")
    bk.write(bk.personal / "my_last_will_and_testament", b"all to the cat")
    bk.backup()
    # Elsewhere first.
    target = tmp_path / "restored"
    out = json.loads(bk.ok("restore", str(bk.profile), "--to", str(target), "--json").stdout)
    assert sorted(r["name"] for r in out["restored"]) == [
        "application/src/main.c",
        "personal/my_last_will_and_testament",
    ]
    assert (target / "application" / "src" / "main.c").read_bytes() == b"int main;"
    assert (target / "personal" / "my_last_will_and_testament").read_bytes() == b"all to the cat"
    # In place, after a loss; the next backup then has nothing to do.
    (bk.app / "src" / "main.c").unlink()
    bk.write(bk.personal / "my_last_will_and_testament", b"changed locally")
    result = bk.run("restore", str(bk.profile), "--json")
    assert result.exit_code == 1 and "pass --overwrite" in result.stderr
    assert (bk.app / "src" / "main.c").read_bytes() == b"int main;"
    bk.ok("restore", str(bk.profile), "--overwrite")
    assert (bk.personal / "my_last_will_and_testament").read_bytes() == b"all to the cat"
    assert bk.backup()["result"]["deposited"] == []


def test_restore_refuses_corrupted_bytes(bk: Backup, tmp_path: Path) -> None:
    bk.write(bk.app / "a.c", b"abc")
    bk.backup()
    bk.fake.corrupt_bytes = True
    result = bk.run("restore", str(bk.profile), "--to", str(tmp_path / "r"))
    assert result.exit_code == 1 and "does not match its receipt" in result.stderr
    assert not (tmp_path / "r" / "application" / "a.c").exists()


def test_a_profile_asking_for_encryption_is_refused_before_anything_happens(bk: Backup) -> None:
    bk.profile.write_text(
        paper_profile(bk.app, bk.personal).replace(
            "\n[[retention]]", "encrypt = true\n\n[[retention]]", 1
        )
    )
    bk.write(bk.app / "a.c", b"abc")
    result = bk.fails("backup", str(bk.profile))
    assert "encrypt = true" in result.stderr
    assert bk.fake.deposits == 0


def test_a_broken_profile_names_the_key(bk: Backup) -> None:
    bk.profile.write_text(
        'name = "p"\nroots = ["/x"]\n[[retention]]\npattern = "*.c"\nkeep_lats = 3\n'
    )
    result = bk.fails("backup", str(bk.profile))
    assert "retention[1].keep_lats" in result.stderr
