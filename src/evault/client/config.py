"""Where the CLI keeps its configuration, its token and its local databases.

Two layouts, chosen by whether ``--config FILE`` (or ``EVAULT_CONFIG``) is given:

* configuration: ``DIR/NAME.toml``, or ``<user config dir>/evault/client.toml``;
* token (mode 0600): ``DIR/NAME.token.json``, or ``<user data dir>/evault/token.json``;
* receipt store: ``DIR/NAME.receipts.sqlite``, or ``<user data dir>/evault/receipts.sqlite``;
* backup state: ``DIR/NAME.backup-state.sqlite``, or ``<user data dir>/evault/backup-state.sqlite``;
* extracted vault key: ``DIR/NAME.vault-public.pem``, or
  ``<user data dir>/evault/vault-public.pem``;
* certificates of the user's unwrap keys (public): ``DIR/NAME.unwrap-keys.json``, or
  ``<user data dir>/evault/unwrap-keys.json``.

Keeping everything next to an explicit configuration means that two vaults (say the one
``evault up`` made and a production one) never share a token or a receipt store.

The configuration is TOML, the file ``evault up`` writes as ``DIR/client.toml``::

    gateways = ["https://127.0.0.1:8443", "https://backup-host:8443"]   # tried in order
    ca_cert = "client/ca.pem"                 # TLS trust for the gateways (relative: to this file)
    vault_public_key = "client/vault-public.pem"   # verifies every receipt
    seal_keys = "client/seal-keys.json"       # optional: the nodes' sealing keys (keys init)
    connect_timeout_s = 5                     # optional: a gateway that does not connect in time
    timeout_s = 300                           # optional: longest wait for a byte once connected
    user_id = "alice"                         # optional: default for `evault login`

The token file is JSON ``{"user_id", "token", "expires_at", "gateway"}``, written with mode 0600
through a temporary file and an atomic rename, so a crash never leaves half a token.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import platformdirs

from evault.errors import ConfigError, NotLoggedIn

APP_NAME: Final = "evault"
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
DEFAULT_TIMEOUT_S: Final = 300.0
_KEYS: Final = (
    "gateways",
    "ca_cert",
    "vault_public_key",
    "seal_keys",
    "connect_timeout_s",
    "timeout_s",
    "user_id",
)


@dataclass(frozen=True)
class ClientPaths:
    """Every file the CLI reads or writes for one configuration (see the module docstring)."""

    config_file: Path
    token_file: Path
    receipts_db: Path
    state_db: Path
    extracted_key: Path
    explicit: bool

    @property
    def unwrap_keys_file(self) -> Path:
        """Public certificates of the user's unwrap keys (``evault keys init`` writes it):
        ``DIR/NAME.unwrap-keys.json`` or ``<user data dir>/evault/unwrap-keys.json``."""
        name = self.receipts_db.name.replace("receipts.sqlite", "unwrap-keys.json")
        return self.receipts_db.with_name(name)

    @classmethod
    def resolve(cls, config_file: Path | None) -> ClientPaths:
        """The layout for ``--config FILE``, or the platform's user directories when None."""
        if config_file is not None:
            config_file = config_file.expanduser().absolute()
            base = config_file.parent
            stem = config_file.stem
            return cls(
                config_file=config_file,
                token_file=base / f"{stem}.token.json",
                receipts_db=base / f"{stem}.receipts.sqlite",
                state_db=base / f"{stem}.backup-state.sqlite",
                extracted_key=base / f"{stem}.vault-public.pem",
                explicit=True,
            )
        config_dir = platformdirs.user_config_path(APP_NAME)
        data_dir = platformdirs.user_data_path(APP_NAME)
        return cls(
            config_file=config_dir / "client.toml",
            token_file=data_dir / "token.json",
            receipts_db=data_dir / "receipts.sqlite",
            state_db=data_dir / "backup-state.sqlite",
            extracted_key=data_dir / "vault-public.pem",
            explicit=False,
        )


@dataclass(frozen=True)
class ClientConfig:
    """A parsed client configuration; paths are absolute."""

    gateways: tuple[str, ...]
    ca_cert: Path
    vault_public_key: Path
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    user_id: str | None = None
    source: str = "<config>"
    #: The nodes' X25519 sealing keys (JSON ``{index: hex}`` from the client bundle), for
    #: dealing unwrap-key shares the gateway cannot read (``evault keys init``).
    seal_keys: Path | None = None


