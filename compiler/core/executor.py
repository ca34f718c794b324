"""Where independent measurements run: the small executor interface that passes and targets receive explicitly.

A pass with many independent evaluations of one big object (the mixed-bit search's sensitivity probes, the
QNN remedies' fake-quant evaluations) hands them to `ctx.executor.map(setup, work, shared, items)`:

    state = setup(shared)          once per worker (build an onnxruntime session from the shared model, ...)
    results = [work(state, item) for item in its share of items]

and gets the results back in the order of `items`. SERIAL (the default) runs them here, in order, without
copying anything. The driver may hand a distributed implementation instead (fusionc.ray_executor: chunks of
the items as Ray tasks, `shared` put in the object store once); passes never import it, and `setup`, `work`
and `shared` must then be picklable (module-level functions, plain data or objects that pickle themselves).
The results are the same whichever executor runs them: each item's work is deterministic and independent.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, TypeVar

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")


class TaskExecutor(Protocol):
    name: str

    def map(self, setup: Callable[[Any], Any], work: Callable[[Any, Any], Any], shared: Any,
            items: Sequence[Any], label: str | None = None) -> list[Any]:
        """[work(setup(shared), item) for item in items], setup run once per worker; `label` names the progress."""
        ...


class SerialExecutor:
    """In this process, in order: setup once, then every item."""

    name = "serial"

    def map(self, setup: Callable[[S], Any], work: Callable[[Any, T], R], shared: S, items: Sequence[T],
            label: str | None = None) -> list[R]:
        if not items:
            return []
        from fusionc.core.progress import track

        state = setup(shared)
        return [work(state, item) for item in (track(items, label) if label else items)]


SERIAL = SerialExecutor()
