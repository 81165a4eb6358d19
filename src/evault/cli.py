"""The `evault` command line: a thin adapter that parses arguments and calls the cores.

Every world-caused failure is an ``EvaultError``; it is printed as one sentence on stderr and
the exit status is non-zero.  No traceback reaches the user.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from evault import __version__
from evault.errors import EvaultError

F = TypeVar("F", bound=Callable[..., Any])


class _Group(click.Group):
    """A click group that turns EvaultError into one clear sentence and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EvaultError as exc:
            click.echo(f"evault: error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="evault")
def main() -> None:
    """evault — a secure distributed document repository."""


@main.group(cls=_Group)
def bench() -> None:
    """Benchmarks that print figures (and, with --json, a JSON summary as the last line)."""


@bench.command("codec")
@click.option("--json", "json_output", is_flag=True, help="End with one JSON summary line.")
@click.option("--quick", is_flag=True, help="Smaller documents, for a fast look.")
def bench_codec(json_output: bool, quick: bool) -> None:
    """IDA encode/decode and fingerprint throughput, against zfec in the same run."""
    from evault.bench.codec import run

    run(json_output=json_output, quick=quick)


@bench.command("crypto")
@click.option("--json", "json_output", is_flag=True, help="End with one JSON summary line.")
@click.option("--quick", is_flag=True, help="Fewer repetitions, 2048-bit keys only.")
def bench_crypto(json_output: bool, quick: bool) -> None:
    """Threshold-RSA key generation, share+proof, verification and combination timings."""
    from evault.bench.crypto import run

    run(json_output=json_output, quick=quick)


@bench.command("vault")
@click.option("--json", "json_output", is_flag=True, help="End with one JSON summary line.")
@click.option("--quick", is_flag=True, help="Default vault only, C=1 and 4, 1 s per point.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("bench-results"),
    show_default=True,
    help="Results, plots, logs and the cached dealt vaults.",
)
@click.option(
    "--duration-s",
    type=click.FloatRange(min=0.2),
    default=None,
    help="Per point, at least (longer for long operations at C > 1).",
)
@click.option("--client-procs", type=click.IntRange(1, 16), default=1, show_default=True)
@click.option("--key-bits", type=click.Choice(["2048", "3072"]), default="3072", show_default=True)
@click.option(
    "--gateway-workers",
    default="auto",
    show_default=True,
    help='The gateway\'s serving processes: "auto" (one per core, as `evault init` writes) '
    "or a number.",
)
def bench_vault(
    json_output: bool,
    quick: bool,
    out_dir: Path,
    duration_s: float | None,
    client_procs: int,
    key_bits: str,
    gateway_workers: str,
) -> None:
    """Figures 3 and 4 of the paper (retrievals and deposits) on a real local vault."""
    from evault.bench.vault import run

    run(
        json_output=json_output,
        quick=quick,
        out_dir=out_dir,
        duration_s=duration_s,
        client_procs=client_procs,
        key_bits=int(key_bits),
        gateway_workers=_workers_option(gateway_workers),
    )


def _workers_option(text: str) -> int | str:
    from evault.config import MAX_WORKERS, is_workers_setting

    value: int | str = text
    with contextlib.suppress(ValueError):  # else "auto", or refused below
        value = int(text)
    if not is_workers_setting(value):
        raise click.BadParameter(f'"auto" or a number from 1 to {MAX_WORKERS}, not {text!r}')
    return value


# --- storage node: `evault node` (src/evault/node) ------------------------------------------


@main.command("node")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The node's node.toml, as written by `evault init`.",
)
@click.option(
    "--fault",
    type=click.Choice(["lie", "slow"]),
    default=None,
    hidden=True,
    help="Test-only misbehaviour; refused unless EVAULT_ALLOW_FAULTS=1.",
)
def node_command(config_path: Path, fault: str | None) -> None:
    """Run one storage node (mutual TLS) until SIGTERM or Ctrl-C."""
    from evault.node.main import run_node

    run_node(config_path, fault)


# --- vault operations: init (the dealer) and up (the local cluster) -------------------------


def _init_options(
    nodes: int, needed: int, quorum: int, key_bits: int, base_port: int, port: int
) -> Any:
    from evault.dealer import InitOptions

    return InitOptions(
        nodes=nodes,
        needed=needed,
        quorum=quorum,
        key_bits=key_bits,
        base_port=base_port,
        gateway_port=port,
    )


def _run_init(directory: Path, options: Any) -> None:
    from rich.console import Console

    from evault.dealer import init_vault

    console = Console(stderr=True)
    with console.status("evault init: generating keys ...") as status:

        def progress(message: str) -> None:
            status.update(f"evault init: {message.strip()}")
            console.log(message)

        result = init_vault(directory, options, progress=progress)
    g = result.guarantees
    click.echo(f"Created vault {result.vault_id} in {result.directory}")
    click.echo(f"Setting n={g.n}, m={g.m}, k={g.k} guarantees:")
    for sentence in g.sentences():
        click.echo(f"  - {sentence}")


