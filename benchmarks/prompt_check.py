"""Do the built-in pipeline's images obey their prompts, on every target and compression recipe?

50 seeded prompts at 8 steps (guidance 4), in torch and on a build of each recipe of the built-in model:
onnx; Core ML fp16, palettized 6-bit, 4-bit and mixed-bit (auto:35); QNN w8a16, w8a8 and fp16 (HTP
emulator). The prompts are held out: none is in training's logged check set (check_prompts(20)) nor in a
compile's calibration, selection or verification prompts (fusionc.inputs), and their seeds (10000 + i) are
none of a compile's. Each image is judged by fusionc.models.shapes_check (colour of the shape's pixels, shape
by template IoU, position by centroid; a prompt agrees when all three match) and compared with torch's image
of the same seed (image PSNR). A recipe keeps its promise when its agreement is >= 95% of torch's.

    /work/tools/heavy python benchmarks/prompt_check.py                                   # every recipe
    python benchmarks/prompt_check.py --recipes onnx,qnn_w8a16 --n 10                     # a few, fewer prompts
    /work/tools/heavy python benchmarks/prompt_check.py --redo coreml_mixed_35db          # measure one again
    /work/tools/heavy python benchmarks/prompt_check.py --checkpoint builtin:sd3 --n 30   # the built-in DiT

`--checkpoint builtin:sd3` checks the built-in diffusion transformer (SD3-shaped, flow matching) the same way, on
the recipes its transformer takes (DIT_RECIPES: palettization applies to a UNet unless told otherwise), into
prompt_check_sd3.json / prompt_check_sd3_grid.png and its own --work folder.

Cheap as honest measurement allows: each recipe is built once into --work (benchmarks/work/prompt_check/NAME,
reused by later runs), every recipe's compile shares one cache (the exports and the torch input-set
trajectories are computed once), torch's 50 images are computed once and cached, and recipes already in the
JSON for the same prompts are kept (each records the git revision it was measured at). The JSON
(benchmarks/results/prompt_check.json) is rewritten every 10 prompts (the recipe marked `partial`) and after
each recipe, with per prompt the judgement and the image PSNR against torch, and per build its component PSNRs
on its held-out verification set and on its calibration set; torch's samples go to prompt_check_grid.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from fusionc.checkpoint import BUILTIN_NAMES, checkpoint_sha256
from fusionc.generate import DEFAULT_GUIDANCE, RunnerSet, build_runners, image_psnr, run, torch_runners
from fusionc.models import BUILTIN_CHECKPOINT
from fusionc.models.shapes_check import check
from fusionc.models.shapes_dataset import check_prompts, random_scene

RESULTS = Path(__file__).parent / "results"
SEED_BASE = 10_000  # compiles use --seed + 0.., + 1000.., + 2000.. (fusionc.inputs)
RECIPES: dict[str, dict] = {
    "onnx": {"target": "onnx"},
    "coreml_fp16": {"target": "coreml"},
    "coreml_palettize_6": {"target": "coreml", "palettize": "6"},
    "coreml_palettize_4": {"target": "coreml", "palettize": "4"},
    "coreml_mixed_35db": {"target": "coreml", "palettize": "auto:35"},
    "qnn_w8a16": {"target": "qnn", "precision": "w8a16"},
    "qnn_w8a8": {"target": "qnn", "precision": "w8a8"},
    "qnn_fp16": {"target": "qnn", "precision": "fp16"},
}
DIT_RECIPES = ("qnn_w8a16", "onnx", "coreml_fp16", "qnn_w8a8", "qnn_fp16")  # run order as RUN_ORDER's
RELATIVE_GOAL = 0.95
# the recipes least likely to keep torch's agreement and the never-measured ones first (a run cut short has
# measured what matters most); the slow HTP-emulated ones spread over both workers
RUN_ORDER = ("qnn_w8a8", "coreml_mixed_35db", "coreml_palettize_4", "qnn_w8a16", "onnx", "coreml_fp16",
             "coreml_palettize_6", "qnn_fp16")


def heldout_prompts(n: int, seed: int = 4321) -> list[str]:
    """n distinct captions (plain backgrounds, every colour/shape/position) that are neither in training's check
    set nor in any input set of a compile."""
    from fusionc.inputs import PROMPTS

    excluded = {s.caption for s in check_prompts(20)} | {p for prompts in PROMPTS.values() for p in prompts}
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        caption = random_scene(rng, striped_fraction=0.0).caption
        if caption not in excluded and caption not in out:
            out.append(caption)
    return out


def evaluate(rs: RunnerSet, prompts: list[str], steps: int, guidance: float, reference: list[np.ndarray] | None = None,
             progress: Callable[[list[np.ndarray], dict], None] | None = None,
             every: int = 10) -> tuple[list[np.ndarray], dict]:
    """Generate and judge every prompt (seed SEED_BASE + i). With `reference` (torch's images) each row gets its
    image PSNR. `progress(images, partial_summary)` is called every `every` prompts (incremental JSON)."""
    images, rows, seconds = [], [], []
    for i, prompt in enumerate(prompts):
        seed = SEED_BASE + i
        image, info = run(prompt, rs, steps, seed, guidance)
        images.append(image)
        seconds.append(info["seconds"])
        row = {"seed": seed, **check(prompt, image)}
        if reference is not None:
            row["image_psnr_db"] = round(image_psnr(reference[i], image), 2)
        rows.append(row)
        if progress is not None and (i + 1) % every == 0 and i + 1 < len(prompts):
            progress(images, summarize(rows, seconds))
    return images, summarize(rows, seconds)


def summarize(rows: list[dict], seconds: list[float]) -> dict:
    summary = {key: round(sum(r[f"{key}_ok"] for r in rows) / len(rows), 3) for key in ("colour", "shape", "position")}
    summary = {"accuracy": round(sum(r["ok"] for r in rows) / len(rows), 3), **summary, "measured_prompts": len(rows),
               "median_seconds_per_image": round(statistics.median(seconds), 4)}
    psnrs = [r["image_psnr_db"] for r in rows if "image_psnr_db" in r]
    if psnrs:
        summary.update(image_psnr_db_median=round(statistics.median(psnrs), 2), image_psnr_db_min=round(min(psnrs), 2))
    return {**summary, "prompts": rows}


def grid(images: list[np.ndarray], rows: list[dict], path: Path, columns: int = 10, scale: int = 2) -> None:
    cell, text = images[0].shape[0] * scale, 26
    canvas = Image.new("RGB", (columns * (cell + 4), (len(images) + columns - 1) // columns * (cell + text + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (image, row) in enumerate(zip(images, rows)):
        x, y = i % columns * (cell + 4) + 2, i // columns * (cell + text + 4) + 2
        canvas.paste(Image.fromarray(image).resize((cell, cell), Image.NEAREST), (x, y))
        if not row["ok"]:
            draw.rectangle([x - 2, y - 2, x + cell + 1, y + cell + 1], outline="red", width=2)
        words = row["prompt"].removeprefix("a ").split(" ", 2)
        draw.text((x, y + cell + 1), " ".join(words[:2]), fill="black")
        draw.text((x, y + cell + 13), words[2] if len(words) > 2 else "", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def is_dit(checkpoint: Path) -> bool:
    return (Path(checkpoint) / "transformer").is_dir()


def compile_recipe(name: str, checkpoint: Path, out: Path, cache: Path) -> tuple[dict, float]:
    """Build one recipe into `out` (reused when its manifest is there with the same options: each recipe is
    built once); `cache` is shared by every recipe, so the exports and the torch input-set trajectories are
    computed once for all of them."""
    from fusionc.core.options import CompileOptions
    from fusionc.gates import GateFailedError
    from fusionc.pipeline import compile_checkpoint

    from fusionc.dit_trajectory import required_components

    components = required_components("sd3") if is_dit(checkpoint) else ("text_encoder", "unet", "vae_decoder")
    options = CompileOptions(components=tuple(components), **RECIPES[name])
    stamp = out.parent / f"{out.name}.recipe.json"
    if (out / "manifest.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == RECIPES[name]:
        saved = json.loads(stamp.with_suffix(".seconds").read_text()) if stamp.with_suffix(".seconds").is_file() else None
        return json.loads((out / "manifest.json").read_text()), saved
    if out.exists():
        shutil.rmtree(out)
    start = time.time()
    try:
        manifest = compile_checkpoint(checkpoint, options, out, cache_dir=cache)
    except GateFailedError as err:
        manifest = err.manifest
    seconds = round(time.time() - start, 1)
    stamp.write_text(json.dumps(RECIPES[name]))
    stamp.with_suffix(".seconds").write_text(json.dumps(seconds))
    return manifest, seconds


def torch_reference(checkpoint: Path, prompts: list[str], steps: int, guidance: float, work: Path) -> tuple[list, dict]:
    """torch's images and judgement, cached in `work` (keyed by the checkpoint's hash, prompts, steps, guidance)."""
    key = hashlib.sha256(json.dumps([checkpoint_sha256(checkpoint), prompts, steps, guidance, SEED_BASE]).encode()).hexdigest()[:16]
    cached = work / f"torch_{key}.npz"
    if cached.is_file():
        with np.load(cached) as data:
            return list(data["images"]), json.loads(str(data["summary"]))
    images, summary = evaluate(torch_runners(checkpoint), prompts, steps, guidance)
    work.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cached, images=np.stack(images), summary=json.dumps(summary))
    return images, summary


def measure_recipe(name: str, args: argparse.Namespace, prompts: list[str], images: list[np.ndarray],
                   torch_summary: dict) -> dict:
    """Build (or reuse) one recipe and judge its images; writes WORK/NAME.part.json every 10 prompts and at the
    end, and merges the parts into --json (under a lock: the workers run in parallel)."""
    from provenance import git_revision, load_average

    torch.set_num_threads(1)  # two workers on two cores: one thread each wastes nothing on spinning
    out = args.work / name
    if name in args.redo_set and out.exists():
        shutil.rmtree(out)
    part = args.work / f"{name}.part.json"
    started, load_before, revision = time.time(), load_average(), git_revision()

    def save(entry: dict) -> None:
        part.write_text(json.dumps(entry, indent=1) + "\n")
        merge(args)

    try:
        manifest, compile_s = compile_recipe(name, args.checkpoint, out, args.work / "cache")
        comps = manifest["components"]
        denoiser = "transformer" if "transformer" in comps else "unet"
        compression = (comps[denoiser].get("compression") or {}).get("palettize") or {}
        extra = dict(options=RECIPES[name], compile_s=compile_s, git_revision=revision,
                     component_psnr_db={n: c.get("psnr_db") for n, c in comps.items()},
                     component_psnr_db_calibration={n: c.get("psnr_db_calibration") for n, c in comps.items()},
                     **{f"{denoiser}_bytes": comps[denoiser]["bytes"], f"{denoiser}_average_bits": compression.get("average_bits")},
                     mixed_bit_selection_psnr_db=compression.get("measured_psnr_db"))
        rs = build_runners(out)
        start = time.time()
        torch_ok = [r["ok"] for r in torch_summary["prompts"]]

        def partial(got: list[np.ndarray], summary: dict) -> None:  # agreement relative to torch's on the same prompts
            k = summary["measured_prompts"]
            base = sum(torch_ok[:k]) / k
            save({**summary, **extra, "partial": True, "load_average_before": load_before,
                  "relative_agreement": round(summary["accuracy"] / base, 3) if base else None})

        got, summary = evaluate(rs, prompts, args.steps, args.guidance, images, partial)
    except Exception as err:  # noqa: BLE001 - a recipe that fails is a result
        entry = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}", "git_revision": revision}
        save(entry)
        return entry
    psnrs = [image_psnr(a, b) for a, b in zip(images, got)]
    np.savez_compressed(args.work / f"{name}_images.npz", images=np.stack(got))
    summary.update(extra, images_s=round(time.time() - start, 1),
                   relative_agreement=round(summary["accuracy"] / torch_summary["accuracy"], 3) if torch_summary["accuracy"] else None,
                   image_psnr_db_median=round(statistics.median(psnrs), 2), image_psnr_db_min=round(min(psnrs), 2),
                   load_average_before=load_before, load_average_after=load_average(),
                   wall_seconds=round(time.time() - started, 1))
    summary["meets_goal"] = summary["relative_agreement"] is not None and summary["relative_agreement"] >= RELATIVE_GOAL
    save(summary)
    print(f"{name}: {summary['accuracy']:.0%} agree ({summary['relative_agreement']:.0%} of torch's); image PSNR "
          f"median {summary['image_psnr_db_median']:.1f} dB; components {summary['component_psnr_db']}", flush=True)
    return summary


def merge(args: argparse.Namespace) -> None:
    """--json = the run's header + every finished or partial recipe part in WORK (under a file lock)."""
    import fcntl

    with open(args.work / "merge.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = json.loads((args.work / "header.json").read_text())
        for name in RECIPES:
            part = args.work / f"{name}.part.json"
            if part.is_file():
                result["recipes"][name] = json.loads(part.read_text())
        prov = result.pop("provenance_start")
        prov["load_average_after"], prov["wall_seconds"] = [round(x, 2) for x in os.getloadavg()], round(time.time() - prov.pop("started"), 1)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**result, "provenance": prov}, indent=2) + "\n")


