"""Compression: UNet size and fidelity per method on the built-in model, and mixed-bit search time at SD-1.5 scale.

table (default): compiles the built-in checkpoint (or CHECKPOINT) once per method -- fp16 (no compression),
  palettized 8/6/4 bits, int8 per channel, int4 block-wise (32), mixed-bit at 40/35/30 dB -- for the Core ML
  target (UNet verified through the MIL executor) and reports UNet bytes, UNet PSNR against the fp32 torch
  UNet on the compile's held-out verification set (and on its calibration set; a mixed-bit recipe's PSNR on
  the selection set it was judged on), and the PSNR of generated images against torch on 3 held-out prompts
  and seeds (benchmarks/prompt_check.py's).
      python benchmarks/compression.py table [--checkpoint DIR] [--target coreml]
  -> benchmarks/results/compression.json

sd15-mixed: the mixed-bit search (`--palettize auto:DB`) on an SD-1.5-shaped UNet with random weights
  (diffusers init, seed 0): ONNX export, an 8-step (a compile's `mixed_bit_steps`) DPM-Solver++ trajectory of
  the torch UNet for 2 random "prompts" (random text embeddings) with guidance (batch 2), then
  fusionc.passes.compression.mixed_bit.search; the search's wall time is the figure (the issue's bound: 30 minutes on this CPU).
      flock /tmp/fusionc-heavy.lock nice -n 10 python benchmarks/compression.py sd15-mixed --db 35
  -> benchmarks/results/compression_sd15_mixed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
METHODS: dict[str, dict[str, Any]] = {
    "fp16": {},
    "palettize_8": {"palettize": "8"},
    "palettize_6": {"palettize": "6"},
    "palettize_4": {"palettize": "4"},
    "int8_per_channel": {"quantize_weights": "int8"},
    "int4_block32": {"quantize_weights": "int4", "block_size": 32, "deployment_target": "iOS18"},
    "mixed_40db": {"palettize": "auto:40"},
    "mixed_35db": {"palettize": "auto:35"},
    "mixed_30db": {"palettize": "auto:30"},
}
IMAGE_COUNT = 3  # held-out image prompts (prompt_check.heldout_prompts) at seeds prompt_check.SEED_BASE + i


def image_prompts() -> list[tuple[str, int]]:
    """Prompts and seeds of the image comparison: none is a compile's calibration, selection or verification input."""
    from prompt_check import SEED_BASE, heldout_prompts

    return [(p, SEED_BASE + i) for i, p in enumerate(heldout_prompts(IMAGE_COUNT))]


def table(checkpoint: Path | None, target: str, methods: list[str], steps: int, out: Path) -> dict[str, Any]:
    """One full build (text encoder, VAE decoder: the images' other components), then the UNet per method."""
    import dataclasses

    from fusionc.generate import image_psnr, run, torch_runners
    from fusionc.core.options import CompileOptions
    from fusionc.pipeline import compile_checkpoint
    from fusionc.targets import get_target

    from provenance import Provenance

    prov = Provenance.start(checkpoint)
    prompts = image_prompts()
    reference = torch_runners(checkpoint)
    ref_images = [run(p, reference, steps=steps, seed=seed)[0] for p, seed in prompts]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        compile_checkpoint(checkpoint, CompileOptions(target=target, components=("text_encoder", "vae_decoder"),
                                                      verify=False), base)
        for method in methods:
            settings = dict(METHODS[method])
            options = CompileOptions(target=target, components=("unet",),
                                     deployment_target=settings.pop("deployment_target", "iOS17"), **settings)
            build = Path(tmp) / method
            start = time.perf_counter()
            manifest = compile_checkpoint(checkpoint, options, build)
            seconds = time.perf_counter() - start
            runners = dataclasses.replace(reference, runners=dict(reference.runners))
            base_set = _base_runners(base, target)
            runners.runners.update(base_set)
            runners.runners["unet"] = get_target(target).runner(build, "unet", manifest)
            images = [run(p, runners, steps=steps, seed=seed)[0] for p, seed in prompts]
            unet = manifest["components"]["unet"]
            compression = unet.get("compression", {})
            scores = [image_psnr(r, t) for r, t in zip(ref_images, images)]
            rows[method] = {
                "unet_bytes": unet["bytes"], "unet_psnr_db": unet.get("psnr_db"),  # held-out verification set
                "unet_psnr_db_calibration": unet.get("psnr_db_calibration"),
                "selection_psnr_db": (compression.get("palettize") or {}).get("measured_psnr_db"),  # mixed-bit: judged on
                "verification_steps": manifest["inputs"]["verification"]["steps"],
                "image_psnr_db": [round(x, 3) for x in scores], "image_psnr_db_median": round(float(np.median(scores)), 3),
                "compile_seconds": round(seconds, 1),
                "compression": {k: v for k, v in (compression.get("palettize") or compression.get("quantize_weights")
                                                  or {}).items() if k not in ("recipe",)},
            }
            print(method, json.dumps({k: v for k, v in rows[method].items() if k != "compression"}), flush=True)
            result = {"benchmark": "compression_table", "target": target, "checkpoint": str(checkpoint or "built-in"),
                      "checkpoint_sha256": manifest["checkpoint"]["sha256"], "prompts": [p for p, _ in prompts],
                      "seeds": [seed for _, seed in prompts], "steps": steps, "inputs": manifest["inputs"],
                      "measured_on": {"unet_psnr_db": "verification (held out)",
                                      "unet_psnr_db_calibration": "calibration (mixed-bit sensitivities were probed on it)",
                                      "selection_psnr_db": "selection (the mixed-bit recipe was chosen on it)",
                                      "image_psnr_db": "held-out image prompts and seeds (in no input set of the compile)"},
                      "methods": rows, "host": _host(), "provenance": prov.finish()}
            out.write_text(json.dumps(result, indent=1) + "\n")  # after each method: a crash keeps the rows
    return result


