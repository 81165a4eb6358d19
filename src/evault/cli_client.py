"""The client commands of `evault` (the paper's sophisticated and minimal clients, §2.3).

A thin adapter: options in, calls into :mod:`evault.client`, tables (rich) or JSON out.  The
commands talk only to the gateway's public API, and verify every receipt and every byte they
are handed against the vault public key of the client configuration.  ``docs/cli.md`` is the
user's guide; ``register_client_commands`` adds the commands to the main group of
:mod:`evault.cli`.

Exit status: 0 when everything asked for was done and verified; 1 with one sentence on stderr
otherwise (``evault.cli`` prints every ``EvaultError`` that way; this module turns the
``OSError`` of a local file into one too).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgressBar
from rich.table import Table

from evault.client import confidential, pages
from evault.client.backup import (
    BackupPlan,
    execute_backup,
    plan_backup,
    restore,
    restore_targets,
)
from evault.client.config import (
    ClientConfig,
    ClientPaths,
    StoredToken,
    forget_token,
    load_client_config,
    load_token,
    save_token,
    write_private_file,
)
from evault.client.gateway import GatewaySession, make_http_client
from evault.client.profile import BackupProfile, parse_profile
from evault.client.receipt_store import ReceiptStore, StoredReceipt
from evault.client.receipts import (
    Receipt,
    VaultKey,
    load_vault_key,
    parse_vault_key,
    receipts_from_json,
    receipts_to_json,
    verify_signature,
)
from evault.client.state_store import SqliteChangeState
from evault.client.transfer import (
    DEFAULT_JOBS,
    Deposited,
    DepositItem,
    Outcome,
    Retrieved,
    RetrieveItem,
    VaultClient,
    deposit_file,
    expand_deposit_paths,
    local_path_for,
    retrieve_document,
    run_batch,
    sha256_file,
    trusted_receipt,
    write_verified,
)
from evault.crypto.armor import armor, dearmor
from evault.errors import (
    BatchFailed,
    ConfigError,
    ContentMismatch,
    EvaultError,
    GatewayRefused,
    LocalFileError,
    NoLocalReceipt,
    NotLoggedIn,
    NoUnwrapKey,
    PageFormatError,
)

F = TypeVar("F", bound=Callable[..., Any])

#: Tests put an ``httpx.MockTransport`` here (a fake gateway); None means real HTTPS.
TRANSPORT_FACTORY: Callable[[], httpx.BaseTransport] | None = None
PASSWORD_ENV = "EVAULT_PASSWORD"
NEW_PASSWORD_ENV = "EVAULT_NEW_PASSWORD"
CONFIG_ENV = "EVAULT_CONFIG"
#: The key passphrase that derives the identity key (never the log-in password, never sent).
KEY_PASSPHRASE_ENV = "EVAULT_KEY_PASSPHRASE"


# --- plumbing -----------------------------------------------------------------------------------


def _warn(message: str) -> None:
    click.echo(f"evault: {message}", err=True)


def _local_errors(func: F) -> F:
    """Turn a local file's OSError into one sentence (LocalFileError) instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OSError as exc:
            path = exc.filename if exc.filename is not None else "a local file"
            raise LocalFileError(str(path), exc.strerror or str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar=CONFIG_ENV,
        default=None,
        help="Client configuration (e.g. the client.toml of `evault up`); default: the user "
        "config directory.  Env: EVAULT_CONFIG.",
    )(func)


def _json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def _jobs_option(func: F) -> F:
    return click.option(
        "--jobs",
        "-j",
        type=click.IntRange(1, 64),
        default=DEFAULT_JOBS,
        show_default=True,
        help="Transfers run at the same time.",
    )(func)


def _output_file_option(help_text: str) -> Callable[[F], F]:
    """``-o/--output FILE`` of the commands that write one file."""

    def decorate(func: F) -> F:
        return click.option(
            "-o",
            "--output",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help=help_text,
        )(func)

    return decorate


def _read_page(page: Path) -> str:
    """A saved web UI page as text; bytes that are not UTF-8 become U+FFFD, not an error."""
    return page.read_text(encoding="utf-8", errors="replace")


def _vault_id(session: GatewaySession) -> str:
    """The vault's identifier, as the gateway announces it (it scopes keys and certificates)."""
    return str(session.vault_info()["vault_id"])


def _print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def _console() -> Console:
    # No markup: the tables show document names, which may hold "[...]" (a name like
    # "[red]x" must print as it is, and "a[/]b" must not fail as an unmatched closing tag).
    return Console(highlight=False, soft_wrap=False, markup=False)


