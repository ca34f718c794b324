"""`--executor ray`: a fleet's variants, and the passes' independent measurements, as Ray tasks.

Ray is an optional extra (`pip install "fusionc[ray]"`), imported only here and only for `--executor ray`.
Without an address (`--ray-address`, RAY_ADDRESS) a local Ray is started for the run, small on purpose
(NUM_CPUS workers, an OBJECT_STORE_BYTES object store, no dashboard) and shut down after it.

- Variants: one task each (`num_cpus=1`, `memory`: memory_request's estimate of the build's peak, in a fresh
  worker): the variant's target passes, lowering, calibration and verification (fusionc.fleet.build_variant).
  The task gets the job (options, out, cache path) and the driver's weightless checkpoint view (put in the
  object store once); it reads the shared work from the cache and writes its build
  to its `out` atomically, so on a cluster `out` and the cache must be on storage every node sees. Only the
  small result comes back to the driver.
- Measurements: RayTaskExecutor implements fusionc.core.executor.TaskExecutor. `shared` is put in the object
  store once; the items are cut into one contiguous chunk per CPU of the cluster and each chunk is a task
  that runs `setup(shared)` once and `work(state, item)` for its items. Results come back in item order.
- Ctrl-C: the driver cancels every pending task (force: the workers are killed), shuts down the Ray it started
  (or waits for the cancelled tasks of a Ray it joined) and removes the temporary folders the killed builds
  left; each `out` stays as it was (fusionc.buildfs). buildfs judges a temporary folder dead by its pid on
  this machine, so on a cluster the folders of other nodes' cancelled tasks are removed after that wait.
"""

from __future__ import annotations

import os
import platform
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from fusionc import buildfs
from fusionc.core.errors import BadInputError
from fusionc.core.executor import SERIAL

NUM_CPUS = 2  # a local Ray on this kind of machine: 2 cores shared with others
OBJECT_STORE_BYTES = 256 << 20  # the checkpoint view and probe sessions' weights; larger objects spill to disk
# A variant's peak RSS per fp32 weight byte of its largest component, measured on the SD-1.5 UNet (3.44 GB):
# QNN W8A16 11.2 GB (benchmarks/results/qnn_scale_w8a16.json: the QNN EP's context build), Core ML 6.0 GB
# (coreml_scale.json); rounded up. Ray schedules a variant only where this much memory is free, so two SD-scale
# QNN builds do not run side by side on one 24 GB node.
PEAK_PER_WEIGHT_BYTE = {"qnn": 3.5, "coreml": 2.0, "onnx": 2.0}
RUNTIME_BYTES = 1 << 30  # torch, onnxruntime and coremltools in the worker


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BadInputError('--executor ray needs Ray: pip install "fusionc[ray]"') from None
    return ray


def require_ray() -> None:
    """Exit 2 naming the extra when Ray is not installed: what a fleet checks before any work."""
    _ray()


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[dict[str, Any]]:
    """Connect to `address` (a running cluster), or start a small local Ray for the block and stop it after."""
    ray = _ray()
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        try:
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:
                ray.init(num_cpus=num_cpus or min(NUM_CPUS, os.cpu_count() or 1), object_store_memory=OBJECT_STORE_BYTES,
                         include_dashboard=False, log_to_driver=False, configure_logging=False)
        except ConnectionError as err:
            raise BadInputError(f"cannot reach the Ray cluster at '{address}': {err}; start it with `ray start "
                                "--head` or drop --ray-address for a local Ray") from None
        started = True
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        yield {"name": "ray", "address": address or "local", "started_here": started and not address,
               "nodes": len(nodes), "cpus": int(ray.cluster_resources().get("CPU", 0))}
    finally:
        if started:
            ray.shutdown()


def _run_chunk(setup: Callable[[Any], Any], work: Callable[[Any, Any], Any], shared: Any, chunk: Sequence[Any]) -> list:
    state = setup(shared)
    return [work(state, item) for item in chunk]


