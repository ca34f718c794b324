"""The compile driver: checkpoint -> ONNX per component -> target pass pipeline -> lowering -> verification.

It owns the order of stages and the build folder; what happens to a graph is decided by the target's pass
list (targets/*/__init__.py) and the passes themselves.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx_ir as ir

import fusionc
from fusionc import buildfs, gates
from fusionc import cache as cache_keys
from fusionc.cache import ComponentCache
from fusionc.checkpoint import Checkpoint, load_checkpoint
from fusionc.core.devices import get_device
from fusionc.core.errors import BadInputError
from fusionc.gates import gate_psnr  # noqa: F401  (re-exported: `fusionc verify` imports it from here)
from fusionc.export import component_spec, export_component, image_size
from fusionc.core.memory import forget_removed_values, release_freed_memory
from fusionc.core.options import (ALL_COMPONENTS, DEFAULT_COMPONENTS, CompileOptions, check_target_options,
                                  options_in_effect)
from fusionc.core.progress import STAGE_PEAK_RSS_MB, stage, track
from fusionc.core.reproducible import reset_name_state, strip_host_paths
from fusionc.targets import get_target
from fusionc.core.context import ComponentContext
from fusionc.passes.entry import PassEntry, enabled
from fusionc.core.context import CALIBRATION, SELECTION, VERIFICATION
from fusionc.inputs import InputSet, input_sets, needed_roles, role_spec
from fusionc.verify import compare, reference_outputs


RELEASE_NOW_BYTES = 256 << 20  # freeing more than this is worth a full gc (~0.5 s) at once
FP16_REPORT_KEY = "fusionc.fp16_safety"  # model metadata the precision pass leaves for the manifest


@dataclass
class PassRecord:
    name: str
    seconds: float
    modified: bool
    nodes_before: int
    nodes_after: int
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": round(self.seconds, 3), "modified": self.modified,
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after, "why": self.why}


def count_nodes(model: ir.Model) -> int:
    return sum(1 for _ in model.graph.all_nodes())


def run_passes(model: ir.Model, entries: list[PassEntry], ctx: ComponentContext) -> list[PassRecord]:
    """Run each entry the options switch on, in place, recording its time, `modified` flag and node counts."""
    records = []
    for entry in track(enabled(entries, ctx.options), "passes"):
        the_pass = entry.make(ctx)
        before = count_nodes(model)
        start = time.perf_counter()
        result = the_pass(model)
        if result.model is not model:
            raise RuntimeError(f"pass {type(the_pass).__name__} returned a new model; target passes must be in place")
        records.append(PassRecord(type(the_pass).__name__, time.perf_counter() - start, bool(result.modified),
                                  before, count_nodes(model), entry.why))
    return records


def select_components(checkpoint: Checkpoint, options: CompileOptions, target: Any) -> list[str]:
    available = checkpoint.component_names()
    if options.components is None:
        wanted = DEFAULT_COMPONENTS + tuple(getattr(target, "extra_default_components", ()))
        return [c for c in available if c in wanted]
    for name in options.components:
        if name not in ALL_COMPONENTS:
            raise BadInputError(f"unknown component '{name}': choose from {', '.join(ALL_COMPONENTS)}")
        if name not in available:
            raise BadInputError(f"component '{name}' is not in the checkpoint, which has {', '.join(available)}")
    return list(options.components)


def compile_checkpoint(checkpoint_path: Path | None, options: CompileOptions, out: Path,
                       config: dict[str, Any] | None = None, cache_dir: Path | None = None) -> dict[str, Any]:
    """Compile and verify; returns the manifest. Raises GateFailedError (exit 1) after writing when a gate fails.

    `config`: the effective configuration (fusionc.config) stored in the manifest; `cache_dir`: --cache,
    else the FUSIONC_CACHE environment variable, else no cache.
    """
    cache_dir = cache_dir or (Path(os.environ["FUSIONC_CACHE"]) if os.environ.get("FUSIONC_CACHE") else None)
    target = get_target(options.target)
    check_target_options(options)  # an option the target cannot honour: refused before any work
    target.pipeline(options)  # and options the pipeline refuses (compression combinations), also before any work
    device = get_device(options.device, options.target)
    if device is not None and options.device is not None:  # "iPhone 14 Pro" is recorded as its slug
        options = dataclasses.replace(options, device=device.name)
    buildfs.check_out(out)  # fail in a second, not after the checkpoint and the trajectory
    timings: dict[str, float] = {}
    component_cache = ComponentCache(cache_dir) if cache_dir is not None else None
    with stage("load checkpoint", timings):
        checkpoint = load_checkpoint(checkpoint_path, options.allow_pickle)
    names = select_components(checkpoint, options, target)
    height, width = image_size(checkpoint, options)
    with stage("reference trajectories (torch)", timings):
        sets = input_sets(checkpoint, options, names, needed_roles(target, options))
    _release_torch_modules(checkpoint, names)
    empty = InputSet(role_spec(options, VERIFICATION))
    verification, calibration, selection = (sets.get(r, empty) for r in (VERIFICATION, CALIBRATION, SELECTION))
    manifest: dict[str, Any] = {
        "fusionc_version": fusionc.__version__,
        "target": options.target,
        "device": device.name if device else None,
        "checkpoint": {"path": str(checkpoint.path.resolve()), "sha256": checkpoint.sha256},
        "image": {"height": height, "width": width},
        "scaling_factor": _vae_scaling_factor(checkpoint),
        **({"omitted_components": checkpoint.omitted} if checkpoint.omitted else {}),
        "options": options_in_effect(options),  # only what this target honours
        **({"config": config} if config is not None else {}),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "inputs": {role: sets[role].describe() for role in sets},
        "components": {},
        "passes": [],
    }
    with buildfs.atomic_build(out) as build, _scratch(out) as scratch_dir:
        scratch = Path(scratch_dir)
        order = _largest_first(checkpoint, names)
        for name in order:
            spec = component_spec(checkpoint, name, options)
            for judged in (verification, calibration) if options.verify else ():
                if name not in judged.outputs and judged.feeds.get(name):
                    with stage(f"{name}: torch reference outputs ({judged.spec.role})", timings):
                        judged.outputs[name] = reference_outputs(spec.reference, judged.feeds[name])
            ctx = ComponentContext(name, options, scratch / name, calibration.feeds.get(name, []), spec.reference,
                                   selection.feeds.get(name, []))
            ctx.work_dir.mkdir(parents=True, exist_ok=True)
            model, records, cached = _export_and_optimize(spec, target, ctx, timings, component_cache,
                                                          (checkpoint.sha256, (height, width), device))
            estimate = gates.estimate_latency(model, name, device, options) if options.max_latency_ms else None
            # Past the passes the torch module is not needed (its reference outputs are computed): free it before
            # the lowering, so a target that saves the graph and drops its weights (qnn) frees them for real.
            ctx = dataclasses.replace(ctx, reference=None)
            del spec
            freed = _release_torch_modules(checkpoint, order[order.index(name) + 1:])
            with stage(f"{name}: lower to {options.target}", timings):
                lowered = target.lower(model, build, ctx)
            fp16_report = model.metadata_props.get(FP16_REPORT_KEY)
            del model, ctx
            if freed >= RELEASE_NOW_BYTES:  # the graph is all reference cycles: free its weights now, not at a later gc
                release_freed_memory()
            manifest["components"][name] = {
                "files": lowered.files, "bytes": sum(_bytes(build / f) for f in lowered.files),
                "inputs": lowered.inputs, "outputs": lowered.outputs, **lowered.extra,
                "passes": [r.to_json() for r in records]}
            if cached:
                manifest["components"][name]["cache"] = cached
            if estimate is not None:
                manifest["components"][name]["latency_estimate"] = estimate
            if fp16_report:
                manifest["components"][name]["fp16_safety"] = json.loads(fp16_report)
            manifest["passes"] += [{"component": name, **r.to_json()} for r in records]
        manifest["components"] = {n: manifest["components"][n] for n in names}  # the checkpoint's order
        target.finalize(build, checkpoint, manifest, options)
        for name in names if options.verify else []:
            runner = target.runner(build, name, manifest)
            feeds = verification.feeds[name]
            with stage(f"{name}: verify on {options.target}", timings):
                scores = compare(runner, verification.outputs[name], track(feeds, "verification inputs", total=len(feeds)))
            manifest["components"][name]["psnr_db"] = scores.pop("psnr_db")
            manifest["components"][name]["psnr_by_output"] = scores
            if calibration.outputs.get(name):  # the inputs it was tuned on: the gap to psnr_db is the generalization gap
                picks = _spread(len(calibration.feeds[name]), len(verification.feeds[name]))  # as many as verified
                feeds = [calibration.feeds[name][i] for i in picks]
                with stage(f"{name}: PSNR on the calibration set", timings):
                    scores = compare(runner, [calibration.outputs[name][i] for i in picks],
                                     track(feeds, "calibration inputs", total=len(feeds)))
                manifest["components"][name]["psnr_db_calibration"] = scores["psnr_db"]
            del runner
        manifest["timings"] = timings
        manifest["peak_rss_mb_after_stage"] = {k: v for k, v in STAGE_PEAK_RSS_MB.items() if k in timings}
        results = gates.evaluate(manifest, options)
        manifest["gates"] = [r.to_json() for r in results]
        buildfs.write_json(build / buildfs.MANIFEST, manifest)
    gates.enforce(results, manifest)
    return manifest


def _spread(n: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(n), first and last included (all of them when count >= n)."""
    if count >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})


