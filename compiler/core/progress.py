"""Stage reporting: a rich spinner with the stage name on a terminal, plain timestamped lines in CI logs."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from rich.console import Console

from fusionc.core import interrupt
from fusionc.core.portable import peak_rss_mb

_console = Console(stderr=True)
# The process's peak RSS (MB) when each timed stage ended: where a compile's memory peak happens.
STAGE_PEAK_RSS_MB: dict[str, float] = {}
T = TypeVar("T")
_active: list[tuple[object, str]] = []  # the stage status shown on the terminal, if any


@contextmanager
def stage(name: str, timings: dict[str, float] | None = None, quiet: bool = False) -> Iterator[None]:
    """Report `name` while the block runs, then its duration (also stored in `timings[name]`)."""
    interrupt.check()  # a Ctrl-C that a library swallowed stops the compile at the next stage
    start = time.perf_counter()
    if quiet:
        yield
    elif _console.is_terminal:
        with _console.status(f"[bold]{name}[/bold]...") as status:
            _active.append((status, name))
            try:
                yield
            finally:
                _active.pop()
        _console.print(f"[green]done[/green] {name} ({time.perf_counter() - start:.1f} s)")
    else:
        print(f"[fusionc] {name} ...", file=sys.stderr, flush=True)
        yield
        print(f"[fusionc] {name} done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    if timings is not None:
        timings[name] = round(time.perf_counter() - start, 3)
        STAGE_PEAK_RSS_MB[name] = round(peak_rss_mb(), 1)


def track(items: Iterable[T], name: str, total: int | None = None, quiet: bool = False) -> Iterator[T]:
    """Iterate `items` under a progress bar named `name` on a terminal; in CI logs, plain lines at ~10% steps.

    For the long stages that know their count: calibration samples, passes, layers, palettized tensors.
    """
    items = list(items) if total is None and not hasattr(items, "__len__") else items
    total = total if total is not None else len(items)  # type: ignore[arg-type]
    if quiet or total == 0:
        yield from items
        return
    if _console.is_terminal and _active:  # inside a stage: its status line becomes the bar (one live display)
        status, stage_name = _active[-1]
        for done, item in enumerate(items, 1):
            yield item
            filled = round(30 * done / total)
            status.update(f"[bold]{stage_name}[/bold]: {name} [cyan]{'━' * filled}[/cyan]{'─' * (30 - filled)} {done}/{total}")
        return
    if _console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=_console, transient=True) as progress:
            task = progress.add_task(name, total=total)
            for item in items:
                yield item
                progress.advance(task)
        return
    if total < 10:  # a handful of items: the stage's own lines say enough
        yield from items
        return
    start = time.perf_counter()
    step = max(1, total // 10)
    for done, item in enumerate(items, 1):
        yield item
        if done % step == 0 or done == total:
            print(f"[fusionc] {name}: {done}/{total} ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
