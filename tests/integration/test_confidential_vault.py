"""Confidentiality end to end on a REAL vault (issue 6's "Done when"): 5 node processes and a
gateway on 127.0.0.1 over TLS, the `evault` CLI run in this process against them.

What is shown here, on real processes:

* encrypted round trips (0 B, 1 MiB here; 100 MiB in the slow test), receipts over ciphertext;
* the plaintext and the file key (raw, hex, base64 at every alignment) appear nowhere: not in
  any node's data directory, not in the gateway's catalog database or any log, not in anything
  the gateway sent to or received from a node (recorded by the nodes' test-only traffic
  recorder) or exchanged with the client (recorded by a transport in the CLI);
* a malicious gateway (a test double holding the gateway's real client certificate, talking
  to the real nodes) gets no partial unwrap without the client's signature, gets nothing for a
  replayed request, and what it does see (the partials of a request it relayed) does not open
  the wrap; it cannot register another identity for the user either;
* a tampered ciphertext (deposited as such, so the receipt covers it) gives a clear error and
  no output file; a tampered transfer likewise;
* a node lying about its partial unwrap is named and excluded and the retrieval succeeds;
  with t nodes down deposit and retrieval still work;
* `evault armor` / `evault dearmor` (base64 4-for-3, hex 2-for-1) round trip;
* the web UI marks the encrypted version.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import ssl
import time
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import pytest
from click.testing import CliRunner, Result

from evault import cli_client
from evault.cli import main
from evault.client import confidential
from evault.client.config import ClientPaths
from evault.crypto.feldman import deal_unwrap_key, seal_dealing
from evault.crypto.group import lagrange_at_zero
from evault.crypto.stream import read_stream_header
from evault.crypto.unwrap import (
    PartialUnwrap,
    WrapContext,
    WrappedKey,
    blind,
    make_unwrap_request,
    open_wrapped_key,
    sign_unwrap_request,
)
from evault.errors import DecryptionError, NodeRejected
from evault.protocol.node_api import KeyCertificate, KeyDeposit, object_id, owner_id
from evault.transport import tls
from evault.transport.nodes import NodeAddress, NodeSet
from tests.integration.vault_fixtures import LiveVault, VaultFactory

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
KEY_PASSPHRASE = "a key passphrase nobody else knows"
MIB = 1 << 20


# --- recording what crosses the client <-> gateway link ----------------------------------------


class _RecordingStream(httpx.SyncByteStream):
    def __init__(self, inner: Iterable[bytes], sink: bytearray, mutate: Any = None) -> None:
        self.inner = inner
        self.sink = sink
        self.mutate = mutate

    def __iter__(self) -> Iterator[bytes]:
        offset = 0
        for chunk in self.inner:
            if self.mutate is not None:
                chunk = self.mutate(offset, chunk)
            offset += len(chunk)
            self.sink += chunk
            yield chunk

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


@dataclass
class Recorder:
    """An httpx transport for the CLI that records every request and response body (and can
    tamper with document downloads, playing a malicious gateway)."""

    ca: Path
    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)
    tamper_download_at: int | None = None

    def transport(self) -> httpx.BaseTransport:
        inner = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(self.ca)))
        recorder = self

        class Transport(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                request.stream = _RecordingStream(request.stream, recorder.sent)  # type: ignore[arg-type]
                response = inner.handle_request(request)
                mutate = None
                if (
                    recorder.tamper_download_at is not None
                    and request.method == "GET"
                    and "/api/v1/documents/" in request.url.path
                    and not request.url.path.endswith(("/receipt", "/versions"))
                ):
                    mutate = recorder._flip
                response.stream = _RecordingStream(response.stream, recorder.received, mutate)  # type: ignore[arg-type]
                return response

            def close(self) -> None:
                inner.close()

        return Transport()

    def _flip(self, offset: int, chunk: bytes) -> bytes:
        at = self.tamper_download_at
        assert at is not None
        if offset <= at < offset + len(chunk):
            i = at - offset
            return chunk[:i] + bytes([chunk[i] ^ 0x01]) + chunk[i + 1 :]
        return chunk


@dataclass
class Cli:
    vault: LiveVault
    config: Path
    tmp: Path
    recorder: Recorder

    def run(self, *args: str, passphrase: str = KEY_PASSPHRASE) -> Result:
        offline = args[0] in ("armor", "dearmor")  # local tools: no configuration
        return CliRunner().invoke(
            main,
            [*args] if offline else [*args, "--config", str(self.config)],
            env={
                "EVAULT_PASSWORD": PASSWORD,
                "EVAULT_KEY_PASSPHRASE": passphrase,
                "COLUMNS": "200",
            },
        )

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.exit_code == 0, (result.stdout[-3000:], result.stderr[-3000:])
        return result

    def fails(self, *args: str, passphrase: str = KEY_PASSPHRASE) -> Result:
        result = self.run(*args, passphrase=passphrase)
        assert result.exit_code == 1, (result.stdout[-3000:], result.stderr[-3000:])
        assert result.stderr.startswith("evault: ") and "Traceback" not in result.stderr
        return result


def make_cli(
    vault: LiveVault, tmp: Path, monkeypatch: pytest.MonkeyPatch, user: str = "alice"
) -> Cli:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp / "xdg-data"))
    # `evault up` / start_cluster writes DIR/client.toml, seal_keys included.
    source = tomllib.loads((vault.directory / "client.toml").read_text())
    assert "seal_keys" in source
    config = tmp / f"{user}.toml"
    config.write_text((vault.directory / "client.toml").read_text())
    recorder = Recorder(vault.directory / "client" / "ca.pem")
    monkeypatch.setattr(cli_client, "TRANSPORT_FACTORY", recorder.transport)
    cli = Cli(vault, config, tmp, recorder)
    cli.ok("register", "--user-id", user, "--name", user.title(), "--contact", "", "--with-keys")
    return cli


# --- searching for secrets -------------------------------------------------------------------


def forms(secret: bytes) -> dict[str, bytes]:
    """Every printable form the secret could leak in: raw, hex, and base64 / base64url at
    each of the 3 alignments (the inner characters that depend on the secret alone)."""
    out = {"raw": secret, "hex": secret.hex().encode(), "HEX": secret.hex().upper().encode()}
    for shift in range(3):
        for name, enc in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            text = enc(bytes(shift) + secret + bytes(3))
            start = 4 if shift else 0
            out[f"{name}+{shift}"] = text[start : start + 4 * ((len(secret) - 3) // 3)]
    return out


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def find_leaks(secrets: dict[str, bytes], files: list[Path], blobs: dict[str, bytes]) -> list:
    leaks = []
    for label, secret in secrets.items():
        patterns = forms(secret)
        for path in files:
            data = path.read_bytes()
            leaks += [(label, form, str(path)) for form, p in patterns.items() if p in data]
        for where, data in blobs.items():
            leaks += [(label, form, where) for form, p in patterns.items() if p in data]
    return leaks


def test_forms_find_a_secret_in_any_encoding() -> None:
    secret = os.urandom(32)
    for shift in range(3):
        blob = b"x" * shift + secret + b"tail"
        for text in (
            blob,
            base64.b64encode(blob),
            base64.urlsafe_b64encode(blob),
            blob.hex().encode(),
        ):
            assert any(p in text for p in forms(secret).values()), (shift, text[:20])
    assert not any(p in os.urandom(4096) for p in forms(secret).values())


# --- the shared vault (traffic recorded by every node) ------------------------------------------


@pytest.fixture(scope="module")
def recorded_vault(
    vault_factory: VaultFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveVault, Path]]:
    root = tmp_path_factory.mktemp("confidential")
    traffic = root / "traffic"
    vault = vault_factory.start(
        root / "vault", env={"EVAULT_ALLOW_FAULTS": "1", "EVAULT_TRAFFIC_LOG": str(traffic)}
    )
    try:
        yield vault, traffic
    finally:
        vault.stop()


@pytest.fixture
def cli(
    recorded_vault: tuple[LiveVault, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Cli:
    vault, _ = recorded_vault
    user = re.sub(r"[^a-z0-9]", "", tmp_path.name.lower())[-20:] or "user"
    return make_cli(vault, tmp_path, monkeypatch, user="u" + user)


def marked_text(size: int, marker: bytes) -> bytes:
    """``size`` bytes of text with ``marker`` repeated through it."""
    line = b"confidential line " + marker + b"\n"
    return (line * (size // len(line) + 1))[:size]


def test_encrypted_round_trips_leak_nothing(
    cli: Cli, recorded_vault: tuple[LiveVault, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, traffic = recorded_vault
    file_keys: list[bytes] = []
    real_wrap = confidential.wrap_file_key

    def spy_wrap(file_key: bytes, *args: Any, **kwargs: Any) -> Any:
        file_keys.append(file_key)
        return real_wrap(file_key, *args, **kwargs)

    monkeypatch.setattr(confidential, "wrap_file_key", spy_wrap)
    marker = os.urandom(16).hex().encode()
    src = cli.tmp / "src"
    src.mkdir()
    docs = {"empty.txt": b"", "one-mib.txt": marked_text(MIB, marker)}
    for name, data in docs.items():
        (src / name).write_bytes(data)

    out = json.loads(
        cli.ok(
            "deposit", str(src / "empty.txt"), str(src / "one-mib.txt"), "--encrypt", "--json"
        ).stdout
    )
    assert out["failed"] == [] and len(file_keys) == 2
    for d in out["deposited"]:
        statement = json.loads(base64.b64decode(d["receipt"]["statement"]))
        assert statement["encrypted"] is True
        # The receipt covers the ciphertext: its size is the STREAM size, not the file's.
        assert d["size"] > len(docs[d["name"]])

    dest = cli.tmp / "out"
    got = json.loads(cli.ok("retrieve", *docs, "-o", str(dest), "--json").stdout)
    assert got["failed"] == []
    for name, data in docs.items():
        assert (dest / name).read_bytes() == data
    assert [p for p in dest.rglob("*") if p.name.endswith(".part")] == []

    # The versions listing marks them encrypted.
    assert json.loads(cli.ok("versions", "one-mib.txt", "--json").stdout)["versions"][0][
        "encrypted"
    ]

    # Positive controls: the recorders saw the document's ciphertext (so a leak would show).
    # The sample comes from a node's record of the one-MiB deposit, found by its object id:
    # the client's record interleaves the two deposits, which the CLI sends at once.
    big = next(d for d in out["deposited"] if d["name"] == "one-mib.txt")
    st = json.loads(base64.b64decode(big["receipt"]["statement"]))
    put = f"PUT /v1/objects/{object_id(st['vault'], st['owner'], st['name'], st['version'])}\n"
    recorded = [
        p.read_bytes() for p in files_under(traffic) if p.suffix == ".request" and p.stat().st_size
    ]
    deposit_bodies = [r[len(put) :] for r in recorded if r.startswith(put.encode())]
    assert len(deposit_bodies) == 5  # every node receives the whole document
    body = deposit_bodies[0]
    ciphertext_sample = body[body.index(b"\x89EVS\r\n\x1a\n") + 200 :][:64]
    assert len(ciphertext_sample) == 64
    sent = bytes(cli.recorder.sent)
    assert ciphertext_sample in sent
    assert ciphertext_sample in bytes(cli.recorder.received)
    assert marker in (src / "one-mib.txt").read_bytes()

    secrets = {"plaintext marker": marker, **{f"file key {i}": k for i, k in enumerate(file_keys)}}
    files = files_under(
        *(vault.directory / "nodes" / f"node-{i}" / "data" for i in range(1, 6)),
        vault.directory / "gateway",  # the catalog database (and its WAL)
        vault.directory / "logs",  # every process's log
        traffic,  # everything the gateway sent to and received from each node
    )
    assert any(p.name.startswith("catalog") for p in files)
    leaks = find_leaks(
        secrets,
        files,
        {"client->gateway": sent, "gateway->client": bytes(cli.recorder.received)},
    )
    assert leaks == []


def test_armor_and_dearmor_round_trip_the_ciphertext(cli: Cli) -> None:
    src = cli.tmp / "secret.bin"
    data = os.urandom(100_000)
    src.write_bytes(data)
    cli.ok("deposit", str(src), "--encrypt")
    raw_dir = cli.tmp / "raw"
    cli.ok("retrieve", "secret.bin", "--no-decrypt", "-o", str(raw_dir))
    ciphertext = (raw_dir / "secret.bin").read_bytes()
    assert ciphertext.startswith(b"\x89EVS") and data not in ciphertext
    for flag, ratio in (([], 4 / 3), (["--hex"], 2.0)):
        armored = cli.tmp / f"c{len(flag)}.asc"
        cli.ok("armor", str(raw_dir / "secret.bin"), "-o", str(armored), *flag)
        text = armored.read_bytes()
        assert text.isascii() and 1.0 < len(text) / len(ciphertext) / ratio < 1.03
        back = cli.tmp / f"c{len(flag)}.bin"
        cli.ok("dearmor", str(armored), "-o", str(back))
        assert back.read_bytes() == ciphertext
        damaged = cli.tmp / "damaged.asc"
        damaged.write_bytes(text.replace(text[100:101], b"!", 1))
        cli.fails("dearmor", str(damaged), "-o", str(cli.tmp / "never.bin"))
        assert not (cli.tmp / "never.bin").exists()


def test_tampered_ciphertext_is_a_clear_error_and_no_file(cli: Cli) -> None:
    src = cli.tmp / "doc.txt"
    src.write_bytes(marked_text(300_000, b"tamper-me"))
    cli.ok("deposit", str(src), "--encrypt")
    raw = cli.tmp / "raw"
    cli.ok("retrieve", "doc.txt", "--no-decrypt", "-o", str(raw))
    ciphertext = bytearray((raw / "doc.txt").read_bytes())
    ciphertext[200_000] ^= 0x40

    # 1. Tampered in the vault itself: deposited so, so the receipt covers the bad bytes and
    #    only the authenticated encryption can tell.
    token = json.loads(Path(f"{cli.config.with_suffix('')}.token.json").read_text())["token"]
    r = cli.vault.client.put(
        "/api/v1/documents/doc.txt",
        content=bytes(ciphertext),
        headers={"Authorization": f"Bearer {token}", "Evault-Encrypted": "1"},
    )
    assert r.status_code == 201, r.text
    dest = cli.tmp / "out"
    err = cli.fails("retrieve", "doc.txt", "-o", str(dest)).stderr
    assert "decryption failed at chunk 3" in err and "does not authenticate" in err
    assert not dest.exists() or list(dest.rglob("*")) == []

    # 2. Tampered in transit by the gateway: the byte is flipped on its way to the client.
    cli.recorder.tamper_download_at = 150_000
    try:
        err = cli.fails("retrieve", "doc.txt", "--version", "1", "-o", str(dest)).stderr
    finally:
        cli.recorder.tamper_download_at = None
    assert "decryption failed" in err
    assert not dest.exists() or list(dest.rglob("*")) == []
    # Untampered, version 1 comes back whole.
    cli.ok("retrieve", "doc.txt", "--version", "1", "-o", str(dest))
    assert (dest / "doc.txt").read_bytes() == src.read_bytes()


def test_a_wrong_key_passphrase_cannot_unwrap(cli: Cli) -> None:
    src = cli.tmp / "p.txt"
    src.write_bytes(b"for my eyes only")
    cli.ok("deposit", str(src), "--encrypt")
    # A fresh client (no local certificate file): it must verify the nodes' certificates
    # against the identity it derives, and a wrong passphrase finds none it may trust.
    ClientPaths.resolve(cli.config).unwrap_keys_file.unlink()
    err = cli.fails("retrieve", "p.txt", "-o", str(cli.tmp / "o"), passphrase="not the one!").stderr
    assert "no_unwrap_key" in err or "no unwrap key" in err
    # With the right one, the certificate is fetched, verified and used.
    cli.ok("retrieve", "p.txt", "-o", str(cli.tmp / "o"))
    assert (cli.tmp / "o" / "p.txt").read_bytes() == b"for my eyes only"


def test_a_newer_key_leaves_older_documents_readable(cli: Cli) -> None:
    old = cli.tmp / "old.txt"
    old.write_bytes(b"wrapped under the first key")
    cli.ok("deposit", str(old), "--encrypt")
    cli.ok("keys", "init")
    new = cli.tmp / "new.txt"
    new.write_bytes(b"wrapped under the second key")
    cli.ok("deposit", str(new), "--encrypt")
    listed = json.loads(cli.ok("keys", "list", "--json").stdout)["keys"]
    assert len(listed) == 2 and all(k["nodes_holding"] == 5 for k in listed)
    raw = cli.tmp / "raw"
    cli.ok("retrieve", "old.txt", "new.txt", "--no-decrypt", "-o", str(raw))
    key_of = {
        name: WrappedKey.from_bytes(
            read_stream_header([(raw / name).read_bytes()])[0].key_material
        ).key_id.hex()
        for name in ("old.txt", "new.txt")
    }
    assert [key_of["new.txt"], key_of["old.txt"]] == [k["key"] for k in listed]  # newest first
    dest = cli.tmp / "out"
    cli.ok("retrieve", "old.txt", "new.txt", "-o", str(dest))
    assert (dest / "old.txt").read_bytes() == old.read_bytes()
    assert (dest / "new.txt").read_bytes() == new.read_bytes()


# --- a malicious gateway -------------------------------------------------------------------


def node_set(vault: LiveVault) -> NodeSet:
    """What a malicious gateway holds: the gateway's real client certificate and the nodes."""
    config = tomllib.loads((vault.directory / "gateway" / "gateway.toml").read_text())
    gw = vault.directory / "gateway"
    ctx = tls.client_context(
        vault.directory / "public" / "ca.pem", gw / "client.pem", gw / "client.key"
    )
    return NodeSet(
        [NodeAddress(e["index"], e["url"], e["tls_name"]) for e in config["nodes"]],
        ssl_context=ctx,
    )


