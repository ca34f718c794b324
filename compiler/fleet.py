"""Fleet builds: many variants of one model from one fusionc.toml, the shared work done once.

    [compile]                        what the variants share: checkpoint, cache, gates, verification
    checkpoint = "models/my-sd15"
    [gates]
    min_psnr = 35
    [[variant]]                      one build each: name, target, device, precision / palettize / ..., out
    name = "iphone15-6bit"
    target = "coreml"
    device = "iphone-15-pro"
    palettize = "6"

`fusionc compile --config fusionc.toml` builds every variant (`--variant NAME`: one). The driver loads the
checkpoint once and puts into the cache (--cache, else a temporary one beside the builds) what every variant
needs from torch and from the export: the reference trajectory of each distinct trajectory, each component's
export and its generic passes (fusionc.pipeline.prepare_shared). Then each variant runs only its own target
passes, lowering, calibration and verification, on a checkpoint view that holds no weights
(Checkpoint.shareable): N variants cost one load, one trajectory and one export plus N lowerings. QNN variants
that differ only in the device share more: one calibration and one QDQ graph, and their context binaries are
built side by side by the first of them (targets/qnn/shared.py, `sibling_devices`).

Executors: `local` (default) builds the variants one after another in this process, or with `--jobs N` in
worker processes N at a time (fusionc.fleet_pool); `ray`
(fusionc.ray_executor) runs each variant as a Ray task on a local Ray started for the run or on a cluster
(--ray-address / RAY_ADDRESS), and the passes' independent measurements as tasks too. Builds go to each
variant's `out` through buildfs (atomic), so artifacts move through the file system, never the driver. A
variant that fails (a gate, bad input found late, an internal error) fails alone: the others finish, the fleet
exits 1 and the report names the error. The results are the same bytes whichever executor built them.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from fusionc import buildfs
from fusionc.config import CompileSettings
from fusionc.core.errors import BadInputError, FusioncError
from fusionc.core.executor import SERIAL
from fusionc.core.progress import stage
from fusionc.core.store import EPHEMERAL
from fusionc.variant import VariantJob, VariantResult, build_variant

EXECUTORS = ("local", "ray")


def jobs_for(variants: list[CompileSettings], cache: Path) -> list[VariantJob]:
    from fusionc.cache import source_hashes

    hashes = source_hashes()  # one snapshot of the code keys the shared work and every variant, wherever it runs
    siblings = sibling_devices([s.options for s in variants])
    return [VariantJob(s.variant or s.options.target, Path(s.out).resolve(), s.options, s.manifest_entry(), cache,
                       hashes, siblings[i]) for i, s in enumerate(variants)]


def sibling_devices(options: list[Any]) -> list[tuple[str, ...]]:
    """Per variant, the devices whose device-specific work it does beside its own: QNN variants whose options
    differ only in the device share calibration, remedies and the QDQ graph (targets/qnn/shared.py); the first
    of such a group also builds the others' context binaries, side by side with its own, into the cache."""
    groups: dict[str, list[int]] = {}
    for index, option in enumerate(options):
        if option.target == "qnn" and option.device:
            rest = {k: v for k, v in option.to_json().items() if k != "device"}
            groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(index)
    found: list[tuple[str, ...]] = [() for _ in options]
    for members in groups.values():
        first = options[members[0]].device
        found[members[0]] = tuple(dict.fromkeys(options[i].device for i in members[1:] if options[i].device != first))
    return found


def check_fleet(variants: list[CompileSettings]) -> None:
    """Bad input for any variant is exit 2 for the fleet, before any work: devices, outs, name clashes."""
    from fusionc.core.devices import get_device
    from fusionc.targets import get_target

    outs: dict[Path, str] = {}
    for settings in variants:
        where = f"variant '{settings.variant}'"
        try:
            get_target(settings.options.target)
            get_device(settings.options.device, settings.options.target)
            buildfs.check_out(Path(settings.out))
        except BadInputError as err:
            raise BadInputError(f"{where}: {err}") from None
        out = Path(settings.out).resolve()
        if out in outs:
            raise BadInputError(f"variants '{outs[out]}' and '{settings.variant}' both write '{out}': give each its own out")
        outs[out] = settings.variant or ""


