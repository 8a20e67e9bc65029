"""Consoles and progress bars that print every string verbatim.

rich parses `[...]` in printed strings as markup by default, which eats parts of paths, keys and
messages (`segdistill[vdl]`, `cfgs/run[red]x.yaml`) or crashes on them (`a[/b]`). Everything the
project prints goes through a console or progress bar made here: markup and emoji off; colour is
added with rich `Text` styles, never with markup.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

from rich.console import Console


def plain_console(stderr: bool = False, **kwargs: Any) -> Console:
    kwargs.setdefault("highlight", False)
    return Console(stderr=stderr, markup=False, emoji=False, **kwargs)


def text_column(text_format: str, style: str = "none") -> Any:
    """A progress-bar text column; the task's description and fields are not parsed as markup."""
    from rich.progress import TextColumn

    return TextColumn(text_format, style=style, markup=False)


def progress_bar(*columns: Any, console: Optional[Console] = None, **kwargs: Any) -> Any:
    """A rich Progress on `console` (default: a plain stderr console); without columns:
    description, bar, done/total, time left."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    if not columns:
        columns = (text_column("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())
    return Progress(*columns, console=console or plain_console(stderr=True), **kwargs)


@contextlib.contextmanager
def progress_callback(console: Console, label: str, total: Optional[int] = None
                      ) -> Iterator[Optional[Callable[[int, int], None]]]:
    """A transient bar on `console` while the block runs, when it is a terminal: yields the
    `progress(done, total)` callback the library functions take (None off a terminal)."""
    if not console.is_terminal:
        yield None
        return
    with progress_bar(console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done, total: bar.update(task, completed=done, total=total)
