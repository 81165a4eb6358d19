"""The operator's commands on a gateway's catalog: ``evault admin restore-catalog`` and
``evault admin set-password`` (docs/spec/catalog.md, "Restoring the catalog from the nodes").

Both read the gateway's ``gateway.toml`` and work on its catalog directly (migrated first, so a
new empty database will do); the restore also talks to the nodes with the gateway's own
client certificate.  Both are safe beside a running gateway: the restore only adds rows the
catalog lacks, and a password change is one transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table

from evault.catalog import Catalog
from evault.config import load_gateway_config
from evault.gateway.restore import RestoreReport, restore_catalog
from evault.gateway.service import VaultService
from evault.progress import task_progress


def restore(config_path: str | Path, *, dry_run: bool, console: Console) -> RestoreReport:
    """Restore the catalog of the gateway at ``config_path`` from its nodes, showing progress
    on ``console``."""
    config = load_gateway_config(config_path)
    # The report names every version not restored and every node not listed: the module's
    # own warnings would say it twice.
    logging.getLogger("evault.gateway.restore").setLevel(logging.ERROR)
    catalog = Catalog(config.database_url)
    try:
        catalog.migrate()
        progress = task_progress(console)
        with progress:
            listing = progress.add_task("objects listed by the nodes", total=None)
            checked = progress.add_task("object ids checked", total=None)
            listed: dict[int, int] = {}

            def on_listed(node: int, count: int) -> None:
                listed[node] = count
                progress.update(listing, completed=sum(listed.values()))

            def on_checked(done: int) -> None:
                progress.update(checked, completed=done)

            async def go() -> RestoreReport:
                service = VaultService(config, catalog)
                try:
                    return await restore_catalog(
                        service, dry_run=dry_run, on_listed=on_listed, on_checked=on_checked
                    )
                finally:
                    await service.aclose()

            return asyncio.run(go())
    finally:
        catalog.close()


def print_report(report: RestoreReport, console: Console) -> None:
    """The report as a person reads it (on a console without markup: names and reasons are
    the nodes' and the owners' words, printed as they are)."""
    verb = "would restore" if report.dry_run else "restored"
    listed = ", ".join(f"node {n}: {c}" for n, c in sorted(report.listed.items()))
    console.print(f"Objects listed: {listed or 'none'}.")
    for node, why in sorted(report.unlisted.items()):
        console.print(f"Node {node}'s listing stopped: {why}")
    console.print(
        f"Versions the catalog already had: {report.known}; objects that do not fit this "
        f"vault: {report.ignored}; {verb}: {len(report.restored)}; "
        f"not restored: {report.not_restored_count}."
    )
    if report.restored:
        table = Table(
            "owner", "document", "version", "size", "sha256", title=f"{verb.capitalize()}"
        )
        for v in report.restored:
            table.add_row(v.owner, v.name, str(v.version), f"{v.size:,}", v.sha256[:16] + "…")
        console.print(table)
    if report.not_restored:
        table = Table("owner", "document", "version", "why", title="Not restored")
        for u in report.not_restored:
            table.add_row(u.owner, u.name, str(u.version), u.reason)
        console.print(table)
        unnamed = report.not_restored_count - len(report.not_restored)
        if unnamed:
            console.print(f"… and {unnamed:,} more not restored (not named one by one).")
    if report.accounts_created:
        console.print(
            "Accounts created, locked until you set their password "
            "(`evault admin set-password --config … USER_ID`): "
            + ", ".join(report.accounts_created)
        )


def report_json(report: RestoreReport) -> str:
    return json.dumps(report.to_json(), sort_keys=True)


def set_password(config_path: str | Path, user_id: str, password: str) -> int:
    """Set ``user_id``'s password in the catalog of the gateway at ``config_path``; returns
    how many of the user's tokens were revoked."""
    config = load_gateway_config(config_path)
    catalog = Catalog(config.database_url)
    try:
        catalog.migrate()
        return catalog.set_password(user_id, password)
    finally:
        catalog.close()


def read_password_line(stream: TextIO) -> str:
    """One line from ``stream`` (``--password-stdin``), without its line ending."""
    return stream.readline().rstrip("\r\n")
