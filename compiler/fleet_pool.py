"""`--executor local --jobs N`: a fleet's variants built N at a time, each in a worker process of its own.

No Ray, no cluster: the driver starts one process per variant (the `spawn` start method: a fresh interpreter,
never a fork of a driver that has torch's and onnxruntime's threads running), at most N at a time, and hands
it the job and the fleet's weightless checkpoint view (both small and picklable: they are what Ray tasks get
too). The worker runs fusionc.variant.build_variant exactly as the in-process executor does, so it reads the
shared work from the cache, writes its build to its `out` atomically (fusionc.buildfs), and sends back only
the small VariantResult; the builds are the same bytes as in-process ones.

One process per variant (not a long-lived pool) is on purpose:
- a worker that dies (killed for memory, a native crash) fails its own variant only; the others go on
  (concurrent.futures' pools break every pending future when one worker dies);
- an SD-scale lowering's memory is given back to the system when its variant ends.
The price is one interpreter start and the imports per variant (a few seconds), small next to a lowering.
Variants start longest first (`longest_first`: QNN before Core ML before ONNX), and a QNN variant whose context
a running variant builds beside its own (fusionc.fleet.sibling_devices) waits for it, then finds its graph and
context in the cache.

Ctrl-C: the workers ignore SIGINT; the driver, on KeyboardInterrupt, sends SIGTERM (buildfs turns it into
an interrupt that removes the build's temporary folder), SIGKILL to a worker still alive after a grace period
(one stuck in native code), removes the temporaries of killed builds, and re-raises: every `out` is a whole
build or as it was before.
"""

from __future__ import annotations

import multiprocessing
import platform
import signal
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable

from fusionc.buildfs import remove_dead_temporaries
from fusionc.variant import VariantJob, VariantResult

GRACE_SECONDS = 5.0  # after SIGTERM, before SIGKILL


def _worker(job: VariantJob, view: Any, send: Connection) -> None:
    """In the worker process: build one variant, send its result back, exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle (it stops the workers)
    from rich.console import Console

    from fusionc.core import progress
    from fusionc.core.executor import SERIAL
    from fusionc.variant import build_variant

    progress._console = Console(stderr=True, force_terminal=False)  # plain lines: N workers share the terminal
    job.enter_worker()
    result = build_variant(job, view, SERIAL, "local", platform.node())
    send.send(result)
    send.close()


def _died(job: VariantJob, exit_code: int | None) -> VariantResult:
    how = f"killed by signal {-exit_code}" if exit_code is not None and exit_code < 0 else f"exit code {exit_code}"
    killed = getattr(signal, "SIGKILL", None)  # POSIX only: Windows reports a kill as an exit code
    hint = " (SIGKILL: out of memory? use fewer --jobs)" if killed is not None and exit_code == -killed else ""
    return VariantResult(job.name, job.options.target, job.options.device, str(job.out), "error", 3,
                         f"worker process died ({how}){hint}", executor="local")


def run_pool(jobs: list[VariantJob], view: Any, workers: int,
             on_result: Callable[[VariantResult], None]) -> list[VariantResult]:
    """Build every job in its own process, `workers` at a time; results as they finish (on_result), in any order."""
    context = multiprocessing.get_context("spawn")
    waiting = longest_first(jobs)
    running: dict[Any, tuple[Any, VariantJob, Connection]] = {}  # sentinel -> (process, job, receiving end)
    results: list[VariantResult] = []
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                ready_jobs = [j for j in waiting if not any(j.waits_for(e[1]) for e in running.values())]
                if not ready_jobs:
                    break
                job = ready_jobs[0]
                waiting.remove(job)
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_worker, args=(job, view, send), name=f"fusionc-{job.name}")
                process.start()
                send.close()  # the worker holds the only sending end: EOF here when it dies without a result
                running[process.sentinel] = (process, job, receive)
            ready = wait([*running, *(entry[2] for entry in running.values())])
            for sentinel in [s for s, (_, _, r) in running.items() if s in ready or r in ready]:
                process, job, receive = running.pop(sentinel)
                result = None
                try:
                    if receive.poll():
                        result = receive.recv()
                except (EOFError, OSError):
                    result = None
                receive.close()
                process.join()
                if result is None:  # died mid-build: its temporary folder is left, `out` is as it was
                    remove_dead_temporaries([Path(job.out)])
                    result = _died(job, process.exitcode)
                on_result(result)
                results.append(result)
    except KeyboardInterrupt:
        stop([entry[0] for entry in running.values()])
        remove_dead_temporaries([Path(job.out) for _, job, _ in running.values()])
        raise
    return results


# A variant's lowering time relative to a Core ML one of the same model, from benchmarks/results/fleet_sd15.json
# (SD-1.5 UNet, alone in the fleet: Core ML 53-74 s, QNN W8A16 ~200 s with one context build, ONNX Runtime's is
# the export plus an .ort conversion). Only the order matters: the longest variants start first, so the short ones
# fill the other workers around them instead of leaving one long variant running alone at the end.
RELATIVE_COST = {"qnn": 3.0, "coreml": 1.0, "onnx": 0.5}


def longest_first(jobs: list[VariantJob]) -> list[VariantJob]:
    """The jobs by expected time, longest first (a QNN variant that builds its siblings' contexts counts them)."""
    def cost(job: VariantJob) -> float:
        return RELATIVE_COST.get(job.options.target, 1.0) * (1 + 0.5 * len(job.sibling_devices))

    return sorted(jobs, key=cost, reverse=True)  # stable: equal costs keep the config's order


def stop(processes: list[Any]) -> None:
    """SIGTERM every worker, then SIGKILL those still alive after GRACE_SECONDS; wait for them all."""
    import time

    for process in processes:
        process.terminate()
    deadline = time.monotonic() + GRACE_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