class RayTaskExecutor:
    """fusionc.core.executor.TaskExecutor over Ray tasks (one chunk of items per CPU of the cluster)."""

    name = "ray"

    def __init__(self, chunks: int | None = None) -> None:
        self.chunks = chunks

    def map(self, setup: Callable[[Any], Any], work: Callable[[Any, Any], Any], shared: Any,
            items: Sequence[Any], label: str | None = None) -> list[Any]:
        ray = _ray()
        if len(items) <= 1 or not ray.is_initialized():
            return SERIAL.map(setup, work, shared, items, label)
        count = min(len(items), self.chunks or max(1, int(ray.cluster_resources().get("CPU", 1))))
        bounds = [round(i * len(items) / count) for i in range(count + 1)]
        chunks = [list(items[bounds[i]:bounds[i + 1]]) for i in range(count)]
        task = ray.remote(num_cpus=1, max_retries=0)(_run_chunk)
        shared_ref = ray.put(shared)
        refs = [task.remote(setup, work, shared_ref, chunk) for chunk in chunks]
        try:
            return [result for part in ray.get(refs) for result in part]
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise


def memory_request(job: Any, view: Any) -> int:
    """Bytes a variant's task asks Ray for: its largest component's fp32 weights x the target's factor, and
    for a QNN variant that builds its siblings' contexts beside its own, one context build's bound per sibling."""
    from fusionc.targets.qnn.split import DEFAULT_MAX_BUILD_BYTES

    components = job.options.components or view.component_names()
    folders = {"vae" if c.startswith("vae_") else c for c in components}
    largest = max((view.weight_bytes(f) for f in folders), default=0)
    siblings = len(job.sibling_devices) * int(job.options.qnn_max_build_bytes or DEFAULT_MAX_BUILD_BYTES)
    return RUNTIME_BYTES + int(largest * PEAK_PER_WEIGHT_BYTE.get(job.options.target, 3.5)) + siblings


def cpu_request(job: Any) -> int:
    """CPUs a variant's task asks Ray for: one, and one per sibling context build it runs beside its own."""
    return 1 + len(job.sibling_devices)


def _variant_task(job: Any, view: Any) -> Any:
    import ray

    from fusionc.variant import build_variant

    node = ray.get_runtime_context().get_node_id()[:12]
    job.enter_worker()
    return build_variant(job, view, RayTaskExecutor(), "ray", f"{platform.node()}/{node}")


def run_ray(jobs: list[Any], view: Any, address: str | None,
            on_result: Callable[[Any], None]) -> tuple[list[Any], dict[str, Any]]:
    """Every job as a Ray task; results as they finish (on_result), in any order."""
    from fusionc.variant import VariantResult

    ray = _ray()
    results = []
    with ray_session(address) as info:
        # max_calls=1: a worker exits after its variant, so the heap a build leaves behind (5.4 GB after an SD-1.5
        # QNN variant) goes back to the node before the next variant is scheduled against its memory request
        task = ray.remote(num_cpus=1, max_retries=0, max_calls=1)(_variant_task)
        view_ref = ray.put(view)
        alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        largest_node = max((r.get("memory", 0) for r in alive), default=0)
        most_cpus = max((int(r.get("CPU", 1)) for r in alive), default=1)

        def submit(job: Any) -> Any:  # capped at the largest node's: a request no node can meet would wait forever
            return task.options(memory=min(memory_request(job, view), largest_node) or None,
                                num_cpus=min(cpu_request(job), most_cpus)).remote(job, view_ref)

        # a variant whose context another one builds beside its own is submitted when that one has finished
        held = [job for job in jobs if any(job.waits_for(other) for other in jobs)]
        pending = {submit(job): job for job in jobs if job not in held}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                running = list(pending.values())
                for follower in [f for f in held if not any(f.waits_for(o) for o in running)]:
                    held.remove(follower)
                    pending[submit(follower)] = follower
                try:
                    result = ray.get(done[0])
                except Exception as err:  # noqa: BLE001 - the worker died (out of memory, killed): this variant only
                    first = (str(err).strip().splitlines() or [""])[-1][:300]
                    result = VariantResult(job.name, job.options.target, job.options.device, str(job.out), "error", 3,
                                           f"Ray task failed: {type(err).__name__}: {first}", executor="ray")
                on_result(result)
                results.append(result)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True, recursive=True)
            if info["started_here"]:
                ray.shutdown()  # the local workers die with it: their half-written builds can be removed
            elif pending:  # a Ray we joined stays up: wait (briefly) until the cancelled tasks' workers are gone
                ray.wait(list(pending), num_returns=len(pending), timeout=10)
            buildfs.remove_dead_temporaries([Path(job.out) for job in jobs])
            raise
    return results, info