def _fail(source: Path, problem: str) -> ConfigError:
    return ConfigError(f"client configuration {source}: {problem}", file=str(source))


def parse_client_config(text: str, *, source: Path) -> ClientConfig:
    """Parse the TOML text of a client configuration read from ``source``."""
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(source, f"not valid TOML: {exc}") from None
    extra = sorted(set(doc) - set(_KEYS))
    if extra:
        raise _fail(source, f"unknown key {extra[0]!r} (allowed: {', '.join(_KEYS)})")
    gateways = doc.get("gateways")
    if isinstance(gateways, str):
        gateways = [gateways]
    if (
        not isinstance(gateways, list)
        or not gateways
        or not all(isinstance(g, str) and g for g in gateways)
    ):
        raise _fail(source, "'gateways' must be a non-empty list of https:// URLs")
    for url in gateways:
        if not url.startswith(("https://", "http://")):
            raise _fail(source, f"gateway {url!r} is not an http(s):// URL")
    base = source.parent

    def path(key: str) -> Path:
        value = doc.get(key)
        if not isinstance(value, str) or not value:
            raise _fail(source, f"{key!r} must be the path of a PEM file")
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base / p)

    def seconds(key: str, default: float) -> float:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise _fail(source, f"{key!r} must be a positive number of seconds, got {value!r}")
        return float(value)

    user_id = doc.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or not user_id):
        raise _fail(source, "'user_id' must be a non-empty string")
    return ClientConfig(
        gateways=tuple(g.rstrip("/") for g in gateways),
        ca_cert=path("ca_cert"),
        vault_public_key=path("vault_public_key"),
        connect_timeout_s=seconds("connect_timeout_s", DEFAULT_CONNECT_TIMEOUT_S),
        timeout_s=seconds("timeout_s", DEFAULT_TIMEOUT_S),
        user_id=user_id,
        source=str(source),
        seal_keys=path("seal_keys") if doc.get("seal_keys") is not None else None,
    )


def load_client_config(paths: ClientPaths) -> ClientConfig:
    """Read the configuration named by ``paths``; a missing file is a ConfigError saying how."""
    source = paths.config_file
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = (
            ""
            if paths.explicit
            else " (pass --config FILE, e.g. the client.toml that `evault up` "
            "writes, or copy it there)"
        )
        raise ConfigError(f"no client configuration at {source}{hint}", file=str(source)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(source, f"cannot be read: {exc}") from None
    return parse_client_config(text, source=source)


# --- the token -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredToken:
    user_id: str
    token: str
    expires_at: str | None = None
    gateway: str | None = None


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only (0600), atomically, durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # the umask could have narrowed it, never widened; be explicit
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_token(paths: ClientPaths, token: StoredToken) -> None:
    doc = {
        "user_id": token.user_id,
        "token": token.token,
        "expires_at": token.expires_at,
        "gateway": token.gateway,
    }
    write_private_file(paths.token_file, json.dumps(doc, indent=2).encode("utf-8") + b"\n")


def load_token(paths: ClientPaths) -> StoredToken:
    """The stored token; NotLoggedIn if there is none, ConfigError if it is unreadable."""
    try:
        raw = paths.token_file.read_bytes()
    except FileNotFoundError:
        raise NotLoggedIn(str(paths.token_file)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {paths.token_file}: {exc}") from None
    try:
        doc = json.loads(raw)
        user_id, token = doc["user_id"], doc["token"]
        if not isinstance(user_id, str) or not isinstance(token, str) or not token:
            raise TypeError("user_id and token must be strings")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"the token file {paths.token_file} is damaged ({exc}); run `evault login` again"
        ) from None
    expires = doc.get("expires_at")
    gateway = doc.get("gateway")
    return StoredToken(
        user_id=user_id,
        token=token,
        expires_at=expires if isinstance(expires, str) else None,
        gateway=gateway if isinstance(gateway, str) else None,
    )


def forget_token(paths: ClientPaths) -> bool:
    """Delete the stored token; True if there was one."""
    try:
        paths.token_file.unlink()
    except FileNotFoundError:
        return False
    return True