_cluster_options = [
    click.option("--nodes", "-n", default=5, show_default=True, help="Storage nodes (n)."),
    click.option("--needed", "-m", default=3, show_default=True, help="Slices to rebuild (m)."),
    click.option("--quorum", "-k", default=4, show_default=True, help="Shares per receipt (k)."),
    click.option(
        "--key-bits",
        type=click.Choice(["2048", "3072"]),
        default="3072",
        show_default=True,
        help="Size of the vault's RSA modulus.",
    ),
    click.option("--base-port", default=7100, show_default=True, help="Node i listens on base+i."),
]


def _with_cluster_options(func: F) -> F:
    for option in reversed(_cluster_options):
        func = option(func)
    return func


@main.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@_with_cluster_options
@click.option("--port", default=8443, show_default=True, help="Gateway HTTPS port.")
def init_command(
    directory: Path,
    nodes: int,
    needed: int,
    quorum: int,
    key_bits: str,
    base_port: int,
    port: int,
) -> None:
    """Create a vault (the dealer): keys, certificates, node and gateway configs."""
    try:
        options = _init_options(nodes, needed, quorum, int(key_bits), base_port, port)
        _run_init(directory, options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@main.command("up")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".evault-local"),
    show_default=True,
    help="Vault directory; created with `init` when it holds no vault.",
)
@click.option("--port", type=int, default=None, help="Gateway HTTPS port (default from config).")
@_with_cluster_options
def up_command(
    directory: Path,
    port: int | None,
    nodes: int,
    needed: int,
    quorum: int,
    key_bits: str,
    base_port: int,
) -> None:
    """Run a local vault: n nodes and a gateway on 127.0.0.1, until Ctrl-C."""
    from evault.dealer import is_vault_dir
    from evault.local import run_until_signalled, start_cluster

    if not is_vault_dir(directory):
        try:
            options = _init_options(nodes, needed, quorum, int(key_bits), base_port, port or 8443)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
        _run_init(directory, options)
    click.echo("starting nodes and gateway ...")
    cluster = start_cluster(directory, port=port)
    click.echo(f"evault is up: {cluster.gateway_url}")
    click.echo(f"  CA certificate:   {directory.resolve()}/client/ca.pem")
    click.echo(f"  vault public key: {directory.resolve()}/client/vault-public.pem")
    click.echo(f"  client config:    {directory.resolve()}/client.toml")
    click.echo("Press Ctrl-C to stop.")
    sys.exit(run_until_signalled(cluster, click.echo))


# --- client commands (register, login, deposit, retrieve, backup, ...): see evault.cli_client
from evault.cli_client import register_client_commands  # noqa: E402

register_client_commands(main)


# --- gateway: `evault gateway` (src/evault/gateway) -----------------------------------------


@main.command("gateway")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The gateway's gateway.toml, as written by `evault init`.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Listen on this port instead of the config's (0: any free port, printed when ready).",
)
def gateway_command(config_path: Path, port: int | None) -> None:
    """Run the gateway (public HTTPS API and catalog) until SIGTERM or Ctrl-C."""
    from evault.gateway.main import run_gateway

    run_gateway(config_path, port)


# --- admin: the operator's commands on a gateway's catalog (src/evault/gateway/admin.py) -----

_GATEWAY_CONFIG = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The gateway's gateway.toml, as written by `evault init`.",
)


@main.group(cls=_Group)
def admin() -> None:
    """The operator's commands on a gateway's catalog (safe beside a running gateway)."""


@admin.command("restore-catalog")
@_GATEWAY_CONFIG
@click.option("--dry-run", is_flag=True, help="Check every receipt, write nothing.")
@click.option("--json", "json_output", is_flag=True, help="End with one JSON report line.")
def restore_catalog_command(config_path: Path, dry_run: bool, json_output: bool) -> None:
    """Put back into the catalog every version the nodes hold with a valid receipt.

    For a lost catalog, or one brought back from an older backup: nothing the catalog has is
    changed.  Owners without an account get one, locked until `evault admin set-password`.
    Exit status 1 if a version could not be restored or a node could not be listed.
    """
    from rich.console import Console

    from evault.gateway import admin as gateway_admin

    console = Console(stderr=True)
    report = gateway_admin.restore(config_path, dry_run=dry_run, console=console)
    gateway_admin.print_report(report, Console(markup=False, highlight=False))
    if json_output:
        click.echo(gateway_admin.report_json(report))
    if report.not_restored_count or report.unlisted:
        click.echo(
            f"evault: {report.not_restored_count} version(s) not restored, "
            f"{len(report.unlisted)} node(s) not listed (see above)",
            err=True,
        )
        sys.exit(1)


@admin.command("set-password")
@_GATEWAY_CONFIG
@click.argument("user_id")
@click.option("--password-stdin", is_flag=True, help="Read the password as one line from stdin.")
def set_password_command(config_path: Path, user_id: str, password_stdin: bool) -> None:
    """Give USER_ID a new password and revoke all its tokens (a restored account starts
    locked: this unlocks it).  Hand the password to its owner over a channel they trust."""
    from evault.gateway import admin as gateway_admin

    if password_stdin:
        password = gateway_admin.read_password_line(sys.stdin)
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    revoked = gateway_admin.set_password(config_path, user_id, password)
    click.echo(f"password of {user_id.lower()} set; {revoked} token(s) revoked")


if __name__ == "__main__":  # pragma: no cover
    main()
