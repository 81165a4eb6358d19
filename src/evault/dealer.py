"""`evault init`: the dealer (DESIGN §1; paper Appendix A, footnote 2).

Run once, offline.  It makes every key and certificate of the vault, writes each party's part
into its own directory, and then forgets every secret it does not hand out: the CA key, the
RSA primes and d, and the sharing polynomial never touch the disk.

Layout written (see ``evault.config`` for the file formats)::

    DIR/vault.toml  DIR/public/{vault-public.pem,threshold.json,ca.pem,seal-keys.json}
    DIR/nodes/node-<i>/{node.toml,tls.pem,tls.key,signing-share.json,seal.key,data/}
    DIR/gateway/{gateway.toml,client.pem,client.key,https.pem,https.key}
    DIR/client/{ca.pem,vault-public.pem,seal-keys.json}
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from nacl.public import PrivateKey as SealPrivateKey

from evault.config import ClusterParams
from evault.crypto import keyfiles, threshold_rsa
from evault.errors import ConfigError
from evault.ida import DEFAULT_CODEC_ID, DEFAULT_SEGMENT_BYTES
from evault.ida.fingerprint import FINGERPRINT_SCHEME
from evault.params import Guarantees, analyse
from evault.protocol.node_api import GATEWAY_CERT_CN, node_name
from evault.transport import tls


@dataclass(frozen=True)
class InitOptions:
    nodes: int = 5
    needed: int = 3
    quorum: int = 4
    key_bits: int = 3072
    host: str = "127.0.0.1"
    base_port: int = 7100
    gateway_port: int = 8443
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    codec: str = DEFAULT_CODEC_ID
    public_names: tuple[str, ...] = ("localhost",)


@dataclass(frozen=True)
class InitResult:
    directory: Path
    vault_id: str
    guarantees: Guarantees
    gateway_config: Path
    node_configs: tuple[Path, ...]


def is_vault_dir(directory: Path) -> bool:
    return (directory / "vault.toml").is_file()


def _write_toml(path: Path, doc: dict[str, Any]) -> None:
    path.write_bytes(tomli_w.dumps(doc).encode("utf-8"))


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def init_vault(
    directory: Path,
    options: InitOptions,
    *,
    progress: Callable[[str], None] | None = None,
    now: dt.datetime | None = None,
) -> InitResult:
    """Create a new vault in ``directory`` (which must be empty or absent)."""
    guarantees = analyse(options.nodes, options.needed, options.quorum)
    say = progress or (lambda _msg: None)
    directory = directory.resolve()
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"{directory} is not empty; refusing to overwrite a vault")
    now = now or dt.datetime.now(dt.UTC)
    vault_id = secrets.token_hex(16)
    cluster = ClusterParams(
        n=options.nodes,
        m=options.needed,
        k=options.quorum,
        codec=options.codec,
        segment_bytes=options.segment_bytes,
        fingerprint_scheme=FINGERPRINT_SCHEME,
    )

    public = directory / "public"
    nodes_dir = directory / "nodes"
    gateway_dir = directory / "gateway"
    client_dir = directory / "client"
    for d in (public, nodes_dir, gateway_dir, client_dir):
        d.mkdir(parents=True, exist_ok=True)

    say(
        f"generating the {options.key_bits}-bit threshold RSA key "
        f"({options.quorum} of {options.nodes})"
    )
    public_key, shares = threshold_rsa.deal(
        options.nodes,
        options.quorum,
        options.key_bits,
        progress=lambda step: say(f"  {step}"),
    )
    keyfiles.write_public_key(public / "vault-public.pem", public_key)
    keyfiles.write_threshold_public(public / "threshold.json", public_key)
    (client_dir / "vault-public.pem").write_bytes((public / "vault-public.pem").read_bytes())

    say("issuing the cluster's TLS certificates")
    ca_key, ca_cert = tls.generate_ca(f"evault cluster {vault_id[:8]}", now=now)
    tls.write_certificate(public / "ca.pem", ca_cert)
    tls.write_certificate(client_dir / "ca.pem", ca_cert)

    seal_public: dict[str, str] = {}
    node_configs = []
    for share in shares:
        i = share.index
        ndir = nodes_dir / node_name(i)
        (ndir / "data").mkdir(parents=True)
        key, cert = tls.issue_certificate(
            ca_key,
            ca_cert,
            common_name=node_name(i),
            dns_names=[node_name(i)],
            ip_addresses=[options.host],
            server=True,
            client=False,
            now=now,
        )
        tls.write_private_key(ndir / "tls.key", key)
        tls.write_certificate(ndir / "tls.pem", cert)
        keyfiles.write_key_share(ndir / "signing-share.json", share, passphrase=None)
        seal = SealPrivateKey.generate()
        _write_secret(ndir / "seal.key", bytes(seal).hex().encode("ascii"))
        seal_public[str(i)] = bytes(seal.public_key).hex()
        _write_toml(
            ndir / "node.toml",
            {
                "node": {
                    "index": i,
                    "vault": vault_id,
                    "host": options.host,
                    "port": options.base_port + i,
                    "data_dir": "data",
                },
                "cluster": cluster.to_toml_obj(),
                "tls": {"ca_cert": "../../public/ca.pem", "cert": "tls.pem", "key": "tls.key"},
                "keys": {
                    "threshold_public": "../../public/threshold.json",
                    "signing_share": "signing-share.json",
                    "seal_key": "seal.key",
                },
            },
        )
        node_configs.append(ndir / "node.toml")
    seal_json = json.dumps(seal_public, indent=2) + "\n"
    (public / "seal-keys.json").write_text(seal_json)
    # The client needs the nodes' sealing keys from a source the gateway cannot forge, to deal
    # its unwrap-key shares (DESIGN §7); the dealer puts them in the client bundle.
    (client_dir / "seal-keys.json").write_text(seal_json)

    key, cert = tls.issue_certificate(
        ca_key, ca_cert, common_name=GATEWAY_CERT_CN, server=False, client=True, now=now
    )
    tls.write_private_key(gateway_dir / "client.key", key)
    tls.write_certificate(gateway_dir / "client.pem", cert)
    key, cert = tls.issue_certificate(
        ca_key,
        ca_cert,
        common_name="evault gateway",
        dns_names=list(options.public_names),
        ip_addresses=[options.host],
        server=True,
        client=False,
        now=now,
    )
    tls.write_private_key(gateway_dir / "https.key", key)
    tls.write_certificate(gateway_dir / "https.pem", cert)
    del ca_key  # the dealer forgets the CA key: no certificate can be issued after init

    _write_toml(
        gateway_dir / "gateway.toml",
        {
            "gateway": {
                "vault": vault_id,
                "host": options.host,
                "port": options.gateway_port,
                "database_url": "sqlite:///catalog.sqlite",
                "node_timeout_s": 30.0,
                "workers": "auto",
            },
            "cluster": cluster.to_toml_obj(),
            "tls": {
                "ca_cert": "../public/ca.pem",
                "client_cert": "client.pem",
                "client_key": "client.key",
                "server_cert": "https.pem",
                "server_key": "https.key",
            },
            "keys": {
                "vault_public_key": "../public/vault-public.pem",
                "threshold_public": "../public/threshold.json",
            },
            "nodes": [
                {
                    "index": i,
                    "url": f"https://{options.host}:{options.base_port + i}",
                    "tls_name": node_name(i),
                }
                for i in range(1, options.nodes + 1)
            ],
        },
    )
    _write_toml(
        directory / "vault.toml",
        {
            "vault": {"id": vault_id, "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "cluster": cluster.to_toml_obj(),
        },
    )
    return InitResult(
        directory=directory,
        vault_id=vault_id,
        guarantees=guarantees,
        gateway_config=gateway_dir / "gateway.toml",
        node_configs=tuple(node_configs),
    )
