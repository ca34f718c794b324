"""`fusionc debug-accuracy BUILD`: name the layers of a QNN build that lose the most accuracy.

The prepared float graph is rebuilt from the checkpoint recorded in the manifest (same export and passes
as the compile, so tensor names match the Q nodes of model.qdq.onnx), its inputs are samples of the build's
held-out verification trajectories (the set its PSNR is measured on, not the calibration set its scales came from:
fusionc.inputs), and `fusionc.targets.qnn.debug.compare_layers` measures every quantized tensor
on the CPU (fake-quant) and on the HTP emulator. The table lists the worst layers by local loss; the JSON
(--json) holds every tensor.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from fusionc import buildfs
from fusionc.core.context import ComponentContext
from fusionc.core.errors import BadInputError
from fusionc.core.store import cache_root


def prepared_float_model(checkpoint: Any, name: str, options: Any, path: Path, device: Any = None,
                         cache_dir: Path | None = None) -> Path:
    """Export + the qnn pipeline, exactly as the compile ran them, saved to `path` (external data).

    With a compile cache (`cache_dir`, else $FUSIONC_CACHE, as `fusionc compile` reads it): the compile's own
    optimized graph when the cache holds it under the same key, else the cached export and generic passes (the
    UNet's export was most of this command's time). Only export and generic entries are stored from here: the
    target's passes run without the compile's input sets, so their graph is not the compile's to cache."""
    from fusionc import cache as keys
    from fusionc import pipeline
    from fusionc.cache import ComponentCache
    from fusionc.core.context import ComponentContext as Context
    from fusionc.targets import get_target
    from fusionc.targets.qnn.quantize import save_float

    target, ctx = get_target("qnn", "debug-accuracy"), Context.for_options(options, name)
    spec = pipeline.LazySpec(checkpoint, name, options)
    cache_dir = cache_root(cache_dir)
    if cache_dir is None:
        model = pipeline._export(spec(), options)
        pipeline.optimize(model, target, ctx)
        return save_float(model, path)
    cache = ComponentCache(cache_dir)
    export_key = keys.export_key(checkpoint.sha256, name, pipeline.image_size(checkpoint, options), options)
    hit = cache.load(keys.optimized_key(export_key, options, device.name if device else None))
    if hit is not None:
        return save_float(hit.model, path)
    generic, specific = pipeline.split_generic(target.pipeline(options))
    model, _, _ = pipeline._generic_model(spec, ctx, {}, cache, export_key, keys.generic_key(export_key), generic)
    pipeline._run_stage(model, specific, ctx)
    return save_float(model, path)


def debug_build(build: Path, component: str | None = None, samples: int = 2, top: int = 15,
                tensors: str | None = None, htp: bool = True, json_path: Path | None = None,
                echo: Callable[[str], None] = print) -> dict[str, Any]:
    from fusionc.checkpoint import load_checkpoint, recorded_checkpoint
    from fusionc.core.devices import get_device
    from fusionc.targets import require_extra

    require_extra("qnn", "debug-accuracy")  # before any work
    from fusionc.targets.qnn.debug import compare_layers, quantized_tensors, worst_layers
    from fusionc.targets.qnn.ep import HtpConfig
    from fusionc.targets.qnn.quantize import calibration_feeds
    from fusionc.verify import trajectory_samples
    from fusionc.verify_build import options_from_manifest

    import onnx_ir as ir

    manifest = buildfs.read_manifest(build)
    if manifest.get("target") != "qnn":
        raise BadInputError(f"{build} is a {manifest.get('target')} build: debug-accuracy compares QNN builds")
    names = [component] if component else [n for n, c in manifest["components"].items()
                                           if (build / n / "model.qdq.onnx").exists()]
    if component and component not in manifest["components"]:
        raise BadInputError(f"component '{component}' is not in {build}: it has {', '.join(manifest['components'])}")
    if not names or not all((build / n / "model.qdq.onnx").exists() for n in names):
        raise BadInputError(f"{build} has no quantized graph to debug (an fp16 build?): compile with --precision w8a16 or w8a8")
    source = recorded_checkpoint(manifest.get("checkpoint") or {})
    if not source.exists():
        raise BadInputError(f"the checkpoint this build came from, '{source}', is gone: the debugger needs it")
    options = options_from_manifest(manifest)
    checkpoint = load_checkpoint(source, options.allow_pickle)
    feeds, _ = trajectory_samples(checkpoint, options)  # the verification set (its default)
    device = get_device(manifest.get("device"), "qnn")
    report: dict[str, Any] = {}
    for name in names:
        qdq_path = build / name / "model.qdq.onnx"
        with tempfile.TemporaryDirectory() as tmp:
            float_path = prepared_float_model(checkpoint, name, options, Path(tmp) / "model.float.onnx", device)
            graph = ir.load(float_path).graph
            known = {v.name for v in graph.inputs} | {out.name for node in graph for out in node.outputs}
            names_q = [t.tensor for t in quantized_tensors(ir.load(qdq_path))]
            if sum(t in known for t in names_q) < 0.9 * len(names_q):
                raise BadInputError(f"{name}: the rebuilt float graph does not match {qdq_path} (another fusionc "
                                    "version or options?): recompile the build, then debug it")
            chosen = calibration_feeds(feeds.get(name, []), samples)
            config = replace(HtpConfig.from_device(device), fp16=bool(manifest["components"][name].get("htp_fp16")))
            reports = compare_layers(float_path, qdq_path, chosen, config if htp else None, tensors, Path(tmp))
        worst = worst_layers(reports, top)
        report[name] = {"samples": len(chosen), "inputs": "verification", "worst": [r.to_json() for r in worst],
                        "tensors": [r.to_json() for r in reports]}
        _print(name, reports, worst, echo, len(chosen))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def _print(name: str, reports: list, worst: list, echo: Callable[[str], None], samples: int) -> None:
    from rich.console import Console
    from rich.table import Table

    last = reports[-1] if reports else None
    title = f"{name}: worst layers by local loss (of {len(reports)} quantized tensors)"
    if last is not None:
        title += f"; output {last.tensor}: CPU {last.psnr_cpu:.1f} dB" + (
            f", HTP {last.psnr_htp:.1f} dB" if last.psnr_htp is not None else "")
    table = Table(title=title)
    for column in ("tensor", "op", "bits", "CPU dB", "HTP dB", "local loss dB"):
        table.add_column(column, justify="left" if column in ("tensor", "op") else "right")
    for r in worst:
        table.add_row(r.tensor, r.op, str(r.bits), f"{r.psnr_cpu:.1f}",
                      "-" if r.psnr_htp is None else f"{r.psnr_htp:.1f}", f"{r.local_loss_db:.1f}")
    table.caption = f"on {samples} samples of the held-out verification set's trajectories"
    Console().print(table)
