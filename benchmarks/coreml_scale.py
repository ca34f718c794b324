"""Core ML at SD-1.5 scale: fusionc's ONNX -> MIL compile of the UNet against coremltools' own conversion.

Random weights, public config (compiler/models/reference.py). Three parts, each in its own process so peak
RSS is per part, all in one run:
  fusionc   load UNet -> torch.onnx.export -> coreml pass pipeline (split_einsum) -> lowering -> .mlpackage
            (one package, fp16, iOS17; verification excluded)
  peer      load UNet -> torch.export.export -> ct.convert(fp16, iOS17, default passes) -> .mlpackage
  fusionc_ct_default  (optional) fusionc with ct.convert's default pass pipeline instead of the minimal one
  executor  MIL executor: load fusionc's .mlpackage, run one UNet step (batch 2, the Swift contract), and the
            same step in fp32 torch (PSNR of the fp16 ANE-form program at SD scale)
  chunked   (optional) --chunk auto for the 1 GB iPhone limit: chunk sizes, crossing tensors, chunks run in
            sequence against the single package
Both compiles start from the same diffusers folder and the same example inputs (batch 2, 64x64 latents,
77 tokens). Writes benchmarks/results/coreml_scale.json. Heavy: run as

    flock /tmp/fusionc-heavy.lock nice -n 10 python benchmarks/coreml_scale.py [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
BATCH, TOKENS = 2, 77


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _unet_and_inputs(checkpoint: Path) -> tuple[Any, dict[str, Any]]:
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(checkpoint / "unet").eval()
    cfg = unet.config
    gen = torch.Generator().manual_seed(0)
    example = {
        "sample": torch.randn(BATCH, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(BATCH, TOKENS, cfg.cross_attention_dim, generator=gen),
    }
    return unet, example


def part_fusionc(checkpoint: Path, out: Path, attention: str, ct_passes: str = "minimal",
                 chunk: str = "none") -> dict[str, Any]:
    import torch

    from fusionc.export import ComponentSpec, UNetWrapper, export_component
    from fusionc.core.options import CompileOptions
    from fusionc.pipeline import run_passes
    from fusionc.targets import get_target
    from fusionc.targets.base import ComponentContext

    stages: dict[str, float] = {}
    start = time.perf_counter()
    unet, example = _unet_and_inputs(checkpoint)
    stages["load"] = time.perf_counter() - start
    spec = ComponentSpec("unet", UNetWrapper(unet).eval(), example, ["out_sample"])
    t = time.perf_counter()
    with torch.no_grad():
        model = export_component(spec)
    stages["export"] = time.perf_counter() - t
    options = CompileOptions(target="coreml", attention=attention, chunk=chunk, deployment_target="iOS17",
                             coreml_ct_passes=ct_passes or "minimal")
    target = get_target("coreml")
    t = time.perf_counter()
    records = run_passes(model, target.pipeline(options), ComponentContext.for_options(options))
    stages["passes"] = time.perf_counter() - t
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ctx = ComponentContext("unet", options, out / "work", [])
    t = time.perf_counter()
    lowered = target.lower(model, out, ctx)
    stages["lower_and_package"] = time.perf_counter() - t
    package = out / lowered.files[0]
    (out / "lowered.json").write_text(json.dumps(lowered.extra["coreml"]))
    return {"stages_s": {k: round(v, 1) for k, v in stages.items()}, "wall_s": round(time.perf_counter() - start, 1),
            "peak_rss_bytes": _peak_rss(), "mlpackage_bytes": _bytes(package), "package": str(package),
            "lowering_s": lowered.extra["coreml"]["seconds"], "mil_ops": sum(lowered.extra["coreml"]["mil_ops"].values()),
            "passes_s": {r.name: round(r.seconds, 2) for r in records}}


def part_peer(checkpoint: Path, out: Path) -> dict[str, Any]:
    import coremltools as ct
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self, unet: torch.nn.Module) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    stages: dict[str, float] = {}
    start = time.perf_counter()
    unet, example = _unet_and_inputs(checkpoint)
    stages["load"] = time.perf_counter() - start
    t = time.perf_counter()
    with torch.no_grad():
        exported = torch.export.export(Wrapper(unet).eval(), tuple(example.values()))
    exported = exported.run_decompositions({})
    stages["torch_export"] = time.perf_counter() - t
    t = time.perf_counter()
    model = ct.convert(exported, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                       compute_precision=ct.precision.FLOAT16, skip_model_load=True)
    stages["ct_convert"] = time.perf_counter() - t
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    model.save(str(out))
    stages["save"] = time.perf_counter() - t
    return {"stages_s": {k: round(v, 1) for k, v in stages.items()}, "wall_s": round(time.perf_counter() - start, 1),
            "peak_rss_bytes": _peak_rss(), "mlpackage_bytes": _bytes(out), "package": str(out)}


def _step_feeds(inputs: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Seeded artifact feeds (Apple's layout: encoder_hidden_states [B,C,1,S], timestep [B])."""
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in sorted(inputs.items())}
    feeds["timestep"] = np.full(inputs["timestep"], 500.0, np.float32)
    return feeds