def main() -> None:
    from provenance import Provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="builtin", help="a pipeline folder, builtin or builtin:sd3")
    parser.add_argument("--recipes", default=None, help=f"comma list of {', '.join(RECIPES)} (default: every recipe "
                        "the checkpoint's denoiser takes)")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--json", type=Path, default=None, help="default: results/prompt_check[_sd3].json")
    parser.add_argument("--grid", type=Path, default=None, help="default: results/prompt_check[_sd3]_grid.png")
    parser.add_argument("--work", type=Path, default=None,  # default: work/prompt_check[_sd3]
                        help="builds (one per recipe, reused), the shared compile cache, torch's images, results per recipe")
    parser.add_argument("--redo", default="", help="comma list of recipes to measure again (and rebuild)")
    parser.add_argument("--workers", type=int, default=2, help="recipes measured in parallel (one thread each)")
    args = parser.parse_args()
    args.checkpoint = Path(BUILTIN_NAMES.get(args.checkpoint, args.checkpoint))
    suffix = "_sd3" if args.checkpoint == BUILTIN_NAMES["builtin:sd3"] else ""
    args.json = args.json or RESULTS / f"prompt_check{suffix}.json"
    args.grid = args.grid or RESULTS / f"prompt_check{suffix}_grid.png"
    args.work = args.work or Path(__file__).parent / "work" / f"prompt_check{suffix}"
    recipes = [r for r in (args.recipes or ",".join(DIT_RECIPES if is_dit(args.checkpoint) else RUN_ORDER)).split(",") if r]
    args.redo_set = {r for r in args.redo.split(",") if r}
    unknown = [r for r in recipes + sorted(args.redo_set) if r not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe {unknown[0]}: choose from {', '.join(RECIPES)}")

    torch.set_num_threads(1)  # a shared 2-core machine: spinning threads burn the CPU a second process needs
    prov = Provenance.start(None if args.checkpoint == BUILTIN_CHECKPOINT else os.path.relpath(args.checkpoint))
    prompts = heldout_prompts(args.n)
    images, torch_summary = torch_reference(args.checkpoint, prompts, args.steps, args.guidance, args.work)
    print(f"torch: {torch_summary['accuracy']:.0%} of {args.n} prompts agree (colour {torch_summary['colour']:.0%}, "
          f"shape {torch_summary['shape']:.0%}, position {torch_summary['position']:.0%})", flush=True)
    grid(images, torch_summary["prompts"], args.grid)
    names = {path: name for name, path in BUILTIN_NAMES.items()}
    scheduler = ("FlowMatchEulerDiscreteScheduler (flow matching)" if is_dit(args.checkpoint)
                 else "DPMSolverMultistepScheduler (dpmsolver++)")
    header = {"checkpoint": "built-in" if args.checkpoint == BUILTIN_CHECKPOINT else names.get(args.checkpoint, str(args.checkpoint)),
              "checkpoint_sha256": checkpoint_sha256(args.checkpoint), "n": args.n, "steps": args.steps,
              "guidance": args.guidance, "scheduler": scheduler,
              "seeds": f"{SEED_BASE} + i", "prompt_rule": "heldout_prompts(n): not in check_prompts(20) nor fusionc.inputs",
              "agreement_gate": 0.9, "relative_goal": RELATIVE_GOAL, "torch": torch_summary, "recipes": {},
              "provenance_start": {"checkpoint": prov.checkpoint, "checkpoint_sha256": prov.checkpoint_sha256,
                                   "git_revision": prov.git_revision, "load_average_before": prov.load_before,
                                   "started": prov.started, "host": prov.finish()["host"]}}
    args.work.mkdir(parents=True, exist_ok=True)
    header_file = args.work / "header.json"
    if header_file.is_file():  # parts measured on other prompts are stale
        old = json.loads(header_file.read_text())
        if [old.get(k) for k in ("n", "steps", "guidance", "checkpoint_sha256")] != [header[k] for k in ("n", "steps", "guidance", "checkpoint_sha256")]:
            for part in args.work.glob("*.part.json"):
                part.unlink()
    header_file.write_text(json.dumps(header))
    todo = []
    for name in recipes:  # a finished part is kept (each records its git revision); partial or failed ones re-run
        part = args.work / f"{name}.part.json"
        if part.is_file():
            done = json.loads(part.read_text())
            if name not in args.redo_set and not done.get("partial") and "error" not in done:
                continue
            part.unlink()
        todo.append(name)
    merge(args)
    if args.workers > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers, mp_context=__import__("multiprocessing").get_context("spawn")) as pool:
            list(pool.map(measure_recipe, todo, *zip(*[(args, prompts, images, torch_summary)] * len(todo))))
    else:
        for name in todo:
            measure_recipe(name, args, prompts, images, torch_summary)
    merge(args)
    print(f"wrote {args.json} and {args.grid}")


if __name__ == "__main__":
    main()
