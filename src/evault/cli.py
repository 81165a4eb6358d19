"""The `evault` command line: a thin adapter that parses arguments and calls the cores.

Every world-caused failure is an ``EvaultError``; it is printed as one sentence on stderr and
the exit status is non-zero.  No traceback reaches the user.
"""

from __future__ import annotations

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


if __name__ == "__main__":  # pragma: no cover
    main()