def _export(spec: Any, options: CompileOptions) -> ir.Model:
    model = export_component(spec, options.opset)
    strip_host_paths(model)  # the exporter's stack traces hold this machine's paths: not reproducible
    reset_name_state(model)  # name new nodes as a model loaded from the --cache would
    return model


def _optimize(model: ir.Model, target: Any, ctx: ComponentContext) -> list[PassRecord]:
    records = run_passes(model, target.pipeline(ctx.options), ctx)
    forget_removed_values(model)  # the weights the passes replaced would stay pinned through the lowering
    reset_name_state(model)  # lowering then names alike whether the passes ran or came from the --cache
    return records


def _export_and_optimize(spec: Any, target: Any, ctx: ComponentContext, timings: dict[str, float],
                         cache: ComponentCache | None, key_parts: tuple) -> tuple[ir.Model, list[PassRecord], str | None]:
    """Export + the target's passes, or their cached result (--cache): (model, pass records, cache status)."""
    name, options = spec.name, ctx.options
    if cache is None:
        with stage(f"{name}: export", timings):
            model = _export(spec, options)
        with stage(f"{name}: passes", timings):
            return model, _optimize(model, target, ctx), None
    checkpoint_sha, image, device = key_parts
    export_key = cache_keys.export_key(checkpoint_sha, name, image, options)
    optimized_key = cache_keys.optimized_key(export_key, options, device.name if device else None)
    hit = cache.load(optimized_key)
    if hit is not None:
        timings[f"{name}: optimized ONNX from the cache"] = 0.0
        return hit.model, [PassRecord(**r) for r in hit.meta["passes"]], "hit: optimized"
    exported = cache.load(export_key)
    with stage(f"{name}: export" + (" (from the cache)" if exported else ""), timings):
        model = exported.model if exported else _export(spec, options)
        if exported is None:
            cache.store(export_key, model, {"stage": "export", "component": name})
    with stage(f"{name}: passes", timings):
        records = _optimize(model, target, ctx)
    cache.store(optimized_key, model, {"stage": "optimized", "component": name,
                                       "passes": [dataclasses.asdict(r) for r in records]})
    return model, records, "hit: export" if exported else "miss"


