"""The compile driver: checkpoint -> ONNX per component -> target pass pipeline -> lowering -> verification.

It owns the order of stages and the build folder; what happens to a graph is decided by the target's pass
list (targets/*/__init__.py) and the passes themselves.
"""

from __future__ import annotations

import gc
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx_ir as ir

import fusionc
from fusionc import buildfs
from fusionc.checkpoint import Checkpoint, load_checkpoint
from fusionc.devices import get_device
from fusionc.errors import BadInputError, CheckFailedError
from fusionc.export import component_spec, export_component, image_size
from fusionc.options import ALL_COMPONENTS, DEFAULT_COMPONENTS, CompileOptions
from fusionc.progress import stage
from fusionc.targets import get_target
from fusionc.targets.base import ComponentContext, PassEntry
from fusionc.verify import compare, reference_outputs, trajectory_feeds


@dataclass
class PassRecord:
    name: str
    seconds: float
    modified: bool
    nodes_before: int
    nodes_after: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": round(self.seconds, 3), "modified": self.modified,
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after}


def count_nodes(model: ir.Model) -> int:
    return sum(1 for _ in model.graph.all_nodes())


def run_passes(model: ir.Model, entries: list[PassEntry], options: CompileOptions) -> list[PassRecord]:
    """Run each pass in place, recording its time, its `modified` flag and the node counts around it."""
    records = []
    for entry in entries:
        the_pass = entry.make(options)
        before = count_nodes(model)
        start = time.perf_counter()
        result = the_pass(model)
        if result.model is not model:
            raise RuntimeError(f"pass {type(the_pass).__name__} returned a new model; target passes must be in place")
        records.append(PassRecord(type(the_pass).__name__, time.perf_counter() - start, bool(result.modified),
                                  before, count_nodes(model)))
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


def compile_checkpoint(checkpoint_path: Path | None, options: CompileOptions, out: Path) -> dict[str, Any]:
    """Compile and verify; returns the manifest. Raises CheckFailedError after writing when a gate fails."""
    target = get_target(options.target)
    device = get_device(options.device, options.target)
    timings: dict[str, float] = {}
    with stage("load checkpoint", timings):
        checkpoint = load_checkpoint(checkpoint_path, options.allow_pickle)
    names = select_components(checkpoint, options, target)
    height, width = image_size(checkpoint, options)
    with stage("reference trajectory (torch)", timings):
        feeds = trajectory_feeds(checkpoint, options)
    manifest: dict[str, Any] = {
        "fusionc_version": fusionc.__version__,
        "target": options.target,
        "device": device.name if device else None,
        "checkpoint": {"path": str(checkpoint.path.resolve()), "sha256": checkpoint.sha256},
        "image": {"height": height, "width": width},
        "options": options.to_json(),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "components": {},
        "passes": [],
    }
    expected: dict[str, list] = {}
    with buildfs.atomic_build(out) as build, _scratch(out) as scratch_dir:
        scratch = Path(scratch_dir)
        for name in names:
            spec = component_spec(checkpoint, name, options)
            if options.verify:
                with stage(f"{name}: torch reference outputs", timings):
                    expected[name] = reference_outputs(spec.reference, feeds[name])
            with stage(f"{name}: export", timings):
                model = export_component(spec, options.opset)
            with stage(f"{name}: passes", timings):
                records = run_passes(model, target.pipeline(options), options)
            ctx = ComponentContext(name, options, scratch / name, feeds.get(name, []), spec.reference)
            ctx.work_dir.mkdir(parents=True, exist_ok=True)
            with stage(f"{name}: lower to {options.target}", timings):
                lowered = target.lower(model, build, ctx)
            del model, spec, ctx
            _release_torch_modules(checkpoint, names[names.index(name) + 1:])
            manifest["components"][name] = {
                "files": lowered.files, "bytes": sum(_bytes(build / f) for f in lowered.files),
                "inputs": lowered.inputs, "outputs": lowered.outputs, **lowered.extra,
                "passes": [r.to_json() for r in records]}
            manifest["passes"] += [{"component": name, **r.to_json()} for r in records]
        target.finalize(build, checkpoint, manifest, options)
        for name in names if options.verify else []:
            with stage(f"{name}: verify on {options.target}", timings):
                scores = compare(target.runner(build, name, manifest), expected[name], feeds[name])
            manifest["components"][name]["psnr_db"] = scores.pop("psnr_db")
            manifest["components"][name]["psnr_by_output"] = scores
        manifest["timings"] = timings
        buildfs.write_json(build / buildfs.MANIFEST, manifest)
    gate_psnr(manifest, options.min_psnr)
    return manifest


def _release_torch_modules(checkpoint: Checkpoint, remaining: list[str]) -> None:
    """Free torch modules no remaining component needs (at SD scale each holds GBs)."""
    needed = {"vae" if n.startswith("vae") else n for n in remaining}
    for folder in [f for f in checkpoint.models if f not in needed]:
        del checkpoint.models[folder]
    gc.collect()


def gate_psnr(manifest: dict[str, Any], min_psnr: float | None) -> None:
    if min_psnr is None:
        return
    failed = {n: c["psnr_db"] for n, c in manifest["components"].items() if c.get("psnr_db", min_psnr) < min_psnr}
    if failed:
        worst = min(failed, key=failed.get)
        raise CheckFailedError(f"PSNR gate failed: {worst} {failed[worst]:.2f} dB < {min_psnr} dB "
                               f"({len(failed)} component(s) under the gate)")


def _scratch(out: Path) -> tempfile.TemporaryDirectory:
    """A scratch folder next to --out (same disk) for intermediate files, removed afterwards."""
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=f".{out.name}.work-", dir=out.resolve().parent)


def _bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0