def _base_runners(build: Path, target: str) -> dict[str, Any]:
    from fusionc import buildfs
    from fusionc.targets import get_target

    manifest = buildfs.read_manifest(build)
    return {name: get_target(target).runner(build, name, manifest) for name in ("text_encoder", "vae_decoder")}


def sd15_mixed(db: float, out: Path, budget: float, steps: int) -> dict[str, Any]:
    import torch
    from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel

    from fusionc.export import ComponentSpec, UNetWrapper, export_component
    from fusionc.passes.compression.mixed_bit import Calibration, search
    from palettize_speed import SD15_UNET

    timings: dict[str, float] = {}
    start = time.perf_counter()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    wrapper = UNetWrapper(unet).eval()
    gen = torch.Generator().manual_seed(0)
    example = {"sample": torch.randn(2, 4, 64, 64, generator=gen), "timestep": torch.tensor([500.0]),
               "encoder_hidden_states": torch.randn(2, 77, 768, generator=gen)}
    spec = ComponentSpec("unet", wrapper, example, ["out_sample"])
    model = export_component(spec)
    timings["export_s"] = time.perf_counter() - start

    feeds: list[dict[str, np.ndarray]] = []
    outputs: dict[int, dict[str, np.ndarray]] = {}  # the torch outputs along the trajectory, reused as reference
    t0 = time.perf_counter()
    for prompt in range(2):  # a guided DPM-Solver++ trajectory per random "prompt", as long as a compile's
        rng = np.random.default_rng(prompt)
        text = np.concatenate([np.zeros((1, 77, 768)), rng.standard_normal((1, 77, 768))]).astype(np.float32)
        scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                algorithm_type="dpmsolver++", solver_order=2)
        scheduler.set_timesteps(steps)
        latents = rng.standard_normal((1, 4, 64, 64)).astype(np.float32) * float(scheduler.init_noise_sigma)
        for t in scheduler.timesteps:
            sample = scheduler.scale_model_input(torch.from_numpy(np.concatenate([latents] * 2)), t).numpy()
            f = {"sample": sample.astype(np.float32), "timestep": np.array([float(t)], np.float32),
                 "encoder_hidden_states": text}
            feeds.append(f)
            outputs[id(f)] = spec.reference(f)
            noise = outputs[id(f)]["out_sample"]
            noise = noise[:1] + 7.5 * (noise[1:] - noise[:1])
            latents = scheduler.step(torch.from_numpy(noise), t, torch.from_numpy(latents)).prev_sample.numpy()
    timings["trajectory_s"] = time.perf_counter() - t0

    t0, cpu0 = time.perf_counter(), time.process_time()
    recipe = search(model, Calibration(feeds, lambda f: outputs[id(f)]), db, budget_seconds=budget)
    timings["search_s"] = time.perf_counter() - t0
    timings["search_cpu_s"] = time.process_time() - cpu0  # all threads: the wall time is inflated when shared
    counts: dict[int, int] = {}
    for bits in recipe.layers.values():
        counts[bits] = counts.get(bits, 0) + 1
    result = {"benchmark": "compression_sd15_mixed", "target_db": db, "budget_seconds": budget, "steps": steps,
              "measured_psnr_db": recipe.psnr_db, "average_bits": recipe.average_bits, "layers": len(recipe.layers),
              "layers_per_bits": {str(k): v for k, v in sorted(counts.items())},
              "search": recipe.search, "seconds": {k: round(v, 1) for k, v in timings.items()},
              "trajectory_inputs": len(feeds), "host": _host()}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("search",)}, indent=1))
    return result


def _host() -> dict[str, str]:
    return {"machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    t = sub.add_parser("table")
    t.add_argument("--checkpoint", type=Path, default=None)
    t.add_argument("--target", default="coreml")
    t.add_argument("--methods", default=",".join(METHODS))
    t.add_argument("--steps", type=int, default=8)
    t.add_argument("--out", type=Path, default=RESULTS / "compression.json")
    m = sub.add_parser("sd15-mixed")
    m.add_argument("--db", type=float, default=35.0)
    m.add_argument("--budget", type=float, default=1200.0)
    m.add_argument("--steps", type=int, default=8, help="trajectory steps (a compile's mixed_bit_steps)")
    m.add_argument("--out", type=Path, default=RESULTS / "compression_sd15_mixed.json")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.mode == "sd15-mixed":
        sd15_mixed(args.db, args.out, args.budget, args.steps)
    else:
        args = args if args.mode == "table" else t.parse_args([])
        table(args.checkpoint, args.target, args.methods.split(","), args.steps, args.out)


if __name__ == "__main__":
    main()