def prepare(checkpoint_path: Path | None, jobs: list[VariantJob], allow_pickle: bool,
            timings: dict[str, float]) -> tuple[Any, dict[str, int], dict[str, str]]:
    """Load once, put the shared work into the cache; (weightless view, counts computed, per-variant errors)."""
    from fusionc.cache import ComponentCache
    from fusionc.checkpoint import load_checkpoint
    from fusionc.core.memory import release_freed_memory
    from fusionc.pipeline import prepare_shared

    with stage("fleet: load checkpoint", timings):
        checkpoint = load_checkpoint(checkpoint_path, allow_pickle)
    cache = ComponentCache(jobs[0].cache)
    counts = {"trajectories": 0, "exports": 0, "generic": 0}
    errors: dict[str, str] = {}
    with stage("fleet: shared work (trajectory, export, generic passes)", timings):
        for job in jobs:
            try:
                done = prepare_shared(checkpoint, [job.options], cache, timings)
            except FusioncError as err:  # this variant asks for something the checkpoint lacks: it fails alone
                errors[job.name] = str(err)
                continue
            except Exception as err:  # noqa: BLE001 - an internal error in one variant's shared work
                errors[job.name] = f"internal error: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
                continue
            counts = {k: counts[k] + done[k] for k in counts}
    view = checkpoint.shareable(allow_pickle)
    del checkpoint
    release_freed_memory()
    return view, counts, errors


def run_local(jobs: list[VariantJob], view: Any, on_result: Callable[[VariantResult], None]) -> list[VariantResult]:
    results = []
    for job in jobs:
        result = build_variant(job, view, SERIAL, "local", platform.node())
        on_result(result)
        results.append(result)
    return results


def run_fleet(checkpoint_path: Path | None, variants: list[CompileSettings], cache: Path | None, executor: str,
              ray_address: str | None = None, on_result: Callable[[VariantResult], None] | None = None,
              allow_pickle: bool = False, workers: int = 1) -> dict[str, Any]:
    """Build every variant; returns the fleet report (fusionc.fleet_report). Never raises for one variant.

    `workers` (--jobs, executor local): 1 builds the variants one after another in this process, N > 1 in
    worker processes N at a time (fusionc.fleet_pool)."""
    if executor not in EXECUTORS:
        raise BadInputError(f"--executor '{executor}': choose local or ray")
    if workers < 1:
        raise BadInputError(f"--jobs {workers}: give at least 1")
    if workers > 1 and executor != "local":
        raise BadInputError(f"--jobs {workers} is for --executor local: Ray runs as many variants at a time as its "
                            "cluster has CPUs; drop --jobs")
    check_fleet(variants)
    if executor == "ray":  # a missing Ray is bad input: refused before the shared work (minutes at SD scale)
        from fusionc.ray_executor import require_ray

        require_ray()
    start = time.perf_counter()
    on_result = on_result or (lambda r: None)
    temporary = None
    if cache is None:  # the shared work still needs a place: a cache beside the first build, removed at the end
        parent = Path(variants[0].out).resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        temporary = tempfile.mkdtemp(prefix=f".fusionc-fleet-cache-{os.getpid()}-", dir=parent)
        cache = Path(temporary)
        (cache / EPHEMERAL).touch()  # removed at the end: only what another variant reads is stored
    jobs = jobs_for(variants, Path(cache).resolve())
    timings: dict[str, float] = {}
    results: list[VariantResult] = []
    info: dict[str, Any] = {"name": executor, **({"jobs": workers} if executor == "local" else {})}
    try:
        view, counts, errors = prepare(checkpoint_path, jobs, allow_pickle, timings)
        for job in jobs:
            if job.name in errors:
                result = VariantResult(job.name, job.options.target, job.options.device, str(job.out), "error", 2,
                                       errors[job.name], executor=executor)
                on_result(result)
                results.append(result)
        todo = [j for j in jobs if j.name not in errors]
        if executor == "ray":
            from fusionc.ray_executor import run_ray

            built, info = run_ray(todo, view, ray_address, on_result)
        elif workers > 1:
            from fusionc.fleet_pool import run_pool

            built = run_pool(todo, view, workers, on_result)
        else:
            built = run_local(todo, view, on_result)
        results += built
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    order = {j.name: i for i, j in enumerate(jobs)}
    results.sort(key=lambda r: order[r.name])
    return fleet_report(results, info, timings, counts, time.perf_counter() - start, cache if temporary is None else None)


def fleet_report(results: list[VariantResult], executor: dict[str, Any], timings: dict[str, float],
                 shared: dict[str, int], seconds: float, cache: Path | None) -> dict[str, Any]:
    bad = [r for r in results if r.status != "passed"]
    return {"fusionc_fleet_report": 1, "status": "passed" if not bad else "failed", "exit_code": 1 if bad else 0,
            "failed": [r.name for r in bad], "executor": executor, "wall_s": round(seconds, 3),
            "shared": {"computed": shared, "timings": timings, "cache": None if cache is None else str(cache)},
            "variants": [r.to_json() for r in results]}