async def ask_all(nodes: NodeSet, signed: bytes) -> dict[int, Any]:
    results = await asyncio.gather(
        *(nodes[i].unwrap(signed) for i in range(1, 6)), return_exceptions=True
    )
    return dict(zip(range(1, 6), results, strict=True))


def test_a_malicious_gateway_gets_nothing_usable(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    vault = cli.vault
    owner = cli.config.stem
    src = cli.tmp / "s.txt"
    src.write_bytes(b"the crown jewels")
    cli.ok("deposit", str(src), "--encrypt")
    raw = cli.tmp / "raw"
    cli.ok("retrieve", "s.txt", "--no-decrypt", "-o", str(raw))
    header, _ = read_stream_header([(raw / "s.txt").read_bytes()])
    wrapped = WrappedKey.from_bytes(header.key_material)
    vault_id = tomllib.loads((vault.directory / "vault.toml").read_text())["vault"]["id"]
    cert = confidential.CertificateFile(ClientPaths.resolve(cli.config).unwrap_keys_file).find(
        vault_id, owner
    )
    assert cert is not None and cert.key_id == wrapped.key_id
    context = WrapContext(vault_id, owner, "s.txt", confidential.UNVERSIONED)
    rng = os.urandom

    async def scenario() -> None:
        nodes = node_set(vault)
        try:
            # 1. Without the client's signature: the gateway signs with a key of its own.
            b = blind(wrapped, rng=rng)
            request = make_unwrap_request(
                b, vault=vault_id, owner=owner, issued_at=int(time.time()), rng=rng
            )
            forged = sign_unwrap_request(request, nacl.signing.SigningKey.generate())
            for node, result in (await ask_all(nodes, forged)).items():
                assert isinstance(result, NodeRejected), node
                assert (result.status, result.node_code) == (403, "unwrap_refused")
                assert "bad_signature" in result.node_message
            # Not even the unblinded c1 (the gateway could skip blinding) helps: same refusal.

            # 2. A request the client really signed, relayed once: the gateway sees every
            #    partial unwrap.  Combined, they give x·c1' = x·c1 + ρ·Y, and without ρ the
            #    wrap does not open.
            identity = confidential.derive_identity(KEY_PASSPHRASE, vault=vault_id, owner=owner)
            b = blind(wrapped, rng=rng)
            request = make_unwrap_request(
                b, vault=vault_id, owner=owner, issued_at=int(time.time()), rng=rng
            )
            signed = sign_unwrap_request(request, identity)
            answers = await ask_all(nodes, signed)
            partials = {i: PartialUnwrap.from_bytes(a.partial, node=i) for i, a in answers.items()}
            used = sorted(partials)[: cert.threshold]
            combined = sum(
                (lagrange_at_zero(i, used) * partials[i].d for i in used[1:]),
                lagrange_at_zero(used[0], used) * partials[used[0]].d,
            )
            with pytest.raises(DecryptionError):
                open_wrapped_key(wrapped, combined, context)
            # (The client, holding ρ, would open it: combined − ρ·Y.)
            assert len(open_wrapped_key(wrapped, combined - b.y_rho, context)) == 32

            # 3. Replayed: every node refuses, so it yields not even new partials.
            for node, result in (await ask_all(nodes, signed)).items():
                assert isinstance(result, NodeRejected), node
                assert result.node_code == "unwrap_refused" and "replayed" in result.node_message

            # 4. The gateway cannot register another identity for the user (trust on first
            #    use: the user's own identity came first).
            seal_keys = confidential.load_seal_keys(vault.directory / "client" / "seal-keys.json")
            mallory = nacl.signing.SigningKey.generate()
            dealing = deal_unwrap_key(threshold=4, nodes=5, rng=rng)
            sealed = seal_dealing(
                dealing, vault=vault_id, owner=owner, node_public_keys=seal_keys, identity=mallory
            )
            fake_cert = KeyCertificate.sign(
                vault=vault_id,
                owner=owner,
                nodes=5,
                commitments=dealing.commitments,
                issued_at=int(time.time()),
                identity=mallory,
            ).to_bytes()
            oid = owner_id(vault_id, owner)
            for i in range(1, 6):
                with pytest.raises(NodeRejected) as info:
                    await nodes[i].put_unwrap_key(oid, KeyDeposit(owner, sealed[i], fake_cert))
                assert info.value.node_code == "key_conflict"
        finally:
            await nodes.aclose()

    asyncio.run(scenario())
    # And the real client still decrypts.
    cli.ok("retrieve", "s.txt", "-o", str(cli.tmp / "o"))
    assert (cli.tmp / "o" / "s.txt").read_bytes() == b"the crown jewels"


def test_the_web_ui_marks_the_encrypted_version(cli: Cli) -> None:
    src = cli.tmp / "w.txt"
    src.write_bytes(b"web")
    cli.ok("deposit", str(src), "--encrypt")
    cli.ok("deposit", str(src), "--name", "plain.txt")
    ctx = ssl.create_default_context(cafile=str(cli.vault.directory / "client" / "ca.pem"))
    with httpx.Client(base_url=cli.vault.url, verify=ctx, follow_redirects=False) as web:
        page = web.get("/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf is not None
        r = web.post(
            "/login",
            data={"csrf_token": csrf.group(1), "user_id": cli.config.stem, "password": PASSWORD},
        )
        assert r.status_code == 303, r.text
        html = web.get("/documents").text
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r'<tr data-document="([^"]+)" data-version="1">.*?</tr>', html, re.S)
    }
    assert 'class="badge encrypted"' in rows["w.txt"]
    assert "encrypted" not in rows["plain.txt"]


