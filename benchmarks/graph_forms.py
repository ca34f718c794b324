"""SD-1.5's UNet estimated from the graph each target compiles, on the devices that target's builds are estimated on.

Why: one cost model, several graph forms of the same UNet. ONNX Runtime's graph (the onnx target) keeps attention
inside com.microsoft::MultiHeadAttention, so no score tensor is materialized and nothing spills; the QNN target's graph
(the form the Hexagon model was fitted on) materializes the per-head scores; the Core ML target's lowered graph splits
attention per head into einsums and turns Linear into 1x1 Conv. `fusionc bench` estimates an onnx build on Hexagon and
Apple profiles from its checkpoint's QNN-form and generic graphs (fusionc.estimate_graphs.npu_graphs) because of the
first gap; a Core ML build is estimated from its lowered graph, `fusionc estimate` from the generic one: the second
gap says how far apart those two are at full size.

The UNet's config (benchmarks/reference_models.SD15_UNET) is written as a config-only folder (estimate_speed.py) and
exported from its structure on the meta device, then run through the generic passes and each target's own passes.

    python benchmarks/graph_forms.py  -> benchmarks/results/graph_forms.json
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results"
# (graph form, the target whose passes make it, batch, device, precision)
FORMS = [
    ("onnx target (ORT fused attention)", "onnx", 1, "snapdragon-8-gen-3", "w8a16"),
    ("qnn target", "qnn", 1, "snapdragon-8-gen-3", "w8a16"),
    ("generic (fusionc estimate, Apple)", None, 2, "iphone-14-pro", "fp16"),
    ("coreml target (lowered)", "coreml", 2, "iphone-14-pro", "fp16"),
]


def main() -> None:
    from estimate_speed import configs, git_rev, write_config_folder

    from fusionc.analysis.costmodel import estimate
    from fusionc.analysis.graph_stats import graph_stats
    from fusionc.checkpoint import load_structure
    from fusionc.core.context import ComponentContext
    from fusionc.core.devices import DEVICES
    from fusionc.core.options import CompileOptions
    from fusionc.export import component_spec, export_structure
    from fusionc.passes.generic import default_pipeline
    from fusionc.pipeline import run_passes
    from fusionc.targets import get_target

    logging.getLogger("onnx_ir.passes.common.shape_inference").setLevel(logging.CRITICAL)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pipeline, config = configs()["sd15"]
        checkpoint = load_structure(write_config_folder(Path(tmp) / "sd15", pipeline, config))
        generic = default_pipeline()
        for form, target, batch, device, precision in FORMS:
            start = time.time()
            options = CompileOptions(target=target or "qnn")
            spec = component_spec(checkpoint, "unet", options)
            spec.example = {k: v.to("meta") for k, v in spec.example.items()}
            model = export_structure(spec, options.opset)
            ctx = ComponentContext.for_options(options, "unet")
            run_passes(model, generic, ctx)
            if target is not None:
                run_passes(model, get_target(target).pipeline(options)[len(generic):], ctx)
            stats = graph_stats(model, {"batch": batch})
            est = estimate(stats, DEVICES[device], precision)
            rows.append({"form": form, "target": target, "device": device, "precision": precision, "batch": batch,
                         "latency_ms": round(est.latency_s * 1000, 1), "bound": est.bound,
                         "attention_form": stats.attention_form, "ops": len(stats.ops),
                         "seconds": round(time.time() - start, 1)})
            print(rows[-1], flush=True)
    out = {"model": "SD-1.5 UNet (benchmarks/reference_models.SD15_UNET), 64x64 latents, config only",
           "git_rev": git_rev(sys.executable), "rows": rows}
    (RESULTS / "graph_forms.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
