"""The one progress bar of augforge's long jobs (rows written, batches of an epoch): description, bar, done of
total, a status field, time left; on stderr, gone when the job ends."""

from __future__ import annotations


def progress_bar(field: str, quiet: bool = False, terminal_only: bool = False):
    """A ``rich.progress.Progress`` whose tasks carry the status text in ``task.fields[field]``. It draws
    nothing when ``quiet``, or with ``terminal_only`` when stderr is not a terminal."""
    from rich.console import Console  # rich: imported when a bar is drawn, not at start-up
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn(f"{{task.fields[{field}]}}"), TimeRemainingColumn(), console=console,
                    disable=quiet or (terminal_only and not console.is_terminal), transient=True)
