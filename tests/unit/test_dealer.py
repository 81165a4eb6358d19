"""`evault init` writes a vault whose every file the node and gateway can load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evault.config import load_gateway_config, load_node_config
from evault.crypto import keyfiles, threshold_rsa
from evault.dealer import InitOptions, init_vault, is_vault_dir
from evault.errors import ConfigError


@pytest.fixture(scope="module")
def vault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("init") / "vault"
    init_vault(d, InitOptions(nodes=5, needed=3, quorum=4, key_bits=2048, base_port=9100))
    return d


def test_layout_loads_and_keys_sign_a_verifiable_receipt(vault_dir: Path) -> None:
    assert is_vault_dir(vault_dir)
    gw = load_gateway_config(vault_dir / "gateway" / "gateway.toml")
    assert [e.tls_name for e in gw.nodes] == [f"node-{i}" for i in range(1, 6)]
    assert gw.database_url == "sqlite:///" + str(vault_dir / "gateway" / "catalog.sqlite")
    public = keyfiles.read_threshold_public(gw.threshold_public)
    shares = []
    for i in range(1, 6):
        node = load_node_config(vault_dir / "nodes" / f"node-{i}" / "node.toml")
        assert (node.index, node.port, node.cluster.k) == (i, 9100 + i, 4)
        assert node.signing_share.stat().st_mode & 0o077 == 0
        assert node.seal_key.stat().st_mode & 0o077 == 0
        assert node.key.stat().st_mode & 0o077 == 0
        share = keyfiles.read_key_share(node.signing_share, None)
        shares.append(threshold_rsa.sign_share(share, public, b"statement"))
    result = threshold_rsa.combine(public, b"statement", shares[:4])
    threshold_rsa.verify_signature(public, b"statement", result.signature)
    seal = json.loads((vault_dir / "public" / "seal-keys.json").read_text())
    assert sorted(seal) == ["1", "2", "3", "4", "5"]


def test_the_dealer_keeps_no_secret_outside_the_parties_dirs(vault_dir: Path) -> None:
    """The CA key and RSA factors are never written: only node/gateway keys exist."""
    keys = sorted(p.relative_to(vault_dir).as_posix() for p in vault_dir.rglob("*.key"))
    assert keys == ["gateway/client.key", "gateway/https.key"] + [
        f"nodes/node-{i}/{name}" for i in range(1, 6) for name in ("seal.key", "tls.key")
    ]
    text = b"".join(p.read_bytes() for p in (vault_dir / "public").iterdir())
    assert b"PRIVATE" not in text


def test_refuses_a_non_empty_directory_and_bad_parameters(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("hi")
    with pytest.raises(ConfigError, match="not empty"):
        init_vault(tmp_path, InitOptions(key_bits=2048))
    with pytest.raises(ValueError, match="k:"):
        init_vault(tmp_path / "new", InitOptions(nodes=5, needed=4, quorum=3, key_bits=2048))


def test_cli_prints_guarantees_and_refuses_nonsense(tmp_path: Path) -> None:
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "evault",
            "init",
            str(tmp_path / "v"),
            "-n",
            "3",
            "-m",
            "3",
            "-k",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "guarantees nothing" in bad.stderr
    assert not (tmp_path / "v").exists()


def test_gateway_workers_key(vault_dir: Path) -> None:
    """A dealt vault says "auto": one serving process per usable CPU, at most 8."""
    from evault.config import AUTO_WORKERS_MAX, auto_workers

    text = (vault_dir / "gateway" / "gateway.toml").read_text()
    assert 'workers = "auto"' in text
    usable = len(os.sched_getaffinity(0))
    path = vault_dir / "gateway" / "workers-test.toml"  # beside it: the same relative paths
    path.write_text(text)
    assert load_gateway_config(path).workers == auto_workers() == min(usable, AUTO_WORKERS_MAX)
    for value, expected in (("3", 3), ("1", 1), ("64", 64)):
        path.write_text(text.replace('workers = "auto"', f"workers = {value}"))
        assert load_gateway_config(path).workers == expected
    path.write_text(text.replace('workers = "auto"\n', ""))
    assert load_gateway_config(path).workers == 1  # configs written before the key
    for bad in ("0", "65", "true", '"two"', "1.5"):
        path.write_text(text.replace('workers = "auto"', f"workers = {bad}"))
        with pytest.raises(ConfigError, match=r"\[gateway\] workers must be an integer"):
            load_gateway_config(path)
