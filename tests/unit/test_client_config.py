"""Client configuration, file layout, token file, and what `evault deposit PATH...` names."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from evault.client.config import (
    ClientPaths,
    StoredToken,
    forget_token,
    load_client_config,
    load_token,
    parse_client_config,
    save_token,
)
from evault.client.transfer import expand_deposit_paths
from evault.errors import ConfigError, FormatError, NotLoggedIn


def test_paths_sit_next_to_an_explicit_configuration(tmp_path: Path) -> None:
    p = ClientPaths.resolve(tmp_path / "vault" / "client.toml")
    assert p.explicit
    assert p.token_file == tmp_path / "vault" / "client.token.json"
    assert p.receipts_db == tmp_path / "vault" / "client.receipts.sqlite"
    assert p.state_db == tmp_path / "vault" / "client.backup-state.sqlite"


def test_default_paths_follow_the_platform_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    p = ClientPaths.resolve(None)
    assert p.config_file == tmp_path / "c" / "evault" / "client.toml"
    assert p.receipts_db == tmp_path / "d" / "evault" / "receipts.sqlite"
    with pytest.raises(ConfigError, match="--config FILE"):
        load_client_config(p)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('gateways = []\nca_cert = "a"\nvault_public_key = "b"', "non-empty list"),
        ('gateways = ["ftp://x"]\nca_cert = "a"\nvault_public_key = "b"', "not an http"),
        ('gateways = ["https://x"]\nvault_public_key = "b"', "'ca_cert'"),
        ('gateways = ["https://x"]\nca_cert = "a"\nvault_public_key = "b"\nextra = 1', "unknown"),
        ('gateways = ["https://x"]\nca_cert="a"\nvault_public_key="b"\ntimeout_s=0', "positive"),
        ("gateways = [", "not valid TOML"),
    ],
)
def test_a_broken_configuration_names_the_file_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        parse_client_config(text, source=Path("/x/client.toml"))
    assert "/x/client.toml" in str(info.value)


def test_a_single_gateway_string_and_trailing_slashes_are_accepted() -> None:
    c = parse_client_config(
        'gateways = "https://h:1/"\nca_cert = "/abs/ca.pem"\nvault_public_key = "k.pem"',
        source=Path("/etc/e/client.toml"),
    )
    assert c.gateways == ("https://h:1",)
    assert c.ca_cert == Path("/abs/ca.pem") and c.vault_public_key == Path("/etc/e/k.pem")


def test_the_token_file_is_private_and_round_trips(tmp_path: Path) -> None:
    p = ClientPaths.resolve(tmp_path / "client.toml")
    with pytest.raises(NotLoggedIn, match="evault login"):
        load_token(p)
    old = os.umask(0)
    try:
        save_token(p, StoredToken("alice", "secret", "2026-01-01T00:00:00Z", "https://g"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.token_file.stat().st_mode) == 0o600
    assert load_token(p) == StoredToken("alice", "secret", "2026-01-01T00:00:00Z", "https://g")
    assert [x.name for x in tmp_path.iterdir()] == ["client.token.json"]  # no temp file left
    p.token_file.write_text("{not json")
    with pytest.raises(ConfigError, match="damaged"):
        load_token(p)
    assert forget_token(p) and not forget_token(p)


def test_deposit_names_for_files_directories_and_prefixes(tmp_path: Path) -> None:
    d = tmp_path / "proj"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("a")
    (d / "sub" / "b.txt").write_text("b")
    (tmp_path / "one.txt").write_text("1")
    (d / "link.txt").symlink_to(d / "a.txt")
    (d / "outside.txt").symlink_to(tmp_path / "one.txt")
    (d / "dirlink").symlink_to(d / "sub")

    def names(paths: list[Path], name: str | None) -> list[str]:
        return [i.name for i in expand_deposit_paths(paths, name)]

    assert names([tmp_path / "one.txt"], None) == ["one.txt"]
    assert names([tmp_path / "one.txt"], "x/y.txt") == ["x/y.txt"]
    assert names([d], None) == ["proj/a.txt", "proj/link.txt", "proj/sub/b.txt"]
    assert names([d], "backup") == ["backup/a.txt", "backup/link.txt", "backup/sub/b.txt"]
    assert names([tmp_path / "one.txt", d / "sub"], "p") == ["p/one.txt", "p/sub/b.txt"]
    with pytest.raises(FormatError, match=r"would both be deposited as 'b\.txt'"):
        expand_deposit_paths([d / "sub" / "b.txt", d / "sub" / "b.txt"], None)
    with pytest.raises(FileNotFoundError):
        expand_deposit_paths([tmp_path / "missing"], None)
