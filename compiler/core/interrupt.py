"""SIGINT/SIGTERM during a build: raised as KeyboardInterrupt, and remembered.

The handler raises KeyboardInterrupt in the main thread, but Python runs it at the next bytecode, which may be
inside a `__del__` or a library's broad `except BaseException`, where the exception is swallowed ("Exception
ignored in ..."): the compile would then go on and swap its build into place with exit 0. So the signal is also
recorded, and `check()` raises again at every stage boundary and before the build is swapped into place.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

_received: int | None = None
_depth = 0  # nested catching() blocks share one record


def _handle(signum: int, frame: object) -> None:
    global _received
    _received = signum
    raise KeyboardInterrupt(f"signal {signum}")


def check() -> None:
    """Raise KeyboardInterrupt if a signal arrived since `catching()` began (even if it was swallowed then)."""
    if _received is not None:
        raise KeyboardInterrupt(f"signal {_received}")


@contextmanager
def catching() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT, unless the process ignores it, as fleet workers do) into remembered interrupts."""
    global _received, _depth
    if _depth == 0:
        _received = None
    _depth += 1
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _handle)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _depth -= 1
        if _depth == 0:
            _received = None