def part_executor(package: Path, repeats: int, checkpoint: Path, work: Path) -> dict[str, Any]:
    """One UNet step in the MIL executor (timed), then the same step in fp32 torch for the PSNR at scale."""
    import gc

    import numpy as np
    import torch

    from fusionc.targets.coreml.executor import MILExecutor
    from fusionc.targets.coreml.executor.engine import OpProfile

    t = time.perf_counter()
    executor = MILExecutor.from_mlpackage(package)
    load_s = time.perf_counter() - t
    feeds = _step_feeds({n: tuple(v.shape) for n, v in executor.function.inputs.items()})
    times = []
    executor.profile = OpProfile()
    for _ in range(repeats):
        t = time.perf_counter()
        out = executor(feeds)["noise_pred"]
        times.append(time.perf_counter() - t)
    top = sorted(executor.profile.seconds.items(), key=lambda kv: -kv[1])[:8]
    np.save(work / "executor_noise_pred.npy", out)
    del executor
    gc.collect()
    unet, _ = _unet_and_inputs(checkpoint)
    ehs = feeds["encoder_hidden_states"][:, :, 0, :].transpose(0, 2, 1)
    with torch.no_grad():
        ref = unet(torch.from_numpy(feeds["sample"]), torch.from_numpy(feeds["timestep"]),
                   torch.from_numpy(np.ascontiguousarray(ehs)), return_dict=False)[0].numpy()
    rmse = float(np.sqrt(np.mean((ref.astype(np.float64) - out) ** 2)))
    return {"load_s": round(load_s, 1), "step_s": [round(x, 1) for x in times],
            "step_median_s": round(float(np.median(times)), 1), "batch": BATCH,
            "outputs_finite": bool(np.isfinite(out).all()),
            "psnr_vs_torch_fp32_db": round(20 * float(np.log10(np.abs(ref).max() / rmse)), 2),
            "seconds_by_op": {k: round(v / repeats, 2) for k, v in top}, "peak_rss_bytes": _peak_rss()}


def part_chunked(checkpoint: Path, out: Path, attention: str, work: Path) -> dict[str, Any]:
    """--chunk auto on the iPhone profile (1 GB per model): chunk sizes, crossing tensors, and the chunks run in
    sequence against the single package's output (the executor part's)."""
    import numpy as np

    from fusionc.targets.coreml.runner import CoreMLRunner

    compiled = part_fusionc(checkpoint, out, attention, chunk="auto")
    manifest = json.loads((out / "lowered.json").read_text())
    packages = [out / p for p in manifest["packages"]]
    runner = CoreMLRunner(packages, {}, ["noise_pred"])
    inputs = {n: s for part in runner.parts for n, s in part.inputs.items() if n in ("sample", "timestep", "encoder_hidden_states")}
    feeds = _step_feeds(inputs)
    t = time.perf_counter()
    env = dict(feeds)
    for part in runner.parts:
        env.update(part(env))
    step_s = time.perf_counter() - t
    reference = work / "executor_noise_pred.npy"
    same = None
    if reference.exists():
        same = float(np.abs(np.load(reference) - env["noise_pred"]).max())
    crossing = [n for part in runner.parts[1:] for n in part.inputs if n not in inputs]
    return {**compiled, "chunk_bytes": [_bytes(p) for p in packages], "crossing_tensors": len(crossing),
            "chunks_step_s": round(step_s, 1), "max_abs_diff_vs_single_package": same, "peak_rss_bytes": _peak_rss()}


