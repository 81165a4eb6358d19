"""The `evault` client commands against a REAL local vault (5 node processes and a gateway on
127.0.0.1 over TLS, made by the real `evault init`), issue 5's "Done when" for the CLI.

The commands run in this process (click's runner) and talk HTTPS to the gateway process with
the client bundle's CA and vault key, exactly as a user's `evault` would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from evault.cli import main
from evault.client.config import ClientPaths
from evault.client.receipt_store import ReceiptStore
from tests.integration.vault_fixtures import LiveVault, free_ports

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


@dataclass
class Cli:
    vault: LiveVault
    config: Path
    tmp: Path

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(
            main,
            [*args, "--config", str(self.config)],
            env={"EVAULT_PASSWORD": PASSWORD, "COLUMNS": "200"},
        )

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.exit_code == 0, (result.stdout[-2000:], result.stderr[-2000:])
        return result

    def fails(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.exit_code == 1, (result.stdout[-2000:], result.stderr[-2000:])
        assert result.stderr.startswith("evault: ") and "Traceback" not in result.stderr
        return result


def client_config(vault: LiveVault, path: Path, gateways: list[str], **extra: object) -> Path:
    lines = [
        "gateways = [" + ", ".join(f'"{g}"' for g in gateways) + "]",
        f'ca_cert = "{vault.directory / "client" / "ca.pem"}"',
        f'vault_public_key = "{vault.directory / "client" / "vault-public.pem"}"',
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def cli(vault: LiveVault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    # The file `evault up` / start_cluster writes is what a user passes with --config.
    config = vault.directory / "client.toml"
    assert config.exists()
    c = Cli(vault, config, tmp_path)
    c.ok("register", "--user-id", "alice", "--name", "Alice", "--contact", "alice@example.org")
    yield c


def make_tree(root: Path, count: int) -> dict[str, bytes]:
    """``count`` files in nested directories, of sizes from 0 B to ~200 KiB."""
    files: dict[str, bytes] = {}
    for i in range(count):
        rel = f"d{i % 7}/sub{i % 3}/file-{i:03d}.bin"
        size = (i * 997) % (200 * 1024) if i % 10 else i  # a few tiny ones, 0 B included
        data = hashlib.sha256(str(i).encode()).digest() * (size // 32) + os.urandom(size % 32)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        files[rel] = data
    return files


@pytest.mark.slow
def test_a_batch_of_200_files_deposits_retrieves_and_verifies(cli: Cli) -> None:
    tree = cli.tmp / "tree"
    files = make_tree(tree, 200)
    started = time.monotonic()
    out = json.loads(cli.ok("deposit", str(tree), "--json", "--jobs", "8").stdout)
    deposit_s = time.monotonic() - started
    assert out["failed"] == []
    assert len(out["deposited"]) == 200
    by_name = {d["name"]: d for d in out["deposited"]}
    for rel, data in files.items():
        d = by_name[f"tree/{rel}"]
        assert (d["size"], d["sha256"], d["version"]) == (
            len(data),
            hashlib.sha256(data).hexdigest(),
            1,
        )
    with ReceiptStore(ClientPaths.resolve(cli.config).receipts_db) as store:
        assert len(store.all("alice")) == 200

    listed = json.loads(cli.ok("ls", "--json").stdout)["documents"]
    assert len(listed) == 200 and all(d["receipt_kept"] for d in listed)

    out_dir = cli.tmp / "out"
    started = time.monotonic()
    got = json.loads(
        cli.ok("retrieve", *by_name, "-o", str(out_dir), "--json", "--jobs", "8").stdout
    )
    retrieve_s = time.monotonic() - started
    assert got["failed"] == [] and len(got["retrieved"]) == 200
    assert all(r["checked_against"] == "local" for r in got["retrieved"])
    for rel, data in files.items():
        assert (out_dir / "tree" / rel).read_bytes() == data
    leftovers = [p for p in out_dir.rglob("*") if p.name.endswith(".part")]
    assert leftovers == []

    # Offline verification of one exported receipt with its file, then with a tampered file.
    name = "tree/d3/sub0/file-003.bin"
    exported = cli.tmp / "r.json"
    cli.ok("receipts", "export", name, "-o", str(exported))
    cli.ok("verify", str(exported), str(tree / "d3/sub0/file-003.bin"))
    tampered = cli.tmp / "tampered.bin"
    tampered.write_bytes(files["d3/sub0/file-003.bin"] + b"\x00")
    assert "does not match its receipt" in cli.fails("verify", str(exported), str(tampered)).stderr
    total = sum(len(d) for d in files.values())
    print(
        f"\n200 files, {total / 2**20:.1f} MiB: deposit {deposit_s:.1f} s, "
        f"retrieve {retrieve_s:.1f} s (8 jobs)"
    )


def test_deposit_retrieve_verify_on_the_real_vault(cli: Cli) -> None:
    tree = cli.tmp / "small"
    files = make_tree(tree, 12)
    out = json.loads(cli.ok("deposit", str(tree), "--json").stdout)
    assert out["failed"] == [] and len(out["deposited"]) == 12
    (cli.tmp / "small" / "d0" / "sub0" / "file-000.bin").write_bytes(b"second version")
    cli.ok(
        "deposit",
        str(tree / "d0" / "sub0" / "file-000.bin"),
        "--name",
        "small/d0/sub0/file-000.bin",
    )
    versions = json.loads(cli.ok("versions", "small/d0/sub0/file-000.bin", "--json").stdout)
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    out_dir = cli.tmp / "out"
    cli.ok("retrieve", "small/d0/sub0/file-000.bin", "--version", "1", "-o", str(out_dir))
    assert (out_dir / "small/d0/sub0/file-000.bin").read_bytes() == files["d0/sub0/file-000.bin"]
    # A receipt edited after export is refused.
    exported = cli.tmp / "r.json"
    cli.ok("receipts", "export", "small/d1/sub1/file-001.bin", "-o", str(exported))
    doc = json.loads(exported.read_text())
    sig = bytearray(base64.b64decode(doc["signature"]))
    sig[10] ^= 1
    doc["signature"] = base64.b64encode(bytes(sig)).decode()
    exported.write_text(json.dumps(doc))
    assert "does not verify" in cli.fails("verify", str(exported)).stderr


def test_a_gateway_url_that_does_not_answer_is_skipped_for_the_next_one(cli: Cli) -> None:
    (dead_port,) = free_ports(1)  # nothing listens there: connection refused
    black_hole = socket.socket()  # accepts TCP but never speaks TLS: a connect time-out
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(8)
    try:
        config = client_config(
            cli.vault,
            cli.tmp / "failover.toml",
            [
                f"https://127.0.0.1:{dead_port}",
                f"https://127.0.0.1:{black_hole.getsockname()[1]}",
                cli.vault.url,
            ],
            connect_timeout_s=1,
        )
        c = Cli(cli.vault, config, cli.tmp)
        c.ok("login", "--user-id", "alice")
        (cli.tmp / "f.txt").write_bytes(b"through the third gateway")
        result = c.ok("deposit", str(cli.tmp / "f.txt"), "--json")
        assert json.loads(result.stdout)["deposited"][0]["version"] == 1
        result = c.ok("retrieve", "f.txt", "-o", str(cli.tmp / "o"))
        assert (cli.tmp / "o" / "f.txt").read_bytes() == b"through the third gateway"
        # Each command is a new process for a user; each says once which gateway it skipped.
        assert result.stderr.count(f"127.0.0.1:{dead_port} did not answer") == 1
        assert result.stderr.count("did not answer") == 2
        # No gateway answering at all is one clear sentence naming each.
        ports = free_ports(2)
        dead = client_config(
            cli.vault, cli.tmp / "dead.toml", [f"https://127.0.0.1:{p}" for p in ports]
        )
        result = Cli(cli.vault, dead, cli.tmp).fails("login", "--user-id", "alice")
        assert "no gateway answered" in result.stderr
        assert all(str(p) in result.stderr for p in ports)
    finally:
        black_hole.close()


PROFILE = """
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


