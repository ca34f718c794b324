"""The graphs `fusionc estimate` and `fusionc bench` cost: a checkpoint's components exported from its structure
through the passes a build runs (`checkpoint_graphs`, kept in fusionc.estimate_cache), and an onnx build's components
as an NPU target compiles them (`npu_graphs`). One module below both commands, so each reads the same graphs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from fusionc.core.errors import BadInputError
from fusionc.core.generation import PIPELINE_ORDER
from fusionc.core.store import cache_root


def checkpoint_graphs(path: Path | None, components: list[str] | None, height: int | None, width: int | None,
                      cache_dir: Path | None = None) -> dict[str, Any]:
    """component -> {"generic": stats at batch 1 and 2, "qnn": stats of the QNN pipeline graph, "cache": hit | miss
    | off} (`cache_dir`: fusionc.estimate_cache). The modules are built only when a component misses the cache."""
    from fusionc.checkpoint import component_names_of, structure_folders
    from fusionc.core.options import CompileOptions
    from fusionc.estimate_cache import StatsCache

    folder, model_folders = structure_folders(path)
    available = component_names_of(model_folders)
    wanted = components or [c for c in available if c in PIPELINE_ORDER]
    missing = [c for c in wanted if c not in available]
    if missing:
        raise BadInputError(f"--components {','.join(missing)}: not in {folder} (it has {', '.join(available)})")
    options = CompileOptions(target="qnn", height=height, width=width)
    cache = StatsCache(cache_dir) if cache_dir is not None else None
    keys = cache.keys(folder, wanted, options) if cache else {}
    out = {}
    for name in wanted:
        cached = cache.load(keys[name]) if cache else None
        if cached is not None:
            out[name] = dict(cached, cache="hit")
    todo = [name for name in wanted if name not in out]
    if todo:
        built = export_stats(folder, todo, options)
        for name, entry in built.items():
            if cache:
                cache.store(keys[name], entry, name)
            out[name] = dict(entry, cache="miss" if cache else "off")
    return {name: out[name] for name in wanted}


def export_stats(folder: Path, names: list[str], options: Any) -> dict[str, Any]:
    """Graph statistics of `names`, exported from the checkpoint's structure (meta device) through the passes a
    QNN build runs: {"generic": {batch: stats}, "qnn": stats} per component."""
    from fusionc.analysis.graph_stats import graph_stats
    from fusionc.checkpoint import load_structure
    from fusionc.core.context import ComponentContext
    from fusionc.export import component_spec, export_structure
    from fusionc.passes.generic import default_pipeline
    from fusionc.pipeline import run_passes
    from fusionc.targets import get_target

    # onnx_ir's shape inference cannot type the fused units' bodies; it leaves those graphs unchanged and logs a
    # traceback per node: a normal outcome here, not something to show
    logging.getLogger("onnx_ir.passes.common.shape_inference").setLevel(logging.CRITICAL)
    checkpoint = load_structure(folder)
    generic = default_pipeline()
    qnn_rest = get_target("qnn").pipeline(options)[len(generic):]
    out = {}
    for name in names:
        # traced at batch 2 as a compile traces it: a batch-1 trace specializes size-1 dims (torch.export's 0/1
        # specialization), and SD3's transformer traced so reshapes to the wrong shape at batch 2
        spec = component_spec(checkpoint, name, options)
        spec.example = {k: v.to("meta") for k, v in spec.example.items()}
        model = export_structure(spec, options.opset)
        ctx = ComponentContext.for_options(options, name)
        run_passes(model, generic, ctx)
        entry = {"generic": {b: graph_stats(model, {"batch": b}) for b in (1, 2)}}
        run_passes(model, qnn_rest, ctx)
        entry["qnn"] = graph_stats(model, {"batch": 1})
        out[name] = entry
    return out


def npu_graphs(build: Path, manifest: dict[str, Any], names: list[str],
               cache: Path | None = None) -> dict[str, Any] | None:
    """An onnx build's components as a QNN or Core ML build compiles them, for its estimates on those targets' devices
    (`fusionc estimate`'s graphs: component -> {"generic": {batch: stats}, "qnn": stats}), or None, said on stderr,
    when its checkpoint is gone or no longer exports. Its own graph has ONNX Runtime's fused attention, which keeps
    the score tensor inside one kernel where the NPU targets' graphs materialize it (and at SD-1.5's size spill it
    from local memory: the onnx build's graph put its UNet at about a third of a QNN build's estimate on the 8 Gen
    3). Exported from the checkpoint's structure as `fusionc estimate` exports it (a minute for SDXL's UNet; kept in
    `cache`, else under $FUSIONC_CACHE when set)."""
    from fusionc.checkpoint import recorded_checkpoint

    recorded = manifest.get("checkpoint") or {}
    checkpoint = recorded_checkpoint(recorded)
    why = None if recorded.get("path") and checkpoint.is_dir() else f"its checkpoint {checkpoint} is gone"
    if why is None:
        options = manifest.get("options") or {}
        cache = cache_root(cache)
        try:
            return checkpoint_graphs(checkpoint, names, options.get("height"), options.get("width"), cache)
        except BadInputError as err:  # the checkpoint was changed since the build: say so, estimate what is here
            why = f"its checkpoint cannot be exported ({err})"
    print(f"fusionc: {build}: {why}: its Hexagon and Apple estimates are of the build's own graph (ONNX Runtime's "
          "fused attention), not the graph those targets compile", file=sys.stderr)
    return None
