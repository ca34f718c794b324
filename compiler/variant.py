"""One variant of a fleet (fusionc.fleet): the job a worker receives and the result it sends back.

`build_variant` compiles one variant from the fleet's shared checkpoint view and cache and turns every outcome
(built, a gate failed, bad input found late, an internal error) into a VariantResult, so one variant never
stops the others, whichever executor runs it (in this process, or a Ray task: fusionc.ray_executor).
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fusionc.core.errors import FusioncError
from fusionc.core.executor import SERIAL, TaskExecutor
from fusionc.core.options import CompileOptions
from fusionc.gates import calls_per_image


@dataclass
class VariantJob:
    """One variant, as a worker receives it (plain data: pickled to Ray tasks)."""

    name: str
    out: Path
    options: CompileOptions
    config: dict[str, Any]
    cache: Path
    source_hashes: dict[tuple[str, ...], str] = field(default_factory=dict)  # the driver's (fusionc.cache)
    # the devices of the fleet's variants that differ from this one only in the device, whose device-specific
    # work this variant does beside its own (fusionc.fleet.sibling_devices); empty for all but the first
    sibling_devices: tuple[str, ...] = ()

    def waits_for(self, other: "VariantJob") -> bool:
        """True when `other` builds this variant's device-specific work beside its own (its sibling_devices): then
        this one should start after it, and copy that work from the cache instead of doing it again."""
        return (other is not self and self.options.target == other.options.target
                and self.options.device in other.sibling_devices)

    def enter_worker(self) -> None:
        """In a worker process (pool or Ray), before build_variant: use the driver's cache keys."""
        from fusionc.cache import pin_source_hashes

        pin_source_hashes(self.source_hashes)


@dataclass
class VariantResult:
    """One variant's outcome: what the fleet report shows."""

    name: str
    target: str
    device: str | None
    out: str
    status: str  # passed | failed (a gate) | error
    exit_code: int
    error: str | None = None
    bytes: int | None = None
    worst_psnr_db: float | None = None
    latency_ms_per_step: float | None = None  # UNet, one guidance step (batch 2), cost model on the device
    latency_ms_per_generation: float | None = None  # text encoders x2 + steps x UNet + VAE decoder
    latency_steps: int = 8
    latency_reason: str | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_s: float = 0.0
    executor: str = "local"
    node: str = ""
    pid: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_variant(job: VariantJob, checkpoint: Any, executor: TaskExecutor = SERIAL, where: str = "local",
                  node: str | None = None) -> VariantResult:
    """Compile one variant from the shared checkpoint view and cache; every failure becomes its result."""
    from fusionc.gates import GateFailedError
    from fusionc.pipeline import compile_checkpoint

    start = time.perf_counter()
    options = job.options
    result = VariantResult(job.name, options.target, options.device, str(job.out), "passed", 0,
                           latency_steps=options.latency_steps, executor=where,
                           node=node or socket.gethostname(), pid=os.getpid())
    manifest = None
    try:
        manifest = compile_checkpoint(None, options, job.out, config=job.config, cache_dir=job.cache,
                                      checkpoint=checkpoint.shareable(options.allow_pickle), executor=executor,
                                      estimate=True, sibling_devices=job.sibling_devices)
    except GateFailedError as err:
        manifest, result.status, result.exit_code, result.error = err.manifest, "failed", 1, str(err)
    except FusioncError as err:
        result.status, result.exit_code, result.error = "error", err.exit_code, str(err)
    except Exception as err:  # noqa: BLE001 - one variant's internal error must not stop the fleet
        first = str(err).splitlines()[0] if str(err) else ""
        result.status, result.exit_code, result.error = "error", 3, f"internal error: {type(err).__name__}: {first}"
        result.timings["traceback"] = traceback.format_exc()[-4000:]  # type: ignore[assignment]
    result.wall_s = round(time.perf_counter() - start, 3)
    if manifest:
        summarize(result, manifest)
    return result


def summarize(result: VariantResult, manifest: dict[str, Any]) -> None:
    """Bytes, worst PSNR, estimated latencies and gates of a finished build, into its result."""
    components = manifest.get("components", {})
    result.device = manifest.get("device")
    result.bytes = sum(c.get("bytes", 0) for c in components.values())
    scores = [c["psnr_db"] for c in components.values() if c.get("psnr_db") is not None]
    result.worst_psnr_db = min(scores) if scores else None
    result.gates = list(manifest.get("gates", []))
    result.timings = {**manifest.get("timings", {}), **result.timings}
    estimates = {n: c.get("latency_estimate") or {} for n, c in components.items()}
    result.components = {n: {"bytes": c.get("bytes"), "psnr_db": c.get("psnr_db"), "cache": c.get("cache"),
                              "latency_ms": estimates[n].get("ms")} for n, c in components.items()}
    missing = [n for n, e in estimates.items() if e.get("ms") is None and calls_per_image(n, result.latency_steps)]
    if missing:
        result.latency_reason = estimates[missing[0]].get("reason", "no estimate")
    if estimates.get("unet", {}).get("ms") is not None:
        result.latency_ms_per_step = estimates["unet"]["ms"]
    if not missing and any(calls_per_image(n, result.latency_steps) for n in estimates):
        result.latency_ms_per_generation = round(sum(e["ms"] * calls_per_image(n, result.latency_steps)
                                                     for n, e in estimates.items()
                                                     if calls_per_image(n, result.latency_steps)), 3)
