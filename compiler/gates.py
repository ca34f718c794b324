"""Build gates: the checks CI relies on to fail a build (exit 1) after it is written.

Three gates, each evaluated per component and, where it makes sense, for the whole build ("total"):

    min_psnr        every verified component's worst-output PSNR against the fp32 torch model   (dB)
    max_size        bytes of a component's files, or of all components ("total")                 (MB = 10^6 bytes)
    max_latency_ms  the cost model's estimate (fusionc.analysis.costmodel) on the build's device: one call of a component,
                    or one image ("total": text encoders x2, latency_steps guided UNet steps, one VAE decode; a
                    guided step is one batch-2 call, or two calls of a static batch-1 graph such as a QNN context)

A gate that cannot be evaluated (no verification, no device, no cost model) is "skipped" with the reason, never
silently passed. `enforce` raises one CheckFailedError naming every failed gate and by how much.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import onnx_ir as ir

from fusionc.core.errors import BadInputError, CheckFailedError
from fusionc.core.generation import calls_per_image, guided_batch
from fusionc.core.options import ALL_COMPONENTS, CompileOptions

TOTAL = "total"
MB = 1e6


class GateFailedError(CheckFailedError):
    """A gate failed after the build was written (exit 1); carries the manifest and every gate result."""

    def __init__(self, message: str, manifest: dict[str, Any] | None, gates: list["GateResult"]) -> None:
        super().__init__(message)
        self.manifest = manifest
        self.gates = gates


@dataclass
class GateResult:
    gate: str  # min_psnr | max_size | max_latency_ms
    subject: str  # a component name or "total"
    limit: float
    value: float | None
    unit: str  # dB | MB | ms
    status: str  # passed | failed | skipped
    message: str

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_budget(values: Iterable[str] | str | float | dict | None, flag: str) -> dict[str, float] | None:
    """`25` -> {"total": 25}; `unet=20` -> {"unet": 20}; several values (or `a=1,b=2`) are merged."""
    if values is None:
        return None
    if isinstance(values, dict):
        items = [f"{k}={v}" for k, v in values.items()]
    elif isinstance(values, (int, float, str)):
        items = [str(values)]
    else:
        items = [str(v) for v in values]
    budget: dict[str, float] = {}
    for item in (part.strip() for value in items for part in value.split(",")):
        if not item:
            continue
        name, _, number = item.rpartition("=") if "=" in item else (TOTAL, "", item)
        name = name.strip() or TOTAL
        try:
            limit = float(number)
        except ValueError:
            raise BadInputError(f"{flag} '{item}' is not a number: write e.g. {flag} 25 or {flag} unet=20") from None
        if not math.isfinite(limit) or limit <= 0:
            raise BadInputError(f"{flag} '{item}' must be a positive number")
        if name not in ALL_COMPONENTS and name != TOTAL:
            raise BadInputError(f"{flag} '{item}': unknown component '{name}': use total or one of {', '.join(ALL_COMPONENTS)}")
        budget[name] = limit
    return budget or None


def _over(value: float, limit: float, unit: str) -> str:
    return f"over by {value - limit:.2f} {unit}, +{(value / limit - 1) * 100:.0f}%"


def finite_gates(manifest: dict[str, Any]) -> list[GateResult]:
    """Always on for verified components: NaN or Inf in a compiled output (PSNR -inf) fails the build."""
    results = []
    for name, comp in manifest["components"].items():
        value = comp.get("psnr_db")
        if value is not None and not math.isfinite(value) and value < 0:
            results.append(GateResult("finite", name, 0.0, None, "", "failed",
                                      f"{name} produced NaN or Inf on the verification inputs"))
    return results


def psnr_gates(manifest: dict[str, Any], min_psnr: float | None) -> list[GateResult]:
    results = []
    for name, comp in ({} if min_psnr is None else manifest["components"]).items():
        value = comp.get("psnr_db")
        if value is None:
            results.append(GateResult("min_psnr", name, min_psnr, None, "dB", "skipped",
                                      f"{name}: not verified (compiled with --no-verify)"))
            continue
        ok = value >= min_psnr
        value = value if math.isfinite(value) else None  # -inf (NaN/Inf outputs): the finite gate names it
        text = (f"{name} {comp['psnr_db']:.2f} dB >= {min_psnr:g} dB" if ok else
                f"{name} {comp['psnr_db']:.2f} dB < {min_psnr:g} dB (under by {min_psnr - comp['psnr_db']:.2f} dB)")
        results.append(GateResult("min_psnr", name, min_psnr, value, "dB", "passed" if ok else "failed", text))
    return results


def size_gates(manifest: dict[str, Any], max_size: dict[str, float] | None) -> list[GateResult]:
    results = []
    components = manifest["components"]
    for subject, limit in (max_size or {}).items():
        if subject == TOTAL:
            value = sum(c["bytes"] for c in components.values()) / MB
        elif subject in components:
            value = components[subject]["bytes"] / MB
        else:
            results.append(GateResult("max_size", subject, limit, None, "MB", "skipped",
                                      f"{subject}: not in this build"))
            continue
        ok = value <= limit
        text = (f"{subject} {value:.2f} MB <= {limit:g} MB" if ok else
                f"{subject} {value:.2f} MB > {limit:g} MB ({_over(value, limit, 'MB')})")
        results.append(GateResult("max_size", subject, limit, round(value, 4), "MB", "passed" if ok else "failed", text))
    return results


def static_batch(shapes: Iterable[list[Any] | tuple[Any, ...]]) -> int | None:
    """The batch a graph was compiled for, when its inputs fix it (QNN contexts are batch 1); None if dynamic.

    `shapes`: the graph inputs' shapes; the batch is the first axis of the first input that has one (a
    1-D `timestep` has no batch axis and is skipped)."""
    for shape in shapes:
        shape = list(shape)
        if len(shape) >= 2:
            first = shape[0]
            return int(first) if isinstance(first, int) else None
    return None


def graph_calls(wanted_batch: int, graph_batch: int | None) -> tuple[int, int]:
    """(batch of one call, calls per invocation): a batch-2 guided UNet step on a static batch-1 graph is two
    batch-1 calls (the runner splits the batch), on a dynamic graph one batch-2 call."""
    if graph_batch is None or graph_batch >= wanted_batch:
        return (wanted_batch if graph_batch is None else graph_batch), 1
    return graph_batch, math.ceil(wanted_batch / graph_batch)


def latency_gates(manifest: dict[str, Any], max_latency: dict[str, float] | None, steps: int) -> list[GateResult]:
    results = []
    components = manifest["components"]
    for subject, limit in (max_latency or {}).items():
        if subject == TOTAL:
            parts = {n: c.get("latency_estimate", {}) for n, c in components.items() if calls_per_image(n, steps)}
            missing = [n for n, e in parts.items() if e.get("ms") is None]
            if not parts or missing:
                why = parts[missing[0]].get("reason", "no estimate") if missing else "no component of an image"
                results.append(GateResult("max_latency_ms", TOTAL, limit, None, "ms", "skipped",
                                          f"total: no estimate ({why})"))
                continue
            value = sum(e["ms"] * calls_per_image(n, steps) * e.get("calls", 1) for n, e in parts.items())
            device = next(iter(parts.values()))["device"]
            what = f"one image ({steps} steps, guidance) on {device}"
        elif subject in components:
            estimate = components[subject].get("latency_estimate") or {}
            if estimate.get("ms") is None:
                results.append(GateResult("max_latency_ms", subject, limit, None, "ms", "skipped",
                                          f"{subject}: no estimate ({estimate.get('reason', 'not computed')})"))
                continue
            value = estimate["ms"]
            calls = estimate.get("calls", 1)
            what = f"one call at batch {estimate['batch']} on {estimate['device']}" + (
                f" ({calls} calls per guided step)" if calls > 1 else "")
        else:
            results.append(GateResult("max_latency_ms", subject, limit, None, "ms", "skipped",
                                      f"{subject}: not in this build"))
            continue
        ok = value <= limit
        text = (f"{subject} {value:.1f} ms <= {limit:g} ms, estimated, {what}" if ok else
                f"{subject} {value:.1f} ms > {limit:g} ms ({_over(value, limit, 'ms')}), estimated, {what}")
        results.append(GateResult("max_latency_ms", subject, limit, round(value, 3), "ms",
                                  "passed" if ok else "failed", text))
    return results


def evaluate(manifest: dict[str, Any], options: CompileOptions) -> list[GateResult]:
    """Every gate the options ask for, on a finished manifest."""
    return (finite_gates(manifest) + psnr_gates(manifest, options.min_psnr) + size_gates(manifest, options.max_size)
            + latency_gates(manifest, options.max_latency_ms, options.latency_steps))


def enforce(results: list[GateResult], manifest: dict[str, Any] | None = None) -> None:
    """Raise one GateFailedError (exit 1) naming every failed gate and by how much."""
    failed = [r for r in results if r.failed]
    if not failed:
        return
    names = {"min_psnr": "PSNR", "max_size": "size", "max_latency_ms": "latency", "finite": "finite-output"}
    if len(failed) == 1:
        message = f"{names[failed[0].gate]} gate failed: {failed[0].message}"
    else:
        message = f"{len(failed)} gates failed: " + "; ".join(f"{names[r.gate]} {r.message}" for r in failed)
    raise GateFailedError(message, manifest, results)


def gate_psnr(manifest: dict[str, Any], min_psnr: float | None) -> None:
    """`fusionc verify [--min-psnr]`: the always-on finite gate and the PSNR gate."""
    enforce(finite_gates(manifest) + psnr_gates(manifest, min_psnr))


# ---- latency estimates ------------------------------------------------------------------------------------------

def estimate_latency(model: ir.Model, name: str, device: Any, options: CompileOptions) -> dict[str, Any]:
    """The cost model's estimate for one call of `model` on `device`: {"ms", "device", ...} or {"reason"}."""
    if device is None:
        return {"ms": None, "reason": f"an {options.target} build has no device: pass --device (see `fusionc devices`)"}
    try:
        from fusionc.analysis.costmodel import backend_of, estimate
        from fusionc.analysis.graph_stats import graph_stats
    except ImportError as err:
        return {"ms": None, "reason": f"no cost model ({err})"}
    batch, calls = graph_calls(guided_batch(name), static_batch(
        [v.shape.dims if v.shape is not None else () for v in model.graph.inputs]))
    precision = options.precision if options.target == "qnn" or getattr(device, "family", "") == "cpu" else None
    try:
        stats = graph_stats(model, {"batch": batch, "B": batch})
        est = estimate(stats, device, precision)
    except Exception as err:  # noqa: BLE001 - the gate reports why, the build itself is fine
        return {"ms": None, "reason": f"the cost model failed: {type(err).__name__}: {str(err).splitlines()[0]}"}
    return {"ms": round(est.latency_s * 1000, 3), "device": device.name, "backend": backend_of(device),
            "precision": est.precision, "runtime": est.runtime, "batch": batch, "calls": calls, "bound": est.bound,
            "kind": "estimated"}