def _vae_scaling_factor(checkpoint: Checkpoint) -> float | None:
    """The latent scaling factor the denoising loop divides by before the VAE decoder."""
    vae = checkpoint.configs.get("vae")
    return float(vae.scaling_factor) if vae is not None and getattr(vae, "scaling_factor", None) else None


def _torch_folder(component: str) -> str:
    """The checkpoint folder whose torch module a component is exported from (vae_decoder, vae_encoder: vae)."""
    return "vae" if component.startswith("vae") else component


def _torch_bytes(module: Any) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) if module is not None else 0


def _largest_first(checkpoint: Checkpoint, names: list[str]) -> list[str]:
    """Build order: the component with the most torch weights first. Every module not yet built stays resident,
    so the UNet's export and lowering (the peak at SD scale) should not also wait behind the others: building
    the text encoder first kept 3.4 GB of UNet weights resident through its lowering (8.2 GB peak)."""
    def weight_bytes(name: str) -> int:
        return _torch_bytes(checkpoint.models.get(_torch_folder(name)))
    return sorted(names, key=weight_bytes, reverse=True)  # stable: ties keep the checkpoint's order


def _release_torch_modules(checkpoint: Checkpoint, remaining: list[str]) -> int:
    """Free torch modules no remaining component needs (at SD scale each holds GBs); returns their bytes."""
    needed = {_torch_folder(n) for n in remaining}
    freed = 0
    for folder in [f for f in checkpoint.models if f not in needed]:
        freed += _torch_bytes(checkpoint.models.pop(folder))
    if freed >= RELEASE_NOW_BYTES:
        release_freed_memory()
    return freed


def _scratch(out: Path) -> tempfile.TemporaryDirectory:
    """A scratch folder next to --out (same disk) for intermediate files, removed afterwards."""
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    # the pid in the name lets the next compile remove it if this one is killed (buildfs._stale_temporaries)
    return tempfile.TemporaryDirectory(prefix=f".{out.name}.work-{os.getpid()}-", dir=out.resolve().parent)


def _bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0
