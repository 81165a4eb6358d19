"""The progress bar of evault's long commands (rich): description, bar, done/total, time."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def task_progress(console: Console) -> Progress:
    """A progress display on ``console`` that disappears when done (the results stay)."""
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
