"""The client commands end to end against a fake gateway (httpx.MockTransport).

Every test runs the real `evault` click group; only the network is replaced.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from evault import cli_client
from evault.cli import main
from evault.client.config import ClientPaths
from evault.client.receipt_store import ReceiptStore
from evault.client.receipts import Receipt, receipts_to_json
from tests.unit.test_client_fakegateway import (
    FakeGateway,
    make_receipt,
    other_private_key,
    public_pem,
    vault_private_key,
    write_client_config,
)

GW_A = "https://gw-a:8443"
GW_B = "https://gw-b:8443"


@dataclass
class Env:
    fake: FakeGateway
    config: Path
    home: Path
    work: Path

    def run(
        self, *args: str, password: str | None = "correct horse", input: str | None = None
    ) -> Result:
        env = {"EVAULT_PASSWORD": password or "", "COLUMNS": "200"}
        return CliRunner().invoke(main, [*args, "--config", str(self.config)], env=env, input=input)

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result

    def fails(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.exit_code == 1, (result.stdout, result.stderr)
        assert result.stderr.startswith("evault: ") and "Traceback" not in result.stderr
        return result

    @property
    def paths(self) -> ClientPaths:
        return ClientPaths.resolve(self.config)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    fake = FakeGateway()
    monkeypatch.setattr(cli_client, "TRANSPORT_FACTORY", fake.transport)
    # Never touch the real user directories.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    config = write_client_config(tmp_path / "client", [GW_A, GW_B])
    work = tmp_path / "work"
    work.mkdir()
    yield Env(fake, config, tmp_path, work)


@pytest.fixture
def alice(env: Env) -> Env:
    env.ok("register", "--user-id", "Alice", "--name", "Alice A.", "--contact", "a@x")
    return env


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- users ---------------------------------------------------------------------------------------


def test_register_logs_in_and_keeps_the_token_private(env: Env) -> None:
    result = env.ok("register", "--user-id", "Alice", "--name", "Alice", "--contact", "")
    assert "Registered 'alice' and logged in" in result.stdout
    token_file = env.paths.token_file
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    doc = json.loads(token_file.read_text())
    assert doc["user_id"] == "alice" and doc["token"] in env.fake.tokens


def test_login_with_a_wrong_password_is_one_sentence(alice: Env) -> None:
    result = alice.run("login", "--user-id", "alice", password="wrong")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "evault: error: the gateway refused: unknown user id or wrong password "
        "(HTTP 401 auth_failed)"
    )


def test_login_prompts_for_the_password_when_the_environment_has_none(alice: Env) -> None:
    result = alice.run("login", "--user-id", "alice", password=None, input="correct horse\n")
    assert result.exit_code == 0, result.stderr
    assert "Logged in as 'alice'" in result.stdout


def test_passwd_changes_the_password_and_keeps_the_new_token(alice: Env) -> None:
    old_token = json.loads(alice.paths.token_file.read_text())["token"]
    result = alice.run("passwd", input="a new password\na new password\n")
    assert result.exit_code == 0, result.stderr
    assert "Password of 'alice' changed" in result.stdout
    new_token = json.loads(alice.paths.token_file.read_text())["token"]
    assert old_token not in alice.fake.tokens and alice.fake.tokens == {new_token: "alice"}
    assert stat.S_IMODE(alice.paths.token_file.stat().st_mode) == 0o600
    alice.ok("ls")  # with the new token
    assert alice.run("login", "--user-id", "alice").exit_code == 1  # the old password is gone
    result = alice.run("login", "--user-id", "alice", password="a new password")
    assert result.exit_code == 0, result.stderr


def test_passwd_with_a_wrong_current_password_changes_nothing(alice: Env) -> None:
    result = alice.run("passwd", password="wrong", input="a new password\na new password\n")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "evault: error: the gateway refused: unknown user id or wrong password "
        "(HTTP 401 auth_failed)"
    )
    assert alice.fake.users["alice"] == "correct horse"
    result = alice.run("passwd", input="short\nshort\n")
    assert result.exit_code == 1 and "bad_password" in result.stderr


def test_a_refused_token_says_to_log_in_again(alice: Env) -> None:
    alice.fake.tokens.clear()  # revoked at the gateway (a password change elsewhere, say)
    result = alice.fails("ls")
    assert "token is invalid, expired or revoked; log in again with `evault login`" in (
        result.stderr
    )


def test_logout_revokes_and_forgets(alice: Env) -> None:
    assert len(alice.fake.tokens) == 1
    alice.ok("logout")
    assert alice.fake.tokens == {}
    assert not alice.paths.token_file.exists()
    result = alice.fails("ls")
    assert "not logged in" in result.stderr and "evault login" in result.stderr


def test_a_gateway_announcing_another_vault_key_is_refused_at_login(alice: Env) -> None:
    alice.fake.announce_other_key = True
    result = alice.fails("login", "--user-id", "alice")
    assert "other than the configured" in result.stderr


def test_a_missing_configuration_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    monkeypatch.delenv("EVAULT_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["login", "--user-id", "x"], env={"EVAULT_PASSWORD": "p"})
    assert result.exit_code == 1
    assert "no client configuration" in result.stderr and "--config" in result.stderr


# --- fail-over -----------------------------------------------------------------------------------


def test_a_dead_gateway_is_skipped_for_the_next_one_and_said_once(alice: Env) -> None:
    alice.fake.dead.add("gw-a:8443")
    (alice.work / "f.txt").write_bytes(b"x")
    result = alice.ok("deposit", str(alice.work / "f.txt"), "--json")
    assert result.stderr.count("gw-a:8443 did not answer") == 1
    assert json.loads(result.stdout)["deposited"][0]["version"] == 1


# --- deposit -------------------------------------------------------------------------------------


def test_deposit_a_tree_verifies_and_keeps_every_receipt(alice: Env) -> None:
    tree = alice.work / "proj"
    (tree / "src" / "deep").mkdir(parents=True)
    files = {
        "a.txt": b"alpha",
        "src/b.c": b"int main;",
        "src/deep/c.h": b"",
        "src/deep/big.bin": os.urandom(3 * 1024 * 1024 + 5),
    }
    for rel, data in files.items():
        (tree / rel).write_bytes(data)
    result = alice.ok("deposit", str(tree), "--json", "--jobs", "3")
    out = json.loads(result.stdout)
    assert out["failed"] == []
    got = {d["name"]: d for d in out["deposited"]}
    assert set(got) == {f"proj/{rel}" for rel in files}
    for rel, data in files.items():
        d = got[f"proj/{rel}"]
        assert (d["size"], d["sha256"], d["version"]) == (len(data), sha(data), 1)
    with ReceiptStore(alice.paths.receipts_db) as store:
        assert {r.name for r in store.all("alice")} == set(got)


def test_deposit_with_name_and_a_table(alice: Env) -> None:
    (alice.work / "f.txt").write_bytes(b"x")
    result = alice.ok("deposit", str(alice.work / "f.txt"), "--name", "notes/today.txt")
    assert "notes/today.txt" in result.stdout and "receipts verified" in result.stdout.lower()
    assert alice.fake.versions_of("alice", "notes/today.txt") == [1]


@pytest.mark.parametrize("name", ["a[/]b.txt", "[red]plain[/red].txt", "reports/[2026] q3"])
def test_names_that_look_like_markup_are_printed_as_they_are(alice: Env, name: str) -> None:
    """Document names may hold brackets: tables and bars show them literally (rich markup
    would hide or colour part of a name, or fail on an unmatched closing tag)."""
    (alice.work / "f.txt").write_bytes(b"x")
    assert name in alice.ok("deposit", str(alice.work / "f.txt"), "--name", name).stdout
    assert name in alice.ok("ls").stdout
    assert name in alice.ok("versions", name).stdout


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("forge_signature", "does not verify with the vault public key"),
        ("sign_wrong_sha", "it signs sha256"),
        ("sign_other_owner", "it signs owner 'mallory'"),
    ],
)
def test_a_bad_receipt_fails_the_deposit_and_is_not_kept(
    alice: Env, fault: str, message: str
) -> None:
    setattr(alice.fake, fault, True)
    (alice.work / "f.txt").write_bytes(b"content")
    result = alice.fails("deposit", str(alice.work / "f.txt"))
    assert message in result.stderr
    assert result.stderr.startswith("evault: error: deposit failed: ")
    assert result.stderr.count("\n") == 1
    with ReceiptStore(alice.paths.receipts_db) as store:
        assert store.all() == []


def test_one_failure_does_not_stop_the_batch(alice: Env) -> None:
    good = alice.work / "good.txt"
    good.write_bytes(b"fine")
    original = alice.fake._deposit

    def refuse_one(request, owner, name):  # type: ignore[no-untyped-def]
        if name == "p/bad.txt":
            return alice.fake._error(400, "bad_name", "bad document name 'bad.txt': no reason")
        return original(request, owner, name)

    alice.fake._deposit = refuse_one  # type: ignore[method-assign]
    (alice.work / "bad.txt").write_bytes(b"x")
    result = alice.run("deposit", str(good), str(alice.work / "bad.txt"), "--json", "--name", "p")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert [d["name"] for d in out["deposited"]] == ["p/good.txt"]
    assert out["failed"][0]["name"] == "p/bad.txt" and "bad_name" in out["failed"][0]["error"]


def test_a_missing_path_is_one_sentence(alice: Env) -> None:
    result = alice.fails("deposit", str(alice.work / "nope"))
    assert "nope" in result.stderr and "No such file" in result.stderr


# --- retrieve ------------------------------------------------------------------------------------


def test_retrieve_checks_against_the_kept_receipt_and_writes_atomically(alice: Env) -> None:
    data = os.urandom(2 * 1024 * 1024 + 3)
    (alice.work / "f.bin").write_bytes(data)
    alice.ok("deposit", str(alice.work / "f.bin"), "--name", "dir/f.bin")
    out_dir = alice.home / "out"
    result = alice.ok("retrieve", "dir/f.bin", "-o", str(out_dir), "--json")
    got = json.loads(result.stdout)["retrieved"][0]
    assert got["checked_against"] == "local" and got["version"] == 1
    assert (out_dir / "dir" / "f.bin").read_bytes() == data
    assert sorted(p.name for p in (out_dir / "dir").iterdir()) == ["f.bin"]


@pytest.mark.parametrize("fault", ["corrupt_bytes", "truncate_bytes"])
def test_retrieve_of_wrong_bytes_writes_nothing(alice: Env, fault: str) -> None:
    (alice.work / "f.txt").write_bytes(b"the right bytes")
    alice.ok("deposit", str(alice.work / "f.txt"))
    setattr(alice.fake, fault, True)
    out_dir = alice.home / "out"
    result = alice.fails("retrieve", "f.txt", "-o", str(out_dir))
    assert "does not match its receipt" in result.stderr
    assert list(out_dir.iterdir()) == []  # no output file, no temporary file left


def test_retrieve_keeps_an_existing_file_when_the_new_bytes_are_wrong(alice: Env) -> None:
    (alice.work / "f.txt").write_bytes(b"version one")
    alice.ok("deposit", str(alice.work / "f.txt"))
    out_dir = alice.home / "out"
    out_dir.mkdir()
    (out_dir / "f.txt").write_bytes(b"precious local copy")
    alice.fake.corrupt_bytes = True
    alice.fails("retrieve", "f.txt", "-o", str(out_dir))
    assert (out_dir / "f.txt").read_bytes() == b"precious local copy"


def test_retrieve_without_a_kept_receipt_verifies_the_vaults(alice: Env) -> None:
    (alice.work / "f.txt").write_bytes(b"abc")
    alice.ok("deposit", str(alice.work / "f.txt"))
    alice.paths.receipts_db.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(alice.paths.receipts_db) + suffix).unlink(missing_ok=True)
    result = alice.ok("retrieve", "f.txt", "-o", str(alice.home / "o"), "--json")
    assert json.loads(result.stdout)["retrieved"][0]["checked_against"] == "vault"
    # A forged vault receipt is refused, and nothing is written.
    versions = alice.fake.docs[("alice", "f.txt")]
    versions[0].signature = bytes([versions[0].signature[0] ^ 1]) + versions[0].signature[1:]
    alice.paths.receipts_db.unlink()
    result = alice.fails("retrieve", "f.txt", "-o", str(alice.home / "o2"))
    assert "does not verify" in result.stderr
    assert not (alice.home / "o2" / "f.txt").exists()


def test_retrieve_a_given_version_and_several_names(alice: Env) -> None:
    f = alice.work / "f.txt"
    for content in (b"one", b"two", b"three"):
        f.write_bytes(content)
        alice.ok("deposit", str(f))
    (alice.work / "g.txt").write_bytes(b"gee")
    alice.ok("deposit", str(alice.work / "g.txt"))
    alice.ok("retrieve", "f.txt", "--version", "2", "-o", str(alice.home / "v2"))
    assert (alice.home / "v2" / "f.txt").read_bytes() == b"two"
    alice.ok("retrieve", "f.txt", "g.txt", "-o", str(alice.home / "all"))
    assert (alice.home / "all" / "f.txt").read_bytes() == b"three"
    assert (alice.home / "all" / "g.txt").read_bytes() == b"gee"
    result = alice.run("retrieve", "f.txt", "g.txt", "--version", "1")
    assert result.exit_code == 2 and "--version needs exactly one NAME" in result.stderr


# --- listings ------------------------------------------------------------------------------------


def test_ls_and_versions(alice: Env) -> None:
    f = alice.work / "f.txt"
    for content in (b"1", b"22"):
        f.write_bytes(content)
        alice.ok("deposit", str(f))
    docs = json.loads(alice.ok("ls", "--json").stdout)["documents"]
    assert [(d["name"], d["latest_version"], d["receipt_kept"]) for d in docs] == [
        ("f.txt", 2, True)
    ]
    versions = json.loads(alice.ok("versions", "f.txt", "--json").stdout)["versions"]
    assert [(v["version"], v["size"]) for v in versions] == [(1, 1), (2, 2)]
    table = alice.ok("ls").stdout
    assert "f.txt" in table and "1 document(s)" in table
    assert "f.txt" in alice.ok("versions", "f.txt").stdout
    result = alice.fails("versions", "nothing")
    assert "HTTP 404 not_found" in result.stderr


# --- offline verification and export -------------------------------------------------------------


def test_export_then_verify_offline_and_detect_a_tampered_file(alice: Env) -> None:
    f = alice.work / "f.txt"
    f.write_bytes(b"important")
    alice.ok("deposit", str(f))
    exported = alice.home / "f.receipt.json"
    alice.ok("receipts", "export", "f.txt", "-o", str(exported))
    alice.fake.dead.update({"gw-a:8443", "gw-b:8443"})  # offline: no gateway needed
    result = alice.ok("verify", str(exported), str(f))
    assert "valid receipt: 'f.txt' version 1" in result.stdout
    assert "matches the receipt" in result.stdout
    f.write_bytes(b"importanT")
    result = alice.fails("verify", str(exported), str(f))
    assert "does not match its receipt: SHA-256" in result.stderr


def test_verify_a_tampered_receipt_file_fails_clearly(alice: Env) -> None:
    statement, signature = make_receipt(data=b"x")
    doc = json.loads(receipts_to_json([Receipt.from_parts(statement, signature)]))
    doc["signature"] = base64.b64encode(bytes([signature[0] ^ 1]) + signature[1:]).decode()
    path = alice.home / "r.json"
    path.write_text(json.dumps(doc))
    result = alice.fails("verify", str(path))
    assert "does not verify with the vault public key" in result.stderr


def test_export_all_as_a_bundle_to_stdout(alice: Env) -> None:
    for name in ("a", "b"):
        (alice.work / name).write_bytes(name.encode())
        alice.ok("deposit", str(alice.work / name))
    bundle = json.loads(alice.ok("receipts", "export").stdout)
    assert bundle["format"] == "evault-receipts/v1"
    assert [r["name"] for r in bundle["receipts"]] == ["a", "b"]
    path = alice.home / "bundle.json"
    path.write_text(json.dumps(bundle))
    assert alice.ok("verify", str(path)).stdout.count("valid receipt") == 2
    result = alice.fails("receipts", "export", "never-deposited")
    assert "no receipt for 'never-deposited'" in result.stderr


# --- the minimal client: extractkey, verify --page, extractfile ---------------------------------


def registration_page(pem: bytes) -> str:
    return (
        "<!doctype html><html><body><h1>Welcome</h1><p>The vault's public key:</p>"
        f'<pre id="vault-public-key">{pem.decode()}</pre></body></html>'
    )


def deposit_page(statement: bytes, signature: bytes, sha256: str) -> str:
    return (
        "<html><body><h1>Deposited</h1>"
        f'<pre id="receipt-statement">{base64.b64encode(statement).decode()}</pre>'
        f'<pre id="receipt-signature">{base64.b64encode(signature).decode()}</pre>'
        f'<p>SHA-256: <span id="receipt-sha256">{sha256}</span></p></body></html>'
    )


def retrieval_page(name: str, data: bytes) -> str:
    return (
        f'<html><body><span id="document-name">{name}</span>'
        f'<pre id="document-base64">{base64.encodebytes(data).decode()}</pre></body></html>'
    )


@pytest.fixture
def minimal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No configuration at all: the minimal client works from pages and its data dir."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("EVAULT_CONFIG", raising=False)
    return tmp_path


def run_plain(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_minimal_client_round_trip(minimal: Path) -> None:
    reg = minimal / "register.html"
    reg.write_text(registration_page(public_pem(vault_private_key())))
    result = run_plain("extractkey", str(reg))
    assert result.exit_code == 0, result.stderr
    assert "Fingerprint" in result.stdout
    data = b"my last will and testament"
    statement, signature = make_receipt(name="will.txt", data=data)
    dep = minimal / "deposit.html"
    dep.write_text(deposit_page(statement, signature, sha(data)))
    result = run_plain("verify", "--page", str(dep))
    assert result.exit_code == 0, result.stderr
    assert (
        "valid receipt: 'will.txt'" in result.stdout
        and "Kept in the receipt store" in result.stdout
    )
    page = minimal / "retrieved.html"
    page.write_text(retrieval_page("will.txt", data))
    out = minimal / "out" / "will.txt"
    result = run_plain("extractfile", str(page), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == data
    # A page with other bytes is refused and writes nothing.
    page.write_text(retrieval_page("will.txt", data + b" (edited)"))
    out2 = minimal / "out" / "will-2.txt"
    result = run_plain("extractfile", str(page), "-o", str(out2))
    assert result.exit_code == 1 and "does not match its receipt" in result.stderr
    assert not out2.exists() and sorted(p.name for p in out.parent.iterdir()) == ["will.txt"]


def test_verify_page_refuses_a_forged_receipt_and_an_inconsistent_hash(minimal: Path) -> None:
    key = minimal / "k.pem"
    key.write_bytes(public_pem(vault_private_key()))
    statement, signature = make_receipt(data=b"abc", key=other_private_key())
    dep = minimal / "deposit.html"
    dep.write_text(deposit_page(statement, signature, sha(b"abc")))
    result = run_plain("verify", "--page", str(dep), "--key", str(key))
    assert result.exit_code == 1 and "does not verify" in result.stderr
    statement, signature = make_receipt(data=b"abc")
    dep.write_text(deposit_page(statement, signature, sha(b"abd")))
    result = run_plain("verify", "--page", str(dep), "--key", str(key))
    assert result.exit_code == 1 and "signed statement says" in result.stderr


def test_extractfile_without_a_kept_receipt_says_what_to_do(minimal: Path) -> None:
    page = minimal / "r.html"
    page.write_text(retrieval_page("x.txt", b"x"))
    result = run_plain("extractfile", str(page), "-o", str(minimal / "x.txt"))
    assert result.exit_code == 1 and "evault verify --page" in result.stderr
    assert not (minimal / "x.txt").exists()


def test_verify_without_any_key_says_where_to_get_one(minimal: Path) -> None:
    statement, signature = make_receipt()
    dep = minimal / "deposit.html"
    dep.write_text(deposit_page(statement, signature, sha(b"hello")))
    result = run_plain("verify", "--page", str(dep))
    assert result.exit_code == 1 and "evault extractkey" in result.stderr