def test_with_t_nodes_down_deposit_and_retrieval_still_work(
    cli: Cli, recorded_vault: tuple[LiveVault, Path]
) -> None:
    """Runs last in this module: it stops node 2 of the shared vault (t = 1)."""
    src = cli.tmp / "before.txt"
    src.write_bytes(os.urandom(50_000))
    cli.ok("deposit", str(src), "--encrypt")
    cli.vault.kill_node(2)
    after = cli.tmp / "after.txt"
    after.write_bytes(os.urandom(70_000))
    cli.ok("deposit", str(after), "--encrypt")
    dest = cli.tmp / "out"
    result = cli.ok("retrieve", "before.txt", "after.txt", "-o", str(dest))
    assert (dest / "before.txt").read_bytes() == src.read_bytes()
    assert (dest / "after.txt").read_bytes() == after.read_bytes()
    assert "node 2 did not help unwrap" in result.stderr


# --- a lying node (its own vault) -------------------------------------------------------------


def test_a_lying_node_is_caught_by_its_proof_and_excluded(
    vault_factory: VaultFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = vault_factory.start(
        tmp_path / "vault",
        extra_node_args={5: ["--fault", "lie"]},
        env={"EVAULT_ALLOW_FAULTS": "1"},
    )
    try:
        cli = make_cli(vault, tmp_path, monkeypatch)
        src = tmp_path / "doc.bin"
        src.write_bytes(os.urandom(300_000))
        cli.ok("deposit", str(src), "--encrypt")
        result = cli.ok("retrieve", "doc.bin", "-o", str(tmp_path / "out"))
        assert (tmp_path / "out" / "doc.bin").read_bytes() == src.read_bytes()
        assert "node 5 did not help unwrap the file key: Chaum–Pedersen proof does not verify" in (
            result.stderr
        )
    finally:
        vault.stop()


# --- 100 MiB -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_100_mib_encrypted_round_trip(
    vault: LiveVault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = make_cli(vault, tmp_path, monkeypatch)
    cli.recorder.sent = bytearray()  # not kept: 100 MiB each way is not worth holding
    monkeypatch.setattr(cli_client, "TRANSPORT_FACTORY", None)
    src = tmp_path / "big.bin"
    h = hashlib.sha256()
    with src.open("wb") as f:
        for _ in range(100):
            block = os.urandom(MIB)
            h.update(block)
            f.write(block)
    started = time.monotonic()
    cli.ok("deposit", str(src), "--encrypt")
    deposit_s = time.monotonic() - started
    started = time.monotonic()
    cli.ok("retrieve", "big.bin", "-o", str(tmp_path / "out"))
    retrieve_s = time.monotonic() - started
    got = hashlib.sha256()
    with (tmp_path / "out" / "big.bin").open("rb") as f:
        while chunk := f.read(MIB):
            got.update(chunk)
    assert got.hexdigest() == h.hexdigest()
    print(f"\n100 MiB encrypted: deposit {deposit_s:.1f} s, retrieve+decrypt {retrieve_s:.1f} s")
