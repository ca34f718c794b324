"""`fusionc estimate`: per component and device, the cost model's latency of one call and of a whole generation.

Nothing is built: a checkpoint folder is exported from its configs alone (modules on the meta device, no weight
read: fusionc.checkpoint.load_structure + fusionc.export.export_structure) and run through the passes a build
would run; an .onnx file or a build folder's kept ONNX graphs are read as they are (but an onnx build on an NPU
profile: its checkpoint exported so, the graph that NPU's target compiles, as `fusionc bench` estimates it). Each
graph goes through
fusionc.analysis.costmodel.estimate on every device asked for (Hexagon: the model fitted on Qualcomm AI Hub's
published latencies; Apple Neural Engine: the roofline calibrated on Apple's and SnapFusion's figures).

Calls per image: the denoiser (UNet or diffusion transformer) and a ControlNet once per step, the text encoder(s)
once per prompt (twice with guidance: the prompt and the empty prompt), the VAE decoder once. With guidance a
Hexagon build runs its static batch-1 denoiser twice per step; a Core ML build runs one batch-2 call (how Apple's
and SnapFusion's published step times are measured).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusionc.core.devices import DEVICES, Device, get_device
from fusionc.core.errors import BadInputError
from fusionc.core.generation import PIPELINE_ORDER, calls_per_image, guided_batch, hexagon_batch
from fusionc.core.options import ALL_COMPONENTS
from fusionc.core.store import cache_root


def calls(component: str, device: Device, steps: int, guidance: bool) -> tuple[int, int]:
    """(batch of one call, graph calls per image) of `component` on `device`: a guided denoiser step is two batch-1
    calls on Hexagon (a QNN context is static batch 1: hexagon_batch), one batch-2 call on Core ML and ONNX Runtime.
    A component no text-to-image generation calls (vae_encoder) makes 0 calls per image."""
    batch = guided_batch(component, guidance)
    return hexagon_batch(device, batch, calls_per_image(component, steps, guidance))


def _graphs_from_onnx(paths: dict[str, Path]) -> dict[str, Any]:
    from fusionc.analysis.graph_stats import graph_stats

    out = {}
    for name, path in paths.items():
        stats = {b: graph_stats(path, {"batch": b}) for b in (1, 2)}
        out[name] = {"generic": stats, "qnn": stats[1]}
    return out


def read_as_it_is(source: Path | None) -> bool:
    """A .onnx file or a build folder: its graphs are read with their own shapes (an onnx build's NPU estimates export
    its checkpoint at the build's size: estimate_graphs.npu_graphs)."""
    return source is not None and (source.suffix == ".onnx" or (source / "manifest.json").is_file())


def exports_nothing(source: Path | None) -> bool:
    """A .onnx file, or a Core ML or QNN build: nothing is exported, so nothing is kept in a --cache."""
    if not read_as_it_is(source):
        return False
    if source.suffix == ".onnx":
        return True
    return json.loads((source / "manifest.json").read_text(encoding="utf-8")).get("target") != "onnx"


def collect_graphs(source: Path | None, components: list[str] | None, height: int | None,
                   width: int | None, cache_dir: Path | None = None) -> tuple[str, dict[str, Any], dict | None]:
    """(kind of source, graphs by component, the build's manifest or None) for a checkpoint folder, a .onnx file or
    a build folder (`cache_dir`: a checkpoint's graph statistics are kept there, fusionc.estimate_cache; the others
    are read as they are, but for an onnx build's graphs on an NPU: its checkpoint's, as `fusionc bench` has them)."""
    if read_as_it_is(source) and (height is not None or width is not None):  # the size would be ignored
        raise BadInputError(f"--height/--width set the size a checkpoint is exported at, and '{source}' has its shapes "
                            "fixed: drop them, or estimate the checkpoint")
    if source is not None and source.suffix == ".onnx":
        if not source.is_file():
            raise BadInputError(f"'{source}' does not exist: pass a checkpoint folder, a .onnx file or a build folder")
        if components and len(components) != 1:
            raise BadInputError("an .onnx file is one component: pass at most one --components name")
        return "onnx", _graphs_from_onnx({(components or [source.stem])[0]: source}), None
    if source is not None and (source / "manifest.json").is_file():
        from fusionc.bench import component_graph
        from fusionc.buildfs import read_manifest
        from fusionc.estimate_graphs import npu_graphs

        manifest = read_manifest(source)
        paths = {}
        for name, comp in manifest["components"].items():
            if components and name not in components:
                continue
            graph = component_graph(source, comp)
            if graph is not None:
                paths[name] = graph
        if not paths:
            raise BadInputError(f"build '{source}' keeps no ONNX graph of {','.join(components or ['its components'])} "
                                "(QNN context binaries and Core ML packages are opaque): estimate its checkpoint instead")
        graphs = _graphs_from_onnx(paths)
        npu = npu_graphs(source, manifest, list(paths), cache_dir) if manifest["target"] == "onnx" else None
        for name, graph in graphs.items() if npu else ():  # an onnx build on an NPU: the graph its target compiles
            graph.update(qnn=npu[name]["qnn"], npu=npu[name]["generic"])
        return "build", graphs, manifest
    from fusionc.checkpoint import checkpoint_path

    if source is not None and not checkpoint_path(source).exists():
        raise BadInputError(f"'{source}' does not exist: pass a checkpoint folder, a .onnx file or a build folder")
    from fusionc.estimate_graphs import checkpoint_graphs

    return "checkpoint", checkpoint_graphs(source, components, height, width, cache_dir), None


def estimate(source: Path | None, components: list[str] | None = None, devices: list[str] | None = None,
             precision: str | None = None, palettize: float | None = None, height: int | None = None,
             width: int | None = None, steps: int = 8, guidance: bool = True,
             cache_dir: Path | None = None, qnn_runtime: str | None = None) -> dict[str, Any]:
    """Everything `fusionc estimate` prints and writes, as one JSON-ready dict. `qnn_runtime`: the runtime of the
    Hexagon estimates (fusionc.analysis.costfit.QNN_RUNTIMES; None: costmodel.DEFAULT_QNN_RUNTIME)."""
    from fusionc.analysis.costmodel import (DEFAULT_PRECISION, DEFAULT_QNN_RUNTIME, HEXAGON_GROUPS, PRECISIONS,
                                            backend_of, check_qnn_runtime)
    from fusionc.bench import build_precision
    from fusionc.analysis.costmodel import estimate as cost

    if steps < 1:
        raise BadInputError("--steps must be >= 1")
    if precision is not None and precision not in PRECISIONS:
        raise BadInputError(f"--precision {precision}: pick one of {', '.join(PRECISIONS)}")
    if palettize is not None and not 1 <= palettize <= 8:
        raise BadInputError(f"--palettize {palettize:g}: bits per weight must be within 1..8")
    unknown = [c for c in components or [] if c not in ALL_COMPONENTS]
    if unknown and not (source is not None and source.suffix == ".onnx"):
        raise BadInputError(f"--components {','.join(unknown)}: pick from {', '.join(ALL_COMPONENTS)}")
    chosen = [get_device(name, "onnx") for name in devices] if devices else list(DEVICES.values())
    if precision is not None and precision not in HEXAGON_GROUPS and any(d.family == "htp" for d in chosen):
        raise BadInputError(f"--precision {precision}: a Hexagon NPU runs {', '.join(HEXAGON_GROUPS)} (QNN HTP has "
                            f"no {precision}): pick one of those, or pass only non-Hexagon --device profiles")
    check_qnn_runtime(qnn_runtime, chosen, "add a Snapdragon --device")
    qnn_runtime = qnn_runtime or DEFAULT_QNN_RUNTIME
    kind, graphs, manifest = collect_graphs(source, components, height, width, cache_dir)
    rows = []
    unknown_shapes: dict[str, int] = {}
    for name, graph in graphs.items():
        for device in chosen:
            batch, n_calls = calls(name, device, steps, guidance)
            stats = (graph["qnn"] if device.family == "htp" else graph["npu"][batch]
                     if device.family != "cpu" and "npu" in graph else graph["generic"][batch])
            unknown_shapes[name] = max(unknown_shapes.get(name, 0), stats.unknown_shape_ops)
            own = build_precision(manifest, device) if manifest else None  # a build's, as `fusionc bench` has it
            prec = precision or own or DEFAULT_PRECISION[device.family]
            est = cost(stats, device, prec, weight_bits=palettize, qnn_runtime=qnn_runtime)
            ms = est.latency_s * 1000
            rows.append({"component": name, "device": device.name, "backend": backend_of(device), "precision": prec,
                         "runtime": est.runtime, "batch": batch, "latency_ms": round(ms, 3), "bound": est.bound,
                         "model": est.model, "calls_per_image": n_calls, "per_image_ms": round(ms * n_calls, 3),
                         "weight_bits": palettize, "gmacs": round(stats.macs / 1e9, 3),
                         "compute_ms": round(est.compute_s * 1000, 3), "memory_ms": round(est.memory_s * 1000, 3),
                         "overhead_ms": round(est.overhead_s * 1000, 3), "fallback_ms": round(est.fallback_s * 1000, 3),
                         "range_ms": [round(v * 1000, 3) for v in est.range_s] if est.range_s else None,
                         "range_coverage": est.range_coverage, "outside_training": est.outside_training})
    totals = []
    for device in chosen:
        mine = [r for r in rows if r["device"] == device.name and r["calls_per_image"]]
        if mine:
            ranged = all(r["range_ms"] for r in mine)  # one chipset: the components' errors move together
            totals.append({"device": device.name, "components": [r["component"] for r in mine],
                           "per_image_ms": round(sum(r["per_image_ms"] for r in mine), 3),
                           "per_image_range_ms": [round(sum(r["range_ms"][k] * r["calls_per_image"] for r in mine), 3)
                                                  for k in (0, 1)] if ranged else None})
    return {"source": str(source) if source else "built-in tiny_sd", "source_kind": kind, "steps": steps,
            "guidance": guidance, "qnn_runtime": qnn_runtime, "estimates": rows,
            "per_image": totals,
            "graph_cache": {name: graph["cache"] for name, graph in graphs.items() if "cache" in graph},
            "unknown_shape_ops": unknown_shapes,
            "note": "cost-model estimates, not measurements: see the README section 'Estimating latency without a "
                    "device' for the "
                    "held-out error per chipset; range_ms (Hexagon) holds the published latency of range_coverage of "
                    "the cost model's cross-validated training rows (models it had not seen)"}


def print_estimates(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    hexagon = any(r.get("runtime") for r in result["estimates"])
    table = Table(title=f"fusionc estimate: {result['source']} ({result['source_kind']}), {result['steps']} steps, "
                        f"guidance {'on' if result['guidance'] else 'off'}"
                        + (f", Hexagon on {result['qnn_runtime']}" if hexagon else "")
                        + " [E] estimated, nothing built")
    coverage = next((r["range_coverage"] for r in result["estimates"] if r.get("range_coverage")), None)
    range_column = f"{coverage:.0%} range" if coverage else "range"
    numeric = ("batch", "ms / call", range_column, "calls", "ms / image")
    for column in ("component", "device", "precision", "batch", "ms / call", range_column, "calls", "ms / image",
                   "bound", "model"):
        table.add_column(column, justify="right" if column in numeric else "left")
    span = lambda r, fmt: f"{r[0]:{fmt}}-{r[1]:{fmt}}" if r else "-"  # noqa: E731
    for r in result["estimates"]:
        table.add_row(r["component"], r["device"], r["precision"], str(r["batch"]), f"{r['latency_ms']:.2f}",
                      span(r.get("range_ms"), ".2f"), str(r["calls_per_image"]), f"{r['per_image_ms']:.1f}",
                      r["bound"], r["model"])
    for t in result["per_image"]:
        table.add_row("[b]whole image[/b]", t["device"], "", "", "", span(t.get("per_image_range_ms"), ".0f"), "",
                      f"{t['per_image_ms']:.1f}", "", "")
    console = Console(width=max(Console().width, 140))
    console.print(table)
    from fusionc.analysis.graph_stats import unknown_shapes_warning

    warning = unknown_shapes_warning(result.get("unknown_shape_ops") or {})
    if warning:
        console.print(warning, markup=False, highlight=False)
    from fusionc.analysis.costmodel import extrapolation_lines

    for line in extrapolation_lines(result["estimates"]):
        console.print(line, markup=False, highlight=False)
    cached = result.get("graph_cache") or {}
    if any(state != "off" for state in cached.values()):
        hits = [name for name, state in cached.items() if state == "hit"]
        console.print(f"graph statistics: {len(hits)} of {len(cached)} read from the cache"
                      + (f" ({', '.join(hits)})" if hits else "; stored for the next estimate"))


def run_estimate_cli(source: Path | None, components: str | None, devices: tuple[str, ...], precision: str | None,
                     palettize: float | None, height: int | None, width: int | None, steps: int, guidance: bool,
                     json_path: Path | None, cache: Path | None = None,
                     qnn_runtime: str | None = None) -> dict[str, Any]:
    from fusionc.buildfs import check_output_files

    check_output_files(("--json", json_path))
    names = [c.strip() for c in components.split(",") if c.strip()] if components else None
    if cache is not None and exports_nothing(source):
        raise BadInputError(f"--cache keeps a checkpoint's graph statistics, and '{source}' is read as it is (nothing "
                            "exported): drop --cache, or estimate the checkpoint")
    cache = cache_root(cache)
    result = estimate(source, names, list(devices) or None, precision, palettize, height, width, steps, guidance,
                      cache, qnn_runtime)
    print_estimates(result)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result