def run_part(args: argparse.Namespace, part: str, *extra: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--part", part, "--work", str(args.work), "--attention", args.attention,
               "--repeats", str(args.repeats), *extra]
    print(f"[coreml_scale] {part} ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = [x for x in done.stderr.splitlines() if "Failed to load" not in x][-25:]
        raise SystemExit(f"[coreml_scale] {part} failed ({done.returncode}):\n" + "\n".join(tail))
    line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
    result = json.loads(line)
    print(f"[coreml_scale] {part}: {json.dumps(result)[:300]}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--attention", default="split_einsum")
    parser.add_argument("--parts", default="fusionc,peer,executor")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    checkpoint = args.work / "sd15"
    fusionc_out, peer_out = args.work / "coreml_scale_fusionc", args.work / "coreml_scale_peer" / "Unet.mlpackage"
    if args.part:
        _quiet()
        if args.part == "fusionc":
            result = part_fusionc(checkpoint, fusionc_out, args.attention)
        elif args.part == "fusionc_ct_default":  # the same, with coremltools' default pass pipeline in ct.convert
            result = part_fusionc(checkpoint, args.work / "coreml_scale_fusionc_ctdefault", args.attention, "default")
        elif args.part == "peer":
            result = part_peer(checkpoint, peer_out)
        elif args.part == "chunked":
            result = part_chunked(checkpoint, args.work / "coreml_scale_chunked", args.attention, args.work)
        else:
            result = part_executor(fusionc_out / "unet" / "Unet.mlpackage", args.repeats, checkpoint, args.work)
        print(json.dumps(result))
        return
    if not (checkpoint / "model_index.json").exists():
        from fusionc.models.reference import write_reference_pipeline

        write_reference_pipeline(checkpoint, "sd15")
    parts = args.parts.split(",")
    path = RESULTS / "coreml_scale.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    # parts not run now keep their last figures (the fusionc/peer pair is always measured in one run together)
    results: dict[str, Any] = {k: previous[k] for k in ("fusionc", "peer", "executor", "fusionc_ct_default", "chunked")
                               if k in previous and k not in parts}
    for part in parts:
        results[part] = run_part(args, part)
    import coremltools as ct
    import torch

    summary = {}
    if "fusionc" in results and "peer" in results:
        f, p = results["fusionc"], results["peer"]
        summary = {"wall_ratio_fusionc_over_peer": round(f["wall_s"] / p["wall_s"], 2),
                   "peak_rss_ratio_fusionc_over_peer": round(f["peak_rss_bytes"] / p["peak_rss_bytes"], 2),
                   "bytes_ratio_fusionc_over_peer": round(f["mlpackage_bytes"] / p["mlpackage_bytes"], 3)}
    record = {
        "benchmark": "coreml_scale",
        "model": "SD-1.5-shaped UNet2DConditionModel, random weights (compiler/models/reference.py), "
                 f"batch {BATCH}, 64x64 latents, {TOKENS} tokens",
        "fusionc": f"torch.onnx.export -> passes ({args.attention}) -> ONNX->MIL lowering -> ct.convert(minimal passes), fp16, iOS17, one package",
        "peer": "ct.convert(torch.export.export(unet)), fp16 compute precision, iOS17, default pass pipeline",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "coremltools": ct.__version__, "system": platform.system()},
        "verification": "excluded",
        **results, "summary": summary,
    }
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
