"""An optional ``rich`` progress bar advanced from the client's event loop thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(total: int, label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield a callback that advances a bar by ``k`` items (one that does nothing when not
    ``enabled``)."""
    if not enabled:
        yield _no_bar
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (f"[bold]{label}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda k: bar.advance(task, k)


def _no_bar(items: int) -> None:
    """The callback of a disabled bar."""
