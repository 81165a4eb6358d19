"""Deposit → receipt → retrieve on real processes over TLS (issue 4's "Done when").

Every vault here is n node processes and a gateway process on 127.0.0.1, made by the real
`evault init` and started the way `evault up` starts them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evault.protocol.node_api import object_id
from evault.protocol.statement import Statement
from tests.integration.vault_fixtures import LiveVault, VaultFactory

pytestmark = pytest.mark.integration


def openssl_verifies(vault: LiveVault, statement: bytes, signature: bytes, tmp: Path) -> bool:
    (tmp / "statement.bin").write_bytes(statement)
    (tmp / "sig.bin").write_bytes(signature)
    result = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
            "-verify",
            str(vault.directory / "client" / "vault-public.pem"),
            "-signature",
            str(tmp / "sig.bin"),
            str(tmp / "statement.bin"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode == 0 and "Verified OK" in result.stdout


def deposit(vault: LiveVault, token: str, name: str, data: bytes) -> dict[str, object]:
    r = vault.client.put(
        f"/api/v1/documents/{name}",
        content=data,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.text
    body: dict[str, object] = r.json()
    return body


def retrieve(vault: LiveVault, token: str, name: str, version: int | None = None) -> bytes:
    params = {"version": version} if version is not None else {}
    r = vault.client.get(
        f"/api/v1/documents/{name}", params=params, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    return r.content


def receipt_parts(body: dict[str, object]) -> tuple[bytes, bytes]:
    receipt = body["receipt"]
    assert isinstance(receipt, dict)
    return base64.b64decode(receipt["statement"]), base64.b64decode(receipt["signature"])


def test_happy_path_receipts_verify_with_openssl_and_bytes_come_back(
    vault: LiveVault, tmp_path: Path
) -> None:
    token = vault.register()
    info = vault.client.get("/api/v1/vault").json()
    assert (info["n"], info["m"], info["k"]) == (5, 3, 4)
    for size in (0, 1, 1 << 20, (1 << 20) * 3 + 17):
        data = os.urandom(size)
        name = f"docs/file-{size}.bin"
        body = deposit(vault, token, name, data)
        statement, signature = receipt_parts(body)
        st = Statement.from_bytes(statement)
        assert (st.owner, st.name, st.size) == ("alice", name, size)
        assert st.sha256 == hashlib.sha256(data).hexdigest() == body["sha256"]
        assert st.vault == info["vault_id"]
        assert openssl_verifies(vault, statement, signature, tmp_path)
        assert not openssl_verifies(
            vault, statement.replace(b"alice", b"mallory"), signature, tmp_path
        )
        assert retrieve(vault, token, name) == data
    # Versions count up, and each version keeps its own bytes.
    first = deposit(vault, token, "notes.txt", b"first")
    second = deposit(vault, token, "notes.txt", b"second")
    assert int(second["version"]) > int(first["version"])  # type: ignore[call-overload]
    assert retrieve(vault, token, "notes.txt", int(first["version"])) == b"first"  # type: ignore[call-overload]
    assert retrieve(vault, token, "notes.txt") == b"second"
    listing = vault.client.get(
        "/api/v1/documents", headers={"Authorization": f"Bearer {token}"}
    ).json()
    names = {d["name"] for d in listing["documents"]}
    assert {"notes.txt", "docs/file-0.bin"} <= names


def test_100_mib_document_round_trip(vault: LiveVault, tmp_path: Path) -> None:
    token = vault.register()
    data = os.urandom(100 * (1 << 20))
    body = deposit(vault, token, "big.bin", data)
    statement, signature = receipt_parts(body)
    assert openssl_verifies(vault, statement, signature, tmp_path)
    assert (
        hashlib.sha256(retrieve(vault, token, "big.bin")).digest() == hashlib.sha256(data).digest()
    )


def test_one_node_down_deposits_still_get_receipts(vault: LiveVault, tmp_path: Path) -> None:
    token = vault.register()
    vault.kill_node(2)
    data = os.urandom(300_000)
    body = deposit(vault, token, "one-down.bin", data)
    statement, signature = receipt_parts(body)
    assert openssl_verifies(vault, statement, signature, tmp_path)
    assert retrieve(vault, token, "one-down.bin") == data


def test_two_nodes_down_retrievals_still_right(vault: LiveVault) -> None:
    token = vault.register()
    data = os.urandom(2_500_000)
    deposit(vault, token, "two-down.bin", data)
    vault.kill_node(1)
    vault.kill_node(3)
    assert retrieve(vault, token, "two-down.bin") == data


def test_too_many_faults_is_a_clear_error_naming_nodes(vault: LiveVault) -> None:
    token = vault.register()
    data = os.urandom(100_000)
    deposit(vault, token, "fragile.bin", data)
    for i in (1, 2, 3):
        vault.kill_node(i)
    r = vault.client.get(
        "/api/v1/documents/fragile.bin", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code in (502, 503), r.text
    error = r.json()["error"]
    assert error["code"] == "not_enough_slices"
    for i in (1, 2, 3):
        assert str(i) in error["message"]
    # Deposits with two nodes down cannot get k=4 shares: a clear error, nothing listed.
    r = vault.client.put(
        "/api/v1/documents/never.bin",
        content=b"x" * 1000,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert 500 <= r.status_code < 600 and r.status_code != 500, r.text
    assert "error" in r.json()
    listing = vault.client.get("/api/v1/documents", headers={"Authorization": f"Bearer {token}"})
    assert "never.bin" not in {d["name"] for d in listing.json()["documents"]}


def test_lying_node_is_named_and_changes_nothing(
    vault_factory: VaultFactory, tmp_path: Path
) -> None:
    v = vault_factory.start(
        tmp_path / "vault",
        extra_node_args={4: ["--fault", "lie"]},
        env={"EVAULT_ALLOW_FAULTS": "1"},
    )
    try:
        token = v.register()
        data = os.urandom(1_500_000)
        body = deposit(v, token, "liar.bin", data)
        statement, signature = receipt_parts(body)
        assert openssl_verifies(v, statement, signature, tmp_path)
        assert "4" in json.dumps(body.get("faulty_nodes", {})), body
        # Make sure the liar's slice is needed: take two honest nodes away.
        v.kill_node(1)
        v.kill_node(2)
        r = v.client.get("/api/v1/documents/liar.bin", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code in (502, 503) or r.content == data
        if r.status_code == 200:
            assert "4" in r.headers.get("Evault-Faulty-Nodes", "")
        assert "node 4" in v.log("gateway") or "node-4" in v.log("gateway")
    finally:
        v.stop()


def test_corrupted_slice_file_on_disk_is_detected(vault: LiveVault) -> None:
    token = vault.register()
    data = os.urandom(700_000)
    deposit(vault, token, "rot.bin", data)
    slices = list((vault.directory / "nodes" / "node-1" / "data").rglob("*.slice"))
    assert len(slices) == 1
    raw = bytearray(slices[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    slices[0].write_bytes(bytes(raw))
    assert retrieve(vault, token, "rot.bin") == data


def test_paper_setting_3_2_3_end_to_end(vault_factory: VaultFactory, tmp_path: Path) -> None:
    v = vault_factory.start(tmp_path / "vault", 3, 2, 3)
    try:
        token = v.register()
        data = os.urandom(123_457)
        body = deposit(v, token, "paper.bin", data)
        statement, signature = receipt_parts(body)
        st = Statement.from_bytes(statement)
        assert (st.n, st.m) == (3, 2)
        assert openssl_verifies(v, statement, signature, tmp_path)
        v.kill_node(3)
        assert retrieve(v, token, "paper.bin") == data
    finally:
        v.stop()


def test_gateway_killed_and_restarted_loses_nothing_receipted(
    vault_factory: VaultFactory, tmp_path: Path
) -> None:
    v = vault_factory.start(tmp_path / "vault")
    try:
        token = v.register()
        data = os.urandom(50_000)
        deposit(v, token, "survivor.bin", data)
        gw = v.cluster.processes["gateway"]
        gw.send_signal(signal.SIGKILL)
        gw.wait(timeout=10)
    finally:
        v.stop()
    v2 = vault_factory.restart(v)
    try:
        assert retrieve(v2, v2.login(), "survivor.bin") == data
    finally:
        v2.stop()


def test_node_sigkilled_mid_deposit_gives_receipt_or_clear_error(
    vault: LiveVault, tmp_path: Path
) -> None:
    token = vault.register()
    chunk = os.urandom(256 * 1024)
    chunks = 24

    def body():  # type: ignore[no-untyped-def]
        for i in range(chunks):
            if i == 8:
                vault.kill_node(2)  # SIGKILL while the document is streaming to it
            yield chunk

    r = vault.client.put(
        "/api/v1/documents/interrupted.bin",
        content=body(),
        headers={"Authorization": f"Bearer {token}"},
    )
    auth = {"Authorization": f"Bearer {token}"}
    if r.status_code == 201:
        statement, signature = receipt_parts(r.json())
        assert openssl_verifies(vault, statement, signature, tmp_path)
        assert Statement.from_bytes(statement).size == len(chunk) * chunks
        assert retrieve(vault, token, "interrupted.bin") == chunk * chunks
    else:
        assert r.status_code >= 400 and "error" in r.json()
        listing = vault.client.get("/api/v1/documents", headers=auth).json()
        assert "interrupted.bin" not in {d["name"] for d in listing["documents"]}
    # Retrying succeeds with the four remaining nodes.
    body2 = deposit(vault, token, "interrupted.bin", chunk * 4)
    statement, signature = receipt_parts(body2)
    assert openssl_verifies(vault, statement, signature, tmp_path)
    assert retrieve(vault, token, "interrupted.bin") == chunk * 4


def test_a_slice_missed_by_a_delete_is_swept_when_the_gateway_starts(
    vault_factory: VaultFactory, tmp_path: Path
) -> None:
    v = vault_factory.start(tmp_path / "vault")
    try:
        token = v.register()
        body = deposit(v, token, "gone.bin", os.urandom(30_000))
        deposit(v, token, "kept.bin", b"kept")
        statement = Statement.from_bytes(receipt_parts(body)[0])
        oid = object_id(statement.vault, "alice", "gone.bin", 1)
        v.kill_node(2)
        r = v.client.delete(
            "/api/v1/documents/gone.bin",
            params={"version": 1},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 204 and "2" in json.loads(r.headers["evault-failed-nodes"])
    finally:
        v.stop()
    before = {node: len(v.log(f"node-{node}")) for node in range(1, 6)}
    v2 = vault_factory.restart(v)  # every node up again; the gateway sweeps as it starts

    def since_restart(node: int) -> str:
        return v2.log(f"node-{node}")[before[node] :]

    try:
        deadline = time.monotonic() + 60
        while not (
            f"DELETE /v1/objects/{oid}" in since_restart(2)
            and f"node 2: swept object {oid}" in v2.log("gateway")
        ):
            assert time.monotonic() < deadline, v2.log("gateway")[-2000:]
            time.sleep(0.2)
        assert retrieve(v2, v2.login(), "kept.bin") == b"kept"
        for node in (1, 3, 4, 5):  # the DELETE reached them the first time
            assert "DELETE /v1/objects/" not in since_restart(node)
    finally:
        v2.stop()


def evault_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evault", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_lost_catalog_is_restored_from_the_nodes_with_the_very_receipts(
    vault_factory: VaultFactory, tmp_path: Path
) -> None:
    """DESIGN §8: the catalog can be rebuilt from what the nodes hold (docs/spec/catalog.md)."""
    v = vault_factory.start(tmp_path / "vault")
    data = {("will.pdf", 1): os.urandom(70_000), ("will.pdf", 2): b"second", ("dir/c", 1): b""}
    try:
        token = v.register()
        receipts = {
            key: receipt_parts(deposit(v, token, key[0], blob)) for key, blob in data.items()
        }
    finally:
        v.stop()
    catalog = v.directory / "gateway" / "catalog.sqlite"
    assert catalog.exists()
    for path in v.directory.joinpath("gateway").glob("catalog.sqlite*"):
        path.unlink()  # the catalog is lost; the nodes keep their slices
    v2 = vault_factory.restart(v)  # the gateway starts on a new, empty catalog
    config = str(v.directory / "gateway" / "gateway.toml")
    try:
        r = v2.client.post(
            "/api/v1/tokens", json={"user_id": "alice", "password": "correct horse battery"}
        )
        assert r.status_code == 401  # alice is gone with the catalog
        # The gateway's start-up sweep sees the nodes' objects the catalog lacks, and says
        # what to run (3 versions on 5 nodes).
        deadline = time.monotonic() + 60
        hint = "the nodes hold 15 object(s) of versions this catalog does not know"
        while hint not in v2.log("gateway"):
            assert time.monotonic() < deadline, v2.log("gateway")[-2000:]
            time.sleep(0.2)
        assert "evault admin restore-catalog" in v2.log("gateway")
        assert v2.log("gateway").count(hint) == 1  # one worker sweeps, however many serve

        dry = evault_cli("admin", "restore-catalog", "--config", config, "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert len(json.loads(dry.stdout.splitlines()[-1])["restored"]) == 3
        done = evault_cli("admin", "restore-catalog", "--config", config, "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.splitlines()[-1])
        assert report["listed"] == {str(node): 3 for node in range(1, 6)}
        assert {(x["name"], x["version"]) for x in report["restored"]} == set(data)
        assert report["accounts_created"] == ["alice"] and report["not_restored"] == []

        # Locked until the operator sets a password: nobody can log in or take the id.
        r = v2.client.post(
            "/api/v1/tokens", json={"user_id": "alice", "password": "correct horse battery"}
        )
        assert r.status_code == 401
        r = v2.client.post(
            "/api/v1/users",
            json={"user_id": "alice", "password": "mallory's password", "name": "M", "contact": ""},
        )
        assert r.status_code == 409

        def set_password(password: str) -> subprocess.CompletedProcess[str]:
            command = ["admin", "set-password", "--config", config, "alice", "--password-stdin"]
            return evault_cli(*command, stdin=password + "\n")

        bad = set_password("short")
        assert bad.returncode == 1 and "password" in bad.stderr
        ok = set_password("the operator's new password")
        assert ok.returncode == 0, ok.stderr
        token = v2.login("alice", "the operator's new password")
        # The owner replaces the password the operator handed over (the token is renewed).
        r = v2.client.put(
            "/api/v1/password",
            json={"password": "the operator's new password", "new_password": "alice's own again"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        assert v2.login("alice", "alice's own again")
        auth = {"Authorization": f"Bearer {token}"}
        for (name, version), blob in data.items():
            assert retrieve(v2, token, name, version) == blob
            r = v2.client.get(
                f"/api/v1/documents/{name}/receipt", params={"version": version}, headers=auth
            )
            assert r.status_code == 200, r.text
            assert (
                receipt_parts({"receipt": r.json()}) == receipts[(name, version)]
            )  # byte for byte
        assert openssl_verifies(v2, *receipts[("will.pdf", 1)], tmp_path)
        # A new deposit takes the number after the restored ones (nodes hold 1 and 2).
        assert deposit(v2, token, "will.pdf", b"third")["version"] == 3
        again = evault_cli("admin", "restore-catalog", "--config", config, "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout.splitlines()[-1])["known"] == 4
    finally:
        v2.stop()