@pytest.mark.slow
def test_backup_with_the_papers_profile_on_the_real_vault(cli: Cli) -> None:
    app = cli.tmp / "important" / "new" / "application"
    personal = cli.tmp / "personal"
    (app / "src" / "obj").mkdir(parents=True)
    personal.mkdir()
    profile = cli.tmp / "profile.toml"
    profile.write_text(PROFILE.format(app=app, personal=personal))
    (app / "vault.h").write_bytes(b"#pragma once\n")
    (app / "src" / "main.o").write_bytes(b"\x7fELF")
    (app / "src" / "obj" / "gen.c").write_bytes(b"generated")
    main_c = app / "src" / "main.c"

    def backup(*extra: str) -> dict:  # type: ignore[type-arg]
        return json.loads(cli.ok("backup", str(profile), "--json", *extra).stdout)  # type: ignore[no-any-return]

    def versions(name: str) -> list[int]:
        out = json.loads(cli.ok("versions", name, "--json").stdout)
        return [v["version"] for v in out["versions"]]

    for i in range(1, 8):
        main_c.write_bytes(f"int main(void) {{ return {i}; }}\n".encode())
        (personal / "todays_shopping_list").write_bytes(f"eggs x{i}\n".encode())
        if i == 7:
            plan = backup("--dry-run")
            assert [(r["name"], r["version"]) for r in plan["plan"]["remove"]] == [
                ("application/src/main.c", 2),
                ("personal/todays_shopping_list", 6),
            ]
            assert versions("application/src/main.c") == [2, 3, 4, 5, 6]
        out = backup()
        assert out["result"]["failures"] == []
        deposited = sorted(d["name"] for d in out["result"]["deposited"])
        expected = ["application/src/main.c", "personal/todays_shopping_list"]
        if i == 1:
            expected = ["application/src/main.c", "application/vault.h", *expected[1:]]
        assert deposited == expected  # vault.h unchanged after the first run; .o and obj/ never
    assert versions("application/src/main.c") == [3, 4, 5, 6, 7]
    assert versions("personal/todays_shopping_list") == [7]
    assert versions("application/vault.h") == [1]

    target = cli.tmp / "restored"
    cli.ok("restore", str(profile), "--to", str(target))
    assert (target / "application" / "src" / "main.c").read_bytes() == main_c.read_bytes()
    assert not (target / "application" / "src" / "obj").exists()