@dataclass
class _Client:
    """Lazily opened pieces of one command's client state."""

    paths: ClientPaths
    _config: ClientConfig | None = None
    _stores: list[Any] = field(default_factory=list)

    @property
    def config(self) -> ClientConfig:
        if self._config is None:
            self._config = load_client_config(self.paths)
        return self._config

    def session(self, token: str | None = None) -> GatewaySession:
        c = self.config
        http = make_http_client(
            str(c.ca_cert),
            connect_timeout_s=c.connect_timeout_s,
            timeout_s=c.timeout_s,
            transport=TRANSPORT_FACTORY() if TRANSPORT_FACTORY is not None else None,
        )
        return GatewaySession(c.gateways, http, token=token, warn=_warn)

    def key(self, explicit: Path | None = None, *, offline: bool = False) -> VaultKey:
        """The vault key to trust: --key, else the configuration's, else the extracted one."""
        if explicit is not None:
            return load_vault_key(explicit)
        if not offline or self.paths.config_file.exists():
            return load_vault_key(self.config.vault_public_key)
        if self.paths.extracted_key.exists():
            return load_vault_key(self.paths.extracted_key)
        raise ConfigError(
            "no vault public key: pass --key FILE, --config FILE, or run `evault extractkey` "
            "on the registration page first"
        )

    def receipts(self) -> ReceiptStore:
        store = ReceiptStore(self.paths.receipts_db)
        self._stores.append(store)
        return store

    def state(self, owner: str) -> SqliteChangeState:
        store = SqliteChangeState(self.paths.state_db, owner)
        self._stores.append(store)
        return store

    def token(self) -> StoredToken:
        return load_token(self.paths)

    def close(self) -> None:
        for store in self._stores:
            store.close()
        self._stores.clear()


@contextmanager
def _client(config_file: Path | None) -> Iterator[_Client]:
    client = _Client(ClientPaths.resolve(config_file))
    try:
        yield client
    finally:
        client.close()


@contextmanager
def _vault(client: _Client) -> Iterator[VaultClient]:
    """A logged-in VaultClient (NotLoggedIn if there is no token)."""
    token = client.token()
    key = client.key()
    with client.session(token.token) as session:
        yield VaultClient(session, key, client.receipts(), token.user_id)


def _password(confirm: bool) -> str:
    value = os.environ.get(PASSWORD_ENV)
    if value:
        return value
    entered: str = click.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    return entered


def _key_passphrase(confirm: bool) -> str:
    value = os.environ.get(KEY_PASSPHRASE_ENV)
    if value:
        return value
    entered: str = click.prompt(
        "Key passphrase (derives your identity key; never sent, not your password)",
        hide_input=True,
        confirmation_prompt=confirm,
        err=True,
    )
    return entered


def _identity_source(vault_id: str, owner: str, *, confirm: bool = False) -> Any:
    return confidential.IdentitySource(
        lambda: _key_passphrase(confirm), vault=vault_id, owner=owner
    )


def _key_resolver(client: _Client, vault: VaultClient, vault_id: str) -> Any:
    return confidential.KeyResolver(
        session=vault.session,
        vault=vault_id,
        owner=vault.owner,
        local=confidential.CertificateFile(client.paths.unwrap_keys_file),
        identity=_identity_source(vault_id, vault.owner),
    )


