"""Backend comparison: the built-in model measured and estimated, SD-1.5- and SnapFusion-shaped pipelines estimated.

Writes benchmarks/results/backends.json (everything) and benchmarks/results/backends.png (stacked per-component
end-to-end latency per backend and device). Steps:
1. the built-in tiny_sd pipeline: an onnx build (`fusionc compile`, or a plain export when the compile driver is
   unavailable), then `fusionc.bench.bench` on it (ORT CPU measured here + cost-model estimates per device);
2. real-scale reference components with random weights (benchmarks/reference_models.py), exported once to ONNX
   (dynamo, external data) under --cache; their per-op statistics are stored in
   benchmarks/results/reference_graphs.json.gz, the cost model is recalibrated on them (--calibrate prints the fitted
   parameters to paste into compiler/analysis/costmodel.py) and its error on every published figure is reported;
3. for the SD-1.5 and SnapFusion UNets, one UNet call measured on onnxruntime CPU here (median of --runs);
4. end-to-end budgets: text encoder x2 (guidance) + steps x UNet (batch 2) + VAE decoder, per device.

Heavy: run as `flock /tmp/fusionc-heavy.lock nice -n 10 python benchmarks/backends.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference_models  # noqa: E402

from fusionc.analysis import costmodel  # noqa: E402
from fusionc.bench import Figure, bench, budget_rows, plot, time_calls  # noqa: E402
from fusionc.core.devices import DEVICES  # noqa: E402
from fusionc.analysis.graph_stats import graph_stats  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PIPELINES = {  # name -> component -> reference graph
    "sd15": {"text_encoder": "clip_text_encoder", "unet": "sd15_unet", "vae_decoder": "sd_vae_decoder"},
    "snapfusion": {"text_encoder": "clip_text_encoder", "unet": "snapfusion_unet",
                   "vae_decoder": "snapfusion_vae_decoder"},
}


def builtin_build(out: Path) -> Path:
    """An onnx build of the built-in pipeline: `fusionc compile` when it works, else the plain export."""
    from fusionc.models import BUILTIN_CHECKPOINT
    from fusionc.core.options import CompileOptions

    try:
        from fusionc.pipeline import compile_checkpoint

        compile_checkpoint(None, CompileOptions(target="onnx", verify=False,
                                                components=("text_encoder", "unet", "vae_decoder")), out)
        return out
    except ImportError as err:
        print(f"fusionc compile unavailable ({err}); exporting the built-in model without passes", file=sys.stderr)
    from fusionc.checkpoint import load_checkpoint
    from fusionc.export import component_spec, export_component
    from fusionc.targets.onnx import interface, save_model

    ckpt, options = load_checkpoint(BUILTIN_CHECKPOINT), CompileOptions(target="onnx")
    manifest = {"fusionc_version": "bench", "target": "onnx", "device": None, "components": {}, "passes": [],
                "note": "plain export, no pass pipeline"}
    for name in ("text_encoder", "unet", "vae_decoder"):
        model = export_component(component_spec(ckpt, name, options), options.opset)
        files = save_model(model, out / name / "model.onnx")
        manifest["components"][name] = {"files": [str(f.relative_to(out)) for f in files], "bytes": 0,
                                        "inputs": interface(model.graph.inputs),
                                        "outputs": interface(model.graph.outputs)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def reference_stats(cache: Path) -> dict:
    """Export (cached) every reference component and compute its statistics at batch 1 and 2."""
    stats = {}
    for name in reference_models.REFERENCE_COMPONENTS:
        path = reference_models.export(name, cache)
        for batch in (1, 2):
            stats[f"{name}@b{batch}"] = graph_stats(path, {"batch": batch})
    return stats


def measure_unet_cpu(cache: Path, name: str, runs: int) -> dict:
    """One batch-1 call of a reference UNet on onnxruntime CPU (all cores here), median of `runs` after 1 warm-up."""
    import numpy as np
    import onnxruntime as ort

    path = cache / name / "model.onnx"
    start = time.time()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    load_s = time.time() - start
    cross = 1024 if name == "sd21base_unet" else 768
    rng = np.random.default_rng(0)
    feeds = {"sample": rng.standard_normal((1, 4, 64, 64), dtype=np.float32),
             "timestep": np.array([500.0], dtype=np.float32),
             "encoder_hidden_states": rng.standard_normal((1, 77, cross), dtype=np.float32)}
    median, spread, done = time_calls(lambda: session.run(None, feeds), runs, warmup=1, max_seconds=600)
    return {"median_ms": median, "spread_ms": spread, "runs": done, "session_load_s": load_s,
            "threads": ort.SessionOptions().intra_op_num_threads}


def pipeline_figures(stats: dict, steps: int, guidance: bool) -> list[dict]:
    """Estimated per-component figures of each reference pipeline on every device (fp16 ANE, W8A16 HTP). Hexagon
    runs a static batch-1 graph (a guided UNet step is two calls), estimated on the graph a QNN build sees where
    latency_graphs.py stored it (SD-1.5), else on the plain export."""
    qnn_stats = costmodel.load_qnn_reference_stats()
    rows = []
    for pipe, components in PIPELINES.items():
        for component, graph in components.items():
            guided_unet = guidance and component == "unet"
            for device in DEVICES.values():
                htp = device.family == "htp"
                batch = 2 if guided_unet and not htp else 1
                key = f"{graph}@b{batch}"
                seen = qnn_stats.get(key, stats[key]) if htp else stats[key]
                est = costmodel.estimate(seen, device)
                rows.append({"pipeline": pipe, "figure": Figure(
                    component, costmodel.backend_of(device), device.name, "estimated", batch, est.latency_s * 1000,
                    calls=2 if guided_unet and htp else 1,
                    detail={"precision": est.precision, "bound": est.bound, "graph": graph,
                            "graph_seen": "QNN pipeline" if htp and key in qnn_stats else "plain export",
                            "range_ms": [v * 1000 for v in est.range_s] if est.range_s else None})})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fusionc-ref"), help="reference ONNX exports")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--budget", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each big UNet on the CPU")
    parser.add_argument("--calibrate", action="store_true", help="refit the cost model and print the parameters")
    parser.add_argument("--skip-cpu", action="store_true", help="do not time the big UNets on the CPU")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)

    stats = reference_stats(args.cache)
    costmodel.save_reference_stats(stats)
    params = costmodel.FAMILY_PARAMS
    if args.calibrate:
        params = costmodel.calibrate(stats)
        print("fitted FAMILY_PARAMS:", {k: v.to_json() for k, v in params.items()})

    with tempfile.TemporaryDirectory() as tmp:
        build = builtin_build(Path(tmp) / "tiny_sd_onnx")
        result = bench([build], steps=args.steps, guidance=True, budget_s=args.budget, runs=10, warmup=2)
    result["builds"][0]["path"] = "tiny_sd (built-in, onnx)"
    for row in result["budgets"]:
        row["build"] = "tiny_sd"

    result["reference_graphs"] = {k: {kk: v for kk, v in s.summary().items() if kk not in ("by_op_type",)}
                                  for k, s in stats.items()}
    result["cost_model"]["calibration"] = costmodel.calibration_report(stats, params)
    result["cost_model"]["params"] = {k: v.to_json() for k, v in params.items()}
    pipeline_rows = pipeline_figures(stats, args.steps, guidance=True)
    result["reference_pipelines"] = {pipe: [r["figure"].__dict__ for r in pipeline_rows if r["pipeline"] == pipe]
                                     for pipe in PIPELINES}
    for pipe in PIPELINES:
        figures = [r["figure"] for r in pipeline_rows if r["pipeline"] == pipe]
        result["budgets"] += budget_rows(pipe, figures, args.steps, True, args.budget)
    if not args.skip_cpu:
        result["reference_cpu"] = {name: measure_unet_cpu(args.cache, name, args.runs)
                                   for name in ("snapfusion_unet", "sd15_unet")}
    elif (RESULTS / "backends.json").exists():  # kept from the run that measured them, and said so
        previous = json.loads((RESULTS / "backends.json").read_text())
        if "reference_cpu" in previous:
            result["reference_cpu"] = previous["reference_cpu"]
            result["reference_cpu_measured"] = previous.get("reference_cpu_measured") or previous.get("created")
    (RESULTS / "backends.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    plot(result, RESULTS / "backends.png")
    print_summary(result)


def print_summary(result: dict) -> None:
    print("\ncost model vs published figures (C calibrated on, H held out):")
    for r in result["cost_model"]["calibration"]:
        print(f"  {r['role']} {r['device']:20s} {r['graph']:24s} b{r['batch']} published {r['latency_ms']:8.1f} ms"
              f"  estimate {r['estimate_ms']:8.1f} ms  error {r['error']:+.0%}")
    print("\nend to end (text encoder x2 + steps x UNet + VAE decoder):")
    for row in result["budgets"]:
        print(f"  {row['build']:10s} {row['backend']:12s} {row['device']:20s} {row['kind']:9s} "
              f"{row['total_ms']:9.0f} ms  {row['advice']}")
    for name, cpu in result.get("reference_cpu", {}).items():
        print(f"  {name}: one batch-1 call on onnxruntime CPU here {cpu['median_ms']:.0f} ms "
              f"(spread {cpu['spread_ms']:.0f}, {cpu['runs']} runs)")


if __name__ == "__main__":
    main()
