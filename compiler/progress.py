"""Stage reporting: a rich spinner with the stage name on a terminal, plain timestamped lines in CI logs."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console

_console = Console(stderr=True)


@contextmanager
def stage(name: str, timings: dict[str, float] | None = None, quiet: bool = False) -> Iterator[None]:
    """Report `name` while the block runs, then its duration (also stored in `timings[name]`)."""
    start = time.perf_counter()
    if quiet:
        yield
    elif _console.is_terminal:
        with _console.status(f"[bold]{name}[/bold]..."):
            yield
        _console.print(f"[green]done[/green] {name} ({time.perf_counter() - start:.1f} s)")
    else:
        print(f"[fusionc] {name} ...", file=sys.stderr, flush=True)
        yield
        print(f"[fusionc] {name} done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    if timings is not None:
        timings[name] = round(time.perf_counter() - start, 3)