class _BarProgress:
    """Files and bytes bars on stderr (drawn only on a terminal)."""

    def __init__(self, verb: str, files: int, total_bytes: int) -> None:
        console = Console(stderr=True)
        self.bar = RichProgressBar(
            TextColumn("{task.description}", markup=False),  # it shows file names
            BarColumn(),
            MofNCompleteColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.files: TaskID = self.bar.add_task(f"{verb} files", total=files)
        self.bytes: TaskID = self.bar.add_task(f"{verb} bytes", total=total_bytes or None)
        self.verb = verb
        # Retrievals learn each size from its receipt only as they start: grow the total then.
        self.growing = total_bytes == 0
        self.known_bytes = 0
        self._lock = threading.Lock()

    def __enter__(self) -> _BarProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def file_started(self, label: str, size: int) -> None:
        self.bar.update(self.files, description=f"{self.verb} {_short(label)}")
        if self.growing:
            with self._lock:
                self.known_bytes += size
                self.bar.update(self.bytes, total=self.known_bytes or None)

    def advance(self, nbytes: int) -> None:
        self.bar.advance(self.bytes, nbytes)

    def file_done(self, label: str, ok: bool) -> None:
        self.bar.advance(self.files, 1)


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _report_failures(operation: str, failures: Sequence[str], total: int) -> None:
    if not failures:
        return
    if total > 1:  # one item's failure is said once, by the error itself
        for line in failures:
            _warn(line)
    raise BatchFailed(operation, len(failures), total, failures[0])


def _finish_batch(
    operation: str,
    outcomes: Sequence[Outcome[Any, Any]],
    *,
    as_json: bool,
    done_key: str,
    failed_json: Callable[[Outcome[Any, Any]], dict[str, Any]],
    show: Callable[[list[Any]], None],
) -> None:
    """Print a batch's results (JSON: ``done_key`` and ``failed``, each failure described by
    ``failed_json`` plus its error; else ``show``), then fail if any item failed."""
    done = [o.result for o in outcomes if o.result is not None]
    failures = [o.error for o in outcomes if o.error is not None]
    if as_json:
        _print_json(
            {
                done_key: [r.to_json_obj() for r in done],
                "failed": [
                    {**failed_json(o), "error": o.error} for o in outcomes if o.error is not None
                ],
            }
        )
    else:
        show(done)
    _report_failures(operation, failures, len(outcomes))


def _table(title: str, columns: Sequence[str]) -> Table:
    """A left-titled table whose columns fold long values (every table of these commands)."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _check_vault_key(client: _Client, session: GatewaySession) -> VaultKey:
    """The configured key, after checking the gateway announces the same one."""
    key = client.key()
    info = session.vault_info()
    announced = parse_vault_key(str(info["public_key_pem"]).encode(), source="the gateway")
    if not announced.same_key(key):
        raise ConfigError(
            f"the gateway announces a vault public key (fingerprint {announced.fingerprint[:16]}"
            f"...) other than the configured {key.source} ({key.fingerprint[:16]}...); its "
            f"receipts would not verify, so check the configuration"
        )
    return key


# --- users --------------------------------------------------------------------------------------


@click.command("register")
@click.option("--user-id", help="3–64 of a-z 0-9 . _ - (prompted if left out).")
@click.option("--name", "full_name", help="Your full name (prompted if left out).")
@click.option("--contact", help="How to reach you, e.g. an e-mail address (may be empty).")
@click.option(
    "--with-keys",
    is_flag=True,
    help="Also derive your identity key from a key passphrase, register it, and deal your "
    "unwrap key (as `evault keys init`), for `deposit --encrypt`.",
)
@_config_option
@_local_errors
def register_command(
    user_id: str | None,
    full_name: str | None,
    contact: str | None,
    with_keys: bool,
    config_file: Path | None,
) -> None:
    """Register a user with the vault, then log in (password: prompt or EVAULT_PASSWORD)."""
    with _client(config_file) as client:
        user_id = user_id or client.config.user_id or click.prompt("User id")
        full_name = full_name or click.prompt("Full name")
        if contact is None:
            contact = click.prompt("Contact", default="", show_default=False)
        password = _password(confirm=True)
        with client.session() as session:
            key = _check_vault_key(client, session)
            identity = None
            if with_keys:
                vault_id = _vault_id(session)
                identity = _identity_source(vault_id, user_id.lower(), confirm=True)()
            stored_id = session.register(
                user_id,
                password,
                full_name,
                contact,
                identity_public_key=bytes(identity.verify_key).hex() if identity else None,
            )
            token, expires, gateway = session.login(stored_id, password)
        save_token(client.paths, StoredToken(stored_id, token, expires, gateway))
        click.echo(f"Registered {stored_id!r} and logged in (token in {client.paths.token_file}).")
        click.echo(f"Vault public key fingerprint (SHA-256): {key.fingerprint}")
        if identity is not None:
            with client.session(token) as session:
                _init_keys(client, session, stored_id, identity, threshold=None)


@click.command("login")
@click.option("--user-id", help="Default: the configuration's user_id, or a prompt.")
@_config_option
@_local_errors
def login_command(user_id: str | None, config_file: Path | None) -> None:
    """Log in and keep the token (0600) for the other commands."""
    with _client(config_file) as client:
        user_id = user_id or client.config.user_id or click.prompt("User id")
        password = _password(confirm=False)
        with client.session() as session:
            _check_vault_key(client, session)
            # User ids are case-insensitive and stored in lower case: receipts name that form.
            stored_id = user_id.lower()
            token, expires, gateway = session.login(stored_id, password)
        save_token(client.paths, StoredToken(stored_id, token, expires, gateway))
        until = f" until {expires}" if expires else ""
        click.echo(f"Logged in as {stored_id!r}{until} (token in {client.paths.token_file}).")


@click.command("passwd")
@_config_option
@_local_errors
def passwd_command(config_file: Path | None) -> None:
    """Change your password (the current one is asked too); every token is revoked and a new
    one kept.  The new one comes from EVAULT_NEW_PASSWORD, or a prompt."""
    with _client(config_file) as client:
        stored = client.token()
        password = _password(confirm=False)
        new_password = os.environ.get(NEW_PASSWORD_ENV) or click.prompt(
            "New password", hide_input=True, confirmation_prompt=True
        )
        with client.session(stored.token) as session:
            token, expires, gateway = session.change_password(password, new_password)
        save_token(client.paths, StoredToken(stored.user_id, token, expires, gateway))
        click.echo(
            f"Password of {stored.user_id!r} changed; every earlier token is revoked "
            f"(a new one is in {client.paths.token_file})."
        )


@click.command("logout")
@_config_option
@_local_errors
def logout_command(config_file: Path | None) -> None:
    """Revoke the stored token at the vault and forget it."""
    with _client(config_file) as client:
        try:
            token = client.token()
        except NotLoggedIn:
            click.echo("Not logged in; nothing to do.")
            return
        try:
            with client.session(token.token) as session:
                session.logout()
        except GatewayRefused as exc:
            if exc.status != 401:  # an expired token is as good as revoked
                raise
        forget_token(client.paths)
        click.echo(f"Logged out {token.user_id!r}; the token is revoked and forgotten.")


# --- deposit and retrieve ----------------------------------------------------------------------


@click.command("deposit")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--name", help="Document name of a single file; a prefix otherwise.")
@click.option(
    "--encrypt",
    is_flag=True,
    help="Encrypt each file with a fresh key wrapped under your unwrap key (`evault keys "
    "init`); the vault stores and signs only ciphertext.",
)
@_json_option
@_jobs_option
@_config_option
@_local_errors
def deposit_command(
    paths: tuple[Path, ...],
    name: str | None,
    encrypt: bool,
    as_json: bool,
    jobs: int,
    config_file: Path | None,
) -> None:
    """Deposit files (directories recursively); every receipt is verified before success."""
    items = expand_deposit_paths(list(paths), name)
    if not items:
        raise ConfigError("nothing to deposit: the directories hold no files")
    with _client(config_file) as client, _vault(client) as vault:
        total = sum(i.path.stat().st_size for i in items)
        certificate = None
        if encrypt:
            vault_id = _vault_id(vault.session)
            certificate = _key_resolver(client, vault, vault_id).current()

        def work(item: DepositItem, bar: _BarProgress) -> Deposited:
            if certificate is None:
                return deposit_file(vault, item, bar)
            return confidential.deposit_encrypted(vault, item, bar, certificate=certificate)

        with _BarProgress("depositing", len(items), total) as bar:
            outcomes = run_batch(
                items,
                lambda item: work(item, bar),
                label=lambda i: str(i.path),
                progress=bar,
                jobs=jobs,
            )
        _finish_batch(
            "deposit",
            outcomes,
            as_json=as_json,
            done_key="deposited",
            failed_json=lambda o: {"path": str(o.item.path), "name": o.item.name},
            show=lambda done: _deposit_table(done, vault.key),
        )


def _deposit_table(done: Sequence[Deposited], key: VaultKey) -> None:
    if not done:
        return
    table = _table(
        "Deposited (receipts verified)", ("name", "version", "size", "sha256", "deposited at")
    )
    for d in done:
        s = d.receipt.statement
        table.add_row(s.name, str(s.version), _size(s.size), s.sha256[:16] + "…", s.deposited_at)
    console = _console()
    console.print(table)
    console.print(
        f"{len(done)} deposited, {_size(sum(d.receipt.statement.size for d in done))}; every "
        f"receipt verified with the vault key {key.fingerprint[:16]}… and kept locally."
    )
    for d in done:
        if d.faulty_nodes:
            _warn(f"{d.receipt.statement.name}: the gateway caught faulty nodes {d.faulty_nodes}")


@click.command("retrieve")
@click.argument("names", nargs=-1, required=True)
@click.option("--version", type=click.IntRange(min=1), help="Version (one NAME only).")
@click.option(
    "-o",
    "--output",
    "output_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Directory; a name's '/' segments become subdirectories.",
)
@click.option(
    "--no-decrypt",
    is_flag=True,
    help="Write encrypted documents as stored (the verified ciphertext) instead of decrypting.",
)
@_json_option
@_jobs_option
@_config_option
@_local_errors
def retrieve_command(
    names: tuple[str, ...],
    version: int | None,
    output_dir: Path,
    no_decrypt: bool,
    as_json: bool,
    jobs: int,
    config_file: Path | None,
) -> None:
    """Retrieve documents; each is checked against its receipt before it is written.

    Encrypted documents are decrypted (key passphrase: prompt or EVAULT_KEY_PASSPHRASE): the
    file key is unwrapped by k nodes without the gateway or any node learning it."""
    if version is not None and len(names) != 1:
        raise click.UsageError("--version needs exactly one NAME")
    items = [RetrieveItem(n, version, local_path_for(output_dir, n)) for n in dict.fromkeys(names)]
    with _client(config_file) as client, _vault(client) as vault:
        resolver: list[Any] = []
        lock = threading.Lock()

        def keys() -> Any:
            with lock:
                if not resolver:
                    vault_id = _vault_id(vault.session)
                    resolver.append(_key_resolver(client, vault, vault_id))
                return resolver[0]

        def one(item: RetrieveItem, bar: _BarProgress) -> Retrieved:
            # The receipt decides whether to decrypt; the retrieval then pins its version (and
            # finds the receipt kept, so it reports where the receipt came from first).
            receipt, source = trusted_receipt(vault, item.name, item.version)
            pinned = RetrieveItem(item.name, receipt.statement.version, item.dest)
            if no_decrypt or not receipt.statement.encrypted:
                got = retrieve_document(vault, pinned, bar)
            else:
                done = confidential.retrieve_decrypted(
                    vault, pinned, bar, keys=keys(), clock=time.time
                )
                for node, why in sorted(done.unwrap_bad.items()):
                    _warn(f"{item.name}: node {node} did not help unwrap the file key: {why}")
                got = done.retrieved
            return dataclasses.replace(got, item=item, checked_against=source)

        with _BarProgress("retrieving", len(items), 0) as bar:
            outcomes = run_batch(
                items,
                lambda item: one(item, bar),
                label=lambda i: i.name,
                progress=bar,
                jobs=jobs,
            )
        _finish_batch(
            "retrieve",
            outcomes,
            as_json=as_json,
            done_key="retrieved",
            failed_json=lambda o: {"name": o.item.name},
            show=_retrieve_table,
        )


def _retrieve_table(done: Sequence[Retrieved]) -> None:
    if not done:
        return
    table = _table(
        "Retrieved (verified)", ("name", "version", "size", "written to", "checked against")
    )
    for r in done:
        s = r.receipt.statement
        against = "receipt kept at deposit" if r.checked_against == "local" else "vault's receipt"
        table.add_row(s.name, str(s.version), _size(s.size), str(r.item.dest), against)
    _console().print(table)


# --- listings -----------------------------------------------------------------------------------


@click.command("ls")
@_json_option
@_config_option
@_local_errors
def ls_command(as_json: bool, config_file: Path | None) -> None:
    """List your documents (latest version of each)."""
    with _client(config_file) as client, _vault(client) as vault:
        docs = vault.session.documents()
        kept = vault.receipts.known_versions(vault.owner, [str(d["name"]) for d in docs])
        rows = [
            {**d, "receipt_kept": (str(d["name"]), int(d["latest_version"])) in kept} for d in docs
        ]
        if as_json:
            _print_json({"documents": rows})
            return
        table = _table(
            f"Documents of {vault.owner}",
            ("name", "latest", "versions", "size", "deposited at", "receipt kept"),
        )
        for d in rows:
            table.add_row(
                str(d["name"]),
                str(d["latest_version"]),
                str(d.get("version_count", "?")),
                _size(int(d.get("size", 0))),
                str(d.get("deposited_at", "")),
                "yes" if d["receipt_kept"] else "no",
            )
        console = _console()
        console.print(table)
        console.print(f"{len(rows)} document(s).")


@click.command("versions")
@click.argument("name")
@_json_option
@_config_option
@_local_errors
def versions_command(name: str, as_json: bool, config_file: Path | None) -> None:
    """List the stored versions of one document, oldest first."""
    with _client(config_file) as client, _vault(client) as vault:
        versions = vault.session.versions(name)
        kept = vault.receipts.known_versions(vault.owner, [name])
        rows = [{**v, "receipt_kept": (name, int(v["version"])) in kept} for v in versions]
        if as_json:
            _print_json({"name": name, "versions": rows})
            return
        table = _table(
            f"Versions of {name}",
            ("version", "size", "sha256", "deposited at", "receipt kept", "encrypted"),
        )
        for v in rows:
            table.add_row(
                str(v["version"]),
                _size(int(v["size"])),
                str(v.get("sha256", ""))[:16] + "…",
                str(v["deposited_at"]),
                "yes" if v["receipt_kept"] else "no",
                "yes" if v.get("encrypted") else "no",
            )
        _console().print(table)


# --- offline verification and the minimal-client tools ----------------------------------------


def _describe_receipt(receipt: Receipt, key: VaultKey) -> str:
    s = receipt.statement
    return (
        f"valid receipt: {s.name!r} version {s.version} of {s.owner!r}, {s.size} bytes, "
        f"SHA-256 {s.sha256}, deposited {s.deposited_at}, vault {s.vault} "
        f"(key {key.fingerprint[:16]}…)"
    )


def _check_file(path: Path, receipt: Receipt) -> None:
    s = receipt.statement
    sha, size = sha256_file(path)
    if (sha, size) != (s.sha256, s.size):
        raise ContentMismatch(f"file {path}", s.sha256, sha, s.size, size)


@click.command("verify")
@click.argument("args", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--page",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A saved deposit result page of the web UI, instead of a RECEIPT file.",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Vault public key (PEM); default: the configuration's, else the extracted one.",
)
@_json_option
@_config_option
@_local_errors
def verify_command(
    args: tuple[Path, ...],
    page: Path | None,
    key_file: Path | None,
    as_json: bool,
    config_file: Path | None,
) -> None:
    """Offline: check RECEIPT [FILE] (or --page DEPOSIT.html [FILE]) with the vault key.

    RECEIPT is a JSON file as `evault receipts export` writes it.  With FILE, the file's
    SHA-256 and size must be the ones the receipt signs.  With --page, the verified receipt is
    kept in the local receipt store, so `evault extractfile` can check the document later.
    """
    limit = 1 if page is not None else 2
    if len(args) > limit or (page is None and not args):
        raise click.UsageError(
            "usage: evault verify RECEIPT [FILE] | evault verify --page PAGE [FILE]"
        )
    file = args[-1] if (page is not None and args) or len(args) == 2 else None
    with _client(config_file) as client:
        key = client.key(key_file, offline=True)
        if page is not None:
            found = pages.receipt_from_deposit_page(_read_page(page), page=str(page))
            receipt = Receipt.from_parts(found.statement, found.signature)
            verify_signature(key, receipt)
            if found.sha256 is not None and found.sha256 != receipt.statement.sha256:
                raise PageFormatError(
                    str(page),
                    f"it shows SHA-256 {found.sha256} but the signed statement says "
                    f"{receipt.statement.sha256}",
                )
            receipts = [receipt]
        else:
            receipts = receipts_from_json(args[0].read_bytes(), source=str(args[0]))
            for r in receipts:
                verify_signature(key, r)
        if file is not None:
            if len(receipts) != 1:
                raise click.UsageError(
                    f"{args[0]} holds {len(receipts)} receipts; export the one for this file "
                    f"with `evault receipts export NAME`"
                )
            _check_file(file, receipts[0])
        if page is not None:
            client.receipts().put(receipts[0], "page")
        if as_json:
            _print_json(
                {
                    "valid": True,
                    "receipts": [r.to_json_obj() for r in receipts],
                    "file": str(file) if file is not None else None,
                    "key_fingerprint": key.fingerprint,
                }
            )
            return
        for r in receipts:
            click.echo(_describe_receipt(r, key))
        if file is not None:
            click.echo(f"{file} matches the receipt (same SHA-256 and size).")
        if page is not None:
            click.echo(f"Kept in the receipt store {client.paths.receipts_db}.")


@click.command("extractkey")
@click.argument("page", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_output_file_option(
    "Where to write the PEM; default: the client's data directory, where `evault "
    "verify` looks for it."
)
@_config_option
@_local_errors
def extractkey_command(page: Path, output: Path | None, config_file: Path | None) -> None:
    """Take the vault public key from a saved registration page (paper §2.3.1)."""
    with _client(config_file) as client:
        pem = pages.key_from_registration_page(_read_page(page), page=str(page))
        key = parse_vault_key(pem, source=str(page))
        target = output or client.paths.extracted_key
        target.parent.mkdir(parents=True, exist_ok=True)
        write_private_file(target, pem)
        target.chmod(0o644)
        click.echo(f"Vault public key written to {target}")
        click.echo(f"Fingerprint (SHA-256 of the key): {key.fingerprint}")
        click.echo("Compare it with the one your vault's operator published before trusting it.")
        if client.paths.config_file.exists():
            try:
                configured = load_vault_key(client.config.vault_public_key)
            except EvaultError:
                return
            if not configured.same_key(key):
                _warn(
                    f"this key differs from the configured {configured.source} "
                    f"({configured.fingerprint[:16]}…)"
                )


@click.command("extractfile")
@click.argument("page", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_output_file_option(
    "Where to write the document; default: its base name in the current directory."
)
@_config_option
@_local_errors
def extractfile_command(page: Path, output: Path | None, config_file: Path | None) -> None:
    """Take a document out of a saved retrieval page, checked against its kept receipt."""
    with _client(config_file) as client:
        found = pages.document_from_retrieval_page(_read_page(page), page=str(page))
        store = client.receipts()
        if found.version is not None:
            one = store.get(None, found.name, found.version)
            candidates = [one] if one is not None else []
        else:
            candidates = store.versions(None, found.name)
        if not candidates:
            raise NoLocalReceipt(
                found.name,
                found.version,
                str(client.paths.receipts_db),
                hint="; run `evault verify --page` on its deposit result page first",
            )
        sha = hashlib.sha256(found.content).hexdigest()
        size = len(found.content)
        match = next(
            (
                c
                for c in reversed(candidates)
                if (c.receipt.statement.sha256, c.receipt.statement.size) == (sha, size)
            ),
            None,
        )
        reference = match or candidates[-1]
        s = reference.receipt.statement
        target = output or Path(found.name.rsplit("/", 1)[-1])
        write_verified(
            target,
            [found.content],
            expected_size=s.size,
            expected_sha256=s.sha256,
            what=f"the document {found.name!r} on page {page}",
        )
        click.echo(
            f"Wrote {target} ({size} bytes): it matches the receipt of {s.name!r} version "
            f"{s.version} kept at deposit."
        )


# --- receipts -----------------------------------------------------------------------------------


@click.group("receipts")
def receipts_group() -> None:
    """The local receipt store."""


@receipts_group.command("export")
@click.argument("name", required=False)
@click.option("--version", type=click.IntRange(min=1), help="Version (default: the latest).")
@_output_file_option("File to write (default: standard output).")
@_config_option
@_local_errors
def receipts_export_command(
    name: str | None, version: int | None, output: Path | None, config_file: Path | None
) -> None:
    """Export kept receipts as JSON (NAME: one document; none: all), for `evault verify`."""
    with _client(config_file) as client:
        try:
            owner: str | None = client.token().user_id
        except NotLoggedIn:
            owner = None
        store = client.receipts()
        chosen: list[StoredReceipt]
        if name is None:
            if version is not None:
                raise click.UsageError("--version needs a NAME")
            chosen = store.all(owner)
        elif version is not None:
            one = store.get(owner, name, version)
            chosen = [one] if one is not None else []
        else:
            latest = store.latest(owner, name)
            chosen = [latest] if latest is not None else []
        if not chosen:
            raise NoLocalReceipt(name or "any document", version, str(client.paths.receipts_db))
        text = receipts_to_json([c.receipt for c in chosen])
        if output is None:
            click.echo(text, nl=False)
        else:
            output.write_text(text, encoding="utf-8")
            click.echo(f"{len(chosen)} receipt(s) written to {output}", err=True)


# --- backups ------------------------------------------------------------------------------------


def _load_profile(path: Path) -> BackupProfile:
    profile = parse_profile(path.read_bytes(), source=str(path))
    if profile.encrypt:
        raise ConfigError(
            f"profile {path} sets encrypt = true, which this client cannot do yet; nothing "
            f"was deposited"
        )
    return profile


def _print_plan(plan: BackupPlan) -> None:
    console = _console()
    deposits = plan.deposits
    nbytes = sum(plan.files[d.key].stat.size for d in deposits)
    console.print(
        f"Backup plan for profile {plan.profile.name!r}: {len(plan.files)} file(s) selected, "
        f"{len(deposits)} to deposit ({_size(nbytes)}), "
        f"{len(plan.changes.decisions) - len(deposits)} unchanged, "
        f"{len(plan.removals)} old version(s) to remove."
    )
    if deposits:
        table = _table("Would deposit", ("document", "size", "change", "why"))
        for d in deposits:
            table.add_row(d.key, _size(plan.files[d.key].stat.size), d.kind.value, d.reason)
        console.print(table)
    removed = [d for d in plan.retention.decisions if not d.keep]
    if removed:
        table = _table(
            "Would remove from the vault (retention)",
            ("document", "version", "deposited at", "why"),
        )
        for decision in removed:
            v = decision.version
            when = v.deposited_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            table.add_row(v.name, str(v.version), when, "; ".join(decision.reasons))
        console.print(table)
    for key in plan.changes.vanished:
        console.print(f"vanished locally (its versions stay in the vault): {key}")
    for s in plan.skipped:
        console.print(f"skipped {s.relative}: {s.reason}")


@click.command("backup")
@click.argument("profile_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--dry-run", is_flag=True, help="Print the plan and stop; change nothing.")
@_json_option
@_jobs_option
@_config_option
@_local_errors
def backup_command(
    profile_file: Path, dry_run: bool, as_json: bool, jobs: int, config_file: Path | None
) -> None:
    """Back up by a profile: deposit new and changed files, then apply its retention."""
    profile = _load_profile(profile_file)
    with _client(config_file) as client, _vault(client) as vault:
        state = client.state(vault.owner)
        plan = plan_backup(vault, profile, state, now=datetime.now(UTC), recorded_ns=time.time_ns())
        if as_json and dry_run:
            _print_json({"dry_run": True, "plan": plan.to_json_obj()})
            return
        if not as_json:
            _print_plan(plan)
        if dry_run:
            click.echo("Dry run: nothing was deposited, removed or recorded.")
            return
        total = sum(plan.files[d.key].stat.size for d in plan.deposits)
        with _BarProgress("backing up", len(plan.deposits), total) as bar:
            report = execute_backup(vault, plan, state, bar, jobs=jobs)
        if as_json:
            _print_json(
                {"dry_run": False, "plan": plan.to_json_obj(), "result": report.to_json_obj()}
            )
        else:
            click.echo(
                f"Deposited {len(report.deposited)} file(s) (receipts verified), removed "
                f"{len(report.removed)} old version(s)."
            )
        _report_failures("backup", report.failures, len(plan.deposits) + len(plan.removals))


@click.command("restore")
@click.argument("profile_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--to",
    "to_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Restore below DIR/<root label>/ instead of into the profile's roots.",
)
@click.option("--overwrite", is_flag=True, help="Replace local files whose content differs.")
@_json_option
@_jobs_option
@_config_option
@_local_errors
def restore_command(
    profile_file: Path,
    to_dir: Path | None,
    overwrite: bool,
    as_json: bool,
    jobs: int,
    config_file: Path | None,
) -> None:
    """Bring a profile's files back (latest versions, each verified, written atomically)."""
    profile = _load_profile(profile_file)
    with _client(config_file) as client, _vault(client) as vault:
        targets = restore_targets(vault, profile, to_dir)
        state = client.state(vault.owner) if to_dir is None else None
        with _BarProgress("restoring", len(targets), 0) as bar:
            outcomes: list[Outcome[Any, Any]] = list(
                restore(vault, targets, bar, overwrite=overwrite, state=state, jobs=jobs)
            )

        def show(done: list[Any]) -> None:
            written = sum(1 for r in done if r.retrieved is not None)
            click.echo(
                f"Restored {written} file(s), {len(done) - written} already there; every one "
                f"verified against its receipt."
            )

        _finish_batch(
            "restore",
            outcomes,
            as_json=as_json,
            done_key="restored",
            failed_json=lambda o: {"name": o.item.name},
            show=show,
        )


# --- confidentiality: unwrap keys and printable encodings (DESIGN §7, paper §2.3.2) -------------


def _init_keys(
    client: _Client,
    session: GatewaySession,
    owner: str,
    identity: Any,
    *,
    threshold: int | None,
) -> None:
    seal_path = client.config.seal_keys
    if seal_path is None:
        raise ConfigError(
            f"{client.paths.config_file} names no seal_keys file (the client bundle's "
            f"seal-keys.json): the nodes' sealing keys must not come from the gateway"
        )
    seal_keys = confidential.load_seal_keys(seal_path)
    info = session.vault_info()
    n = int(info.get("n", 0))
    if n != len(seal_keys):
        raise ConfigError(
            f"the gateway announces {n} nodes but {seal_path} holds {len(seal_keys)} sealing keys"
        )
    k = threshold if threshold is not None else int(info.get("k", 0))
    vault_id = str(info["vault_id"])
    local = confidential.CertificateFile(client.paths.unwrap_keys_file)
    # A new key must be the newest by its issue time, even if made within the same second as
    # the last one (here or, as the nodes' certificates tell, on another machine).
    known = [c.issued_at for c in local.load() if c.vault == vault_id and c.owner == owner]
    known += [
        c.issued_at
        for c, _ in confidential.fetch_certificates(
            session, vault=vault_id, owner=owner, identity_public_key=bytes(identity.verify_key)
        )
    ]
    setup = confidential.init_unwrap_key(
        session,
        vault=vault_id,
        owner=owner,
        threshold=k,
        seal_keys=seal_keys,
        identity=identity,
        issued_at=max([int(time.time()), *(t + 1 for t in known)]),
    )
    local.add(setup.certificate)
    cert = setup.certificate
    click.echo(
        f"Unwrap key {cert.key_id.hex()[:16]}… dealt {cert.threshold} of {cert.nodes}: every "
        f"node checked and stored its share; the key itself was never written anywhere."
    )
    click.echo(f"Identity key (Ed25519, from your key passphrase): {cert.identity.hex()}")
    click.echo(f"Key certificate kept in {client.paths.unwrap_keys_file}.")


@click.group("keys")
def keys_group() -> None:
    """Your unwrap key: the nodes' shares of it open encrypted documents' keys."""


@keys_group.command("init")
@click.option(
    "--threshold",
    type=click.IntRange(min=1),
    default=None,
    help="Nodes needed to unwrap (default: the vault's k; more than half of the nodes).",
)
@_config_option
@_local_errors
def keys_init_command(threshold: int | None, config_file: Path | None) -> None:
    """Deal a new unwrap key to the nodes (key passphrase: prompt or EVAULT_KEY_PASSPHRASE).

    Each node's share is sealed to that node's key from the client bundle, so the gateway
    relays shares it cannot read; the first identity key registered for you at a node is the
    one it trusts from then on.  Earlier keys stay usable for the documents wrapped under them.
    """
    with _client(config_file) as client:
        token = client.token()
        with client.session(token.token) as session:
            _check_vault_key(client, session)
            vault_id = _vault_id(session)
            identity = _identity_source(vault_id, token.user_id, confirm=True)()
            _init_keys(client, session, token.user_id, identity, threshold=threshold)


@keys_group.command("list")
@_json_option
@_config_option
@_local_errors
def keys_list_command(as_json: bool, config_file: Path | None) -> None:
    """The unwrap keys the nodes hold for you, checked against your identity key."""
    with _client(config_file) as client, _vault(client) as vault:
        vault_id = _vault_id(vault.session)
        identity = _identity_source(vault_id, vault.owner)()
        found = confidential.fetch_certificates(
            vault.session,
            vault=vault_id,
            owner=vault.owner,
            identity_public_key=bytes(identity.verify_key),
        )
        rows: list[dict[str, Any]] = [
            {
                "key": c.key_id.hex(),
                "threshold": c.threshold,
                "nodes": c.nodes,
                "nodes_holding": holding,
                "issued_at": c.issued_at,
            }
            for c, holding in found
        ]
        if as_json:
            _print_json({"identity": bytes(identity.verify_key).hex(), "keys": rows})
            return
        if not rows:
            raise NoUnwrapKey(vault.owner, "at the vault", "; run `evault keys init`")
        table = _table(
            f"Unwrap keys of {vault.owner} (newest first)",
            ("key", "k of n", "nodes holding it", "issued at"),
        )
        for r in rows:
            issued = datetime.fromtimestamp(int(r["issued_at"]), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            table.add_row(
                str(r["key"])[:16] + "…",
                f"{r['threshold']} of {r['nodes']}",
                str(r["nodes_holding"]),
                issued,
            )
        _console().print(table)


def _atomic_output(path: Path, chunks: Iterator[bytes]) -> int:
    """Write ``chunks`` to ``path`` through a temporary file; nothing is left if they fail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    written = 0
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            yield chunk


@click.command("armor")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_output_file_option("Default: FILE.asc.")
@click.option(
    "--hex", "use_hex", is_flag=True, help="Hex, 2 characters a byte (default: base64, 4 for 3)."
)
@_local_errors
def armor_command(file: Path, output: Path | None, use_hex: bool) -> None:
    """Printable ASCII of a (typically encrypted) file, framed with BEGIN/END lines."""
    target = output or file.with_name(file.name + ".asc")
    encoding: Any = "hex" if use_hex else "base64"
    written = _atomic_output(target, armor(_read_chunks(file), encoding=encoding))
    click.echo(f"Wrote {target} ({written} bytes of {encoding}).")


@click.command("dearmor")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_output_file_option("Default: FILE without .asc (else FILE.bin).")
@_local_errors
def dearmor_command(file: Path, output: Path | None) -> None:
    """Back from `evault armor`'s text to the bytes; strict (any damage is an error)."""
    if output is None:
        output = (
            file.with_suffix("") if file.suffix == ".asc" else file.with_name(file.name + ".bin")
        )
    written = _atomic_output(output, dearmor(_read_chunks(file)))
    click.echo(f"Wrote {output} ({written} bytes).")


# --- registration into the main group ----------------------------------------------------------

COMMANDS: tuple[click.Command, ...] = (
    register_command,
    login_command,
    passwd_command,
    logout_command,
    deposit_command,
    retrieve_command,
    ls_command,
    versions_command,
    verify_command,
    receipts_group,
    extractkey_command,
    extractfile_command,
    backup_command,
    restore_command,
    keys_group,
    armor_command,
    dearmor_command,
)


def register_client_commands(group: click.Group) -> None:
    """Add the client commands to ``group`` (the `evault` main group)."""
    for command in COMMANDS:
        group.add_command(command)
