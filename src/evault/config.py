"""Configuration files written by `evault init` and read by `evault node` / `evault gateway`.

All files are TOML.  Relative paths inside a file are relative to that file's directory, so a
vault directory can be moved as a whole.  Layout made by ``evault init DIR``::

    DIR/vault.toml                    public facts: vault id, n, m, k, codec, segment size
    DIR/public/vault-public.pem       the vault's RSA public key (receipts verify against it)
    DIR/public/threshold.json         threshold public key: N, e, v, verification keys v_i
    DIR/public/ca.pem                 the cluster CA certificate (the CA key is destroyed)
    DIR/nodes/node-<i>/node.toml      one directory per node (copy it to the node's host)
    DIR/nodes/node-<i>/{tls.pem,tls.key,signing-share.json,seal.key}
    DIR/gateway/gateway.toml          gateway config (+ TLS client and server identities)
    DIR/client/                       client bundle: ca.pem, vault-public.pem, client.toml

Node config (``node.toml``)::

    [node]     index, vault, host, port, data_dir, max_object_bytes
    [cluster]  n, m, k, codec, segment_bytes, fingerprint_scheme
    [tls]      ca_cert, cert, key
    [keys]     threshold_public, signing_share, seal_key (X25519, for sealed unwrap-key shares)

Gateway config (``gateway.toml``)::

    [gateway]  vault, host, port, database_url, max_document_bytes, node_timeout_s,
               workers (serving processes: 1 to 64, or "auto", one per usable CPU up to 8)
    [cluster]  n, m, k, codec, segment_bytes, fingerprint_scheme
    [tls]      ca_cert, client_cert, client_key (to nodes), server_cert, server_key (public HTTPS)
    [keys]     vault_public_key, threshold_public
    [[nodes]]  index, url, tls_name (the node certificate's DNS name, default node-<i>)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evault.errors import ConfigError
from evault.params import analyse

DEFAULT_MAX_DOCUMENT_BYTES = 64 * 1024**3
#: Bounds of ``[gateway] workers``; "auto" takes one per usable CPU, at most AUTO_WORKERS_MAX.
MAX_WORKERS = 64
AUTO_WORKERS_MAX = 8


@dataclass(frozen=True)
class ClusterParams:
    n: int
    m: int
    k: int
    codec: str
    segment_bytes: int
    fingerprint_scheme: str

    @property
    def t(self) -> int:
        return analyse(self.n, self.m, self.k).t

    def to_toml_obj(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    index: int
    vault: str
    host: str
    port: int
    data_dir: Path
    max_object_bytes: int
    cluster: ClusterParams
    ca_cert: Path
    cert: Path
    key: Path
    threshold_public: Path
    signing_share: Path
    seal_key: Path


@dataclass(frozen=True)
class NodeEndpoint:
    """Where node ``index`` listens; ``tls_name`` is the name its certificate must carry
    (checked via SNI/hostname verification even when ``url`` holds an IP address)."""

    index: int
    url: str
    tls_name: str


@dataclass(frozen=True)
class GatewayConfig:
    path: Path
    vault: str
    host: str
    port: int
    database_url: str
    max_document_bytes: int
    node_timeout_s: float
    #: serving processes sharing the listening socket (``auto_workers()`` for "auto")
    workers: int
    cluster: ClusterParams
    ca_cert: Path
    client_cert: Path
    client_key: Path
    server_cert: Path
    server_key: Path
    vault_public_key: Path
    threshold_public: Path
    nodes: tuple[NodeEndpoint, ...]


def _load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc


class _Section:
    """Typed access to one table of a config file, with errors naming file and key."""

    def __init__(self, path: Path, doc: dict[str, Any], name: str) -> None:
        self.path = path
        self.name = name
        table = doc.get(name)
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: missing [{name}] table")
        self.table = table

    def _get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in self.table:
            if default is not None:
                return default
            raise ConfigError(f"{self.path}: [{self.name}] has no {key!r}")
        value = self.table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{self.path}: [{self.name}] {key} has the wrong type")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        return str(self._get(key, str, default))

    def integer(self, key: str, default: int | None = None) -> int:
        return int(self._get(key, int, default))

    def number(self, key: str, default: float | None = None) -> float:
        return float(self._get(key, (int, float), default))

    def path_(self, key: str) -> Path:
        return (self.path.parent / self.text(key)).resolve()


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_workers() -> int:
    """One serving process per CPU this process may run on, at most ``AUTO_WORKERS_MAX``."""
    return min(usable_cpus(), AUTO_WORKERS_MAX)


def is_workers_setting(value: object) -> bool:
    """Whether ``value`` may be ``[gateway] workers``: "auto" or an int from 1 to
    ``MAX_WORKERS``."""
    if value == "auto":
        return True
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS


def _workers(path: Path, value: object) -> int:
    if value == "auto":
        return auto_workers()
    if is_workers_setting(value):
        assert isinstance(value, int)
        return value
    raise ConfigError(
        f'{path}: [gateway] workers must be an integer from 1 to {MAX_WORKERS} or "auto", '
        f"got {value!r}"
    )


def _cluster(path: Path, doc: dict[str, Any]) -> ClusterParams:
    s = _Section(path, doc, "cluster")
    params = ClusterParams(
        n=s.integer("n"),
        m=s.integer("m"),
        k=s.integer("k"),
        codec=s.text("codec"),
        segment_bytes=s.integer("segment_bytes"),
        fingerprint_scheme=s.text("fingerprint_scheme"),
    )
    try:
        analyse(params.n, params.m, params.k)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: [cluster] {exc}") from exc
    return params


def load_node_config(path: str | Path) -> NodeConfig:
    p = Path(path).resolve()
    doc = _load(p)
    node, tls, keys = (_Section(p, doc, name) for name in ("node", "tls", "keys"))
    cluster = _cluster(p, doc)
    index = node.integer("index")
    if not 1 <= index <= cluster.n:
        raise ConfigError(f"{p}: [node] index {index} is not in 1..{cluster.n}")
    return NodeConfig(
        path=p,
        index=index,
        vault=node.text("vault"),
        host=node.text("host"),
        port=node.integer("port"),
        data_dir=node.path_("data_dir"),
        max_object_bytes=node.integer("max_object_bytes", 64 * 1024**3),
        cluster=cluster,
        ca_cert=tls.path_("ca_cert"),
        cert=tls.path_("cert"),
        key=tls.path_("key"),
        threshold_public=keys.path_("threshold_public"),
        signing_share=keys.path_("signing_share"),
        seal_key=keys.path_("seal_key"),
    )


def load_gateway_config(path: str | Path) -> GatewayConfig:
    p = Path(path).resolve()
    doc = _load(p)
    gw, tls, keys = (_Section(p, doc, name) for name in ("gateway", "tls", "keys"))
    cluster = _cluster(p, doc)
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ConfigError(f"{p}: no [[nodes]] entries")
    nodes = []
    for entry in raw_nodes:
        if not isinstance(entry, dict):
            raise ConfigError(f"{p}: each [[nodes]] entry must be a table")
        s = _Section(p, {"nodes": entry}, "nodes")
        index = s.integer("index")
        nodes.append(
            NodeEndpoint(
                index=index, url=s.text("url"), tls_name=s.text("tls_name", f"node-{index}")
            )
        )
    indices = sorted(e.index for e in nodes)
    if indices != list(range(1, cluster.n + 1)):
        raise ConfigError(f"{p}: [[nodes]] must list indices 1..{cluster.n} once each")
    db_url = gw.text("database_url")
    if db_url.startswith("sqlite:///") and not db_url.startswith("sqlite:////"):
        # A relative SQLite path is relative to the config file, like every other path.
        db_url = "sqlite:///" + str((p.parent / db_url[len("sqlite:///") :]).resolve())
    return GatewayConfig(
        path=p,
        vault=gw.text("vault"),
        host=gw.text("host"),
        port=gw.integer("port"),
        database_url=db_url,
        max_document_bytes=gw.integer("max_document_bytes", DEFAULT_MAX_DOCUMENT_BYTES),
        node_timeout_s=gw.number("node_timeout_s", 30.0),
        workers=_workers(p, gw.table.get("workers", 1)),
        cluster=cluster,
        ca_cert=tls.path_("ca_cert"),
        client_cert=tls.path_("client_cert"),
        client_key=tls.path_("client_key"),
        server_cert=tls.path_("server_cert"),
        server_key=tls.path_("server_key"),
        vault_public_key=keys.path_("vault_public_key"),
        threshold_public=keys.path_("threshold_public"),
        nodes=tuple(sorted(nodes, key=lambda e: e.index)),
    )
