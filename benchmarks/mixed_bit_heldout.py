"""Why does a mixed-bit recipe lose images that uniform palettization of similar UNet PSNR keeps?

For builds of the built-in model (default: uniform 4-bit and mixed-bit auto:35; the onnx target, whose
compressed UNet is the same ONNX graph the Core ML target lowers, so the same search finds the same recipe
at 1/20 of the cost of running the MIL executor), on held-out prompts and seeds (benchmarks/prompt_check.py's:
none in training's check set or in any compile's input sets):

- closed loop: the image each build generates, judged (colour, shape, position) and compared with torch's;
- open loop: along torch's own trajectory of each prompt, the UNet's output PSNR per guidance row (what a
  compile's `psnr_db` and the search measure) and the PSNR of the *guided* prediction uncond + g (cond -
  uncond) that the sampler actually steps with, per step;
- per prompt, so the prompts that fail can be named.

    python benchmarks/mixed_bit_heldout.py --n 12                          # builds into benchmarks/work/mixed_bit
    python benchmarks/mixed_bit_heldout.py --recipes palettize_4,mixed_35db,mixed_35db_guided

Writes benchmarks/results/mixed_bit_heldout.json (provenance: git revision, checkpoint sha256, load).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fusionc.core.numerics import psnr
from fusionc.generate import DEFAULT_GUIDANCE, build_runners, image_psnr, run, torch_runners
from fusionc.models import BUILTIN_CHECKPOINT
from fusionc.models.shapes_check import check
from fusionc.trajectory import denoise

from prompt_check import SEED_BASE, heldout_prompts

RESULTS = Path(__file__).parent / "results"
RECIPES: dict[str, dict] = {
    "palettize_4": {"target": "onnx", "palettize": "4"},
    "mixed_35db": {"target": "onnx", "palettize": "auto:35"},
    # the same options, built by the search that judges recipes on the guided prediction too (build it after
    # that change; the stamp keeps each name's build)
    "mixed_35db_guided": {"target": "onnx", "palettize": "auto:35"},
}


def build(name: str, work: Path) -> tuple[Path, dict]:
    from fusionc.core.options import CompileOptions
    from fusionc.gates import GateFailedError
    from fusionc.pipeline import compile_checkpoint

    out = work / name
    stamp = work / f"{name}.recipe.json"
    if not ((out / "manifest.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == RECIPES[name]):
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        options = CompileOptions(components=("text_encoder", "unet", "vae_decoder"), **RECIPES[name])
        try:
            compile_checkpoint(BUILTIN_CHECKPOINT, options, out, cache_dir=work / "cache")
        except GateFailedError:
            pass
        stamp.write_text(json.dumps(RECIPES[name]))
    return out, json.loads((out / "manifest.json").read_text())


def torch_unet_inputs(rs, prompt: str, seed: int, steps: int, guidance: float) -> list[dict]:
    """The UNet's inputs at every step of torch's own trajectory (batch 2: uncond, cond)."""
    got: list[dict] = []
    denoise(rs.runners, {"tokenizer": rs.tokenizer}, __import__("copy").deepcopy(rs.scheduler), prompt, steps=steps,
            seed=seed, guidance=guidance, latent_shape=(rs.latent_channels, rs.height // 8, rs.width // 8),
            scaling_factor=rs.scaling_factor, text_length=rs.text_length,
            record=lambda name, feeds: got.append(dict(feeds)) if name == "unet" else None, decode=False)
    return got


def open_loop(unet_ref, unet_test, feeds_list: list[dict], guidance: float) -> dict:
    """Per step: PSNR of each guidance row and of the guided prediction, test against reference."""
    rows, guided = [], []
    for feeds in feeds_list:
        ref, got = unet_ref(feeds)["out_sample"], unet_test(feeds)["out_sample"]
        rows.append([round(psnr(ref[i], got[i]), 2) for i in range(ref.shape[0])])
        g_ref = ref[:1] + guidance * (ref[1:] - ref[:1])
        g_got = got[:1] + guidance * (got[1:] - got[:1])
        guided.append(round(psnr(g_ref, g_got), 2))
    return {"row_psnr_db": rows, "guided_psnr_db": guided}


def main() -> None:
    from provenance import Provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "work" / "mixed_bit")
    parser.add_argument("--json", type=Path, default=RESULTS / "mixed_bit_heldout.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared machine: spinning threads burn CPU others need
    prov = Provenance.start()
    prompts = heldout_prompts(args.n)
    ref = torch_runners(BUILTIN_CHECKPOINT)
    trajectories = [torch_unet_inputs(ref, p, SEED_BASE + i, args.steps, args.guidance) for i, p in enumerate(prompts)]
    torch_images = [run(p, ref, args.steps, SEED_BASE + i, args.guidance)[0] for i, p in enumerate(prompts)]
    result: dict = {"n": args.n, "steps": args.steps, "guidance": args.guidance, "seeds": f"{SEED_BASE} + i",
                    "prompts": prompts, "torch": [check(p, im)["ok"] for p, im in zip(prompts, torch_images)],
                    "recipes": {}}
    for name in [r for r in args.recipes.split(",") if r]:
        started = time.time()
        out, manifest = build(name, args.work)
        unet = manifest["components"]["unet"]
        pal = (unet.get("compression") or {}).get("palettize") or {}
        rs = build_runners(out)
        per_prompt = []
        for i, prompt in enumerate(prompts):
            image, _ = run(prompt, rs, args.steps, SEED_BASE + i, args.guidance)
            loop = open_loop(ref.runners["unet"], rs.runners["unet"], trajectories[i], args.guidance)
            per_prompt.append({"prompt": prompt, "seed": SEED_BASE + i, **check(prompt, image),
                               "image_psnr_db": round(image_psnr(torch_images[i], image), 2), **loop})
        rows = [x for p in per_prompt for r in p["row_psnr_db"] for x in r]
        guided = [x for p in per_prompt for x in p["guided_psnr_db"]]
        by_step = [round(statistics.median(p["guided_psnr_db"][s] for p in per_prompt), 2) for s in range(args.steps)]
        result["recipes"][name] = {
            "options": RECIPES[name], "unet_average_bits": pal.get("average_bits"),
            "search_selection_psnr_db": pal.get("measured_psnr_db"), "search_rounds": (pal.get("search") or {}).get("rounds"),
            "manifest_psnr_db": unet.get("psnr_db"), "manifest_psnr_db_calibration": unet.get("psnr_db_calibration"),
            "agreement": round(sum(p["ok"] for p in per_prompt) / len(per_prompt), 3),
            "image_psnr_db_median": round(statistics.median(p["image_psnr_db"] for p in per_prompt), 2),
            "image_psnr_db_min": round(min(p["image_psnr_db"] for p in per_prompt), 2),
            "row_psnr_db_median": round(statistics.median(rows), 2), "row_psnr_db_min": round(min(rows), 2),
            "guided_psnr_db_median": round(statistics.median(guided), 2), "guided_psnr_db_min": round(min(guided), 2),
            "guided_psnr_db_median_by_step": by_step, "failed_prompts": [p["prompt"] for p in per_prompt if not p["ok"]],
            "seconds": round(time.time() - started, 1), "prompts": per_prompt}
        r = result["recipes"][name]
        print(f"{name}: {r['unet_average_bits']} bits, agreement {r['agreement']:.0%}, image {r['image_psnr_db_median']}"
              f"/{r['image_psnr_db_min']} dB, UNet row {r['row_psnr_db_median']}/{r['row_psnr_db_min']}, guided "
              f"{r['guided_psnr_db_median']}/{r['guided_psnr_db_min']} by step {by_step}; failed {r['failed_prompts']}",
              flush=True)
        args.json.write_text(json.dumps({**result, "provenance": prov.finish()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
