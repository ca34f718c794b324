"""Do the built-in pipeline's images obey their prompts? 50 seeded prompts, 8 steps, torch and an onnx build.

    python benchmarks/prompt_check.py                       # torch, then an onnx build compiled here
    python benchmarks/prompt_check.py --build build/onnx    # an existing build instead
    python benchmarks/prompt_check.py --no-onnx             # torch only

Each image is judged by fusionc.models.shapes_check (colour of the shape's pixels, shape by template IoU,
position by centroid); a prompt agrees when all three match. Writes benchmarks/results/prompt_check.json
and a grid of the torch samples (failures framed in red) to benchmarks/results/prompt_check_grid.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fusionc.checkpoint import checkpoint_sha256
from fusionc.generate import DEFAULT_GUIDANCE, RunnerSet, build_runners, image_psnr, run, torch_runners
from fusionc.models import BUILTIN_CHECKPOINT
from fusionc.models.shapes_check import check
from fusionc.models.shapes_dataset import check_prompts

RESULTS = Path(__file__).parent / "results"


def evaluate(rs: RunnerSet, prompts: list[str], steps: int, guidance: float) -> tuple[list[np.ndarray], dict]:
    images, rows, seconds = [], [], []
    for seed, prompt in enumerate(prompts):
        image, info = run(prompt, rs, steps, seed, guidance)
        images.append(image)
        seconds.append(info["seconds"])
        rows.append({"seed": seed, **check(prompt, image)})
    summary = {key: round(sum(r[f"{key}_ok"] for r in rows) / len(rows), 3) for key in ("colour", "shape", "position")}
    summary = {"accuracy": round(sum(r["ok"] for r in rows) / len(rows), 3), **summary,
               "median_seconds_per_image": round(statistics.median(seconds), 4), "prompts": rows}
    return images, summary


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=BUILTIN_CHECKPOINT)
    parser.add_argument("--build", type=Path, default=None, help="an existing build of --checkpoint")
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnx build")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--json", type=Path, default=RESULTS / "prompt_check.json")
    parser.add_argument("--grid", type=Path, default=RESULTS / "prompt_check_grid.png")
    args = parser.parse_args()

    prompts = [scene.caption for scene in check_prompts(args.n)]
    start = time.time()
    images, torch_summary = evaluate(torch_runners(args.checkpoint), prompts, args.steps, args.guidance)
    print(f"torch: {torch_summary['accuracy']:.0%} of {args.n} prompts agree "
          f"(colour {torch_summary['colour']:.0%}, shape {torch_summary['shape']:.0%}, position {torch_summary['position']:.0%})")
    result = {"checkpoint": str(args.checkpoint.resolve().relative_to(Path.cwd().resolve()))
              if args.checkpoint.resolve().is_relative_to(Path.cwd().resolve()) else str(args.checkpoint),
              "checkpoint_sha256": checkpoint_sha256(args.checkpoint), "n": args.n, "steps": args.steps,
              "guidance": args.guidance, "scheduler": "DPMSolverMultistepScheduler (dpmsolver++)",
              "agreement_gate": 0.9, "torch": torch_summary}
    grid(images, torch_summary["prompts"], args.grid)

    build, tmp = args.build, None
    if build is None and not args.no_onnx:
        from fusionc.core.options import CompileOptions
        from fusionc.pipeline import compile_checkpoint

        tmp = tempfile.TemporaryDirectory(prefix="prompt_check_")
        build = Path(tmp.name) / "onnx"
        compile_checkpoint(args.checkpoint, CompileOptions(target="onnx"), build)
    if build is not None:
        rs = build_runners(build)
        onnx_images, onnx_summary = evaluate(rs, prompts, args.steps, args.guidance)
        psnrs = [image_psnr(a, b) for a, b in zip(images, onnx_images)]
        onnx_summary.update(target=rs.extra["target"], image_psnr_db_median=round(statistics.median(psnrs), 2),
                            image_psnr_db_min=round(min(psnrs), 2))
        result["build"] = onnx_summary
        print(f"{rs.extra['target']} build: {onnx_summary['accuracy']:.0%} agree; image PSNR vs torch median "
              f"{onnx_summary['image_psnr_db_median']:.1f} dB, min {onnx_summary['image_psnr_db_min']:.1f} dB")
    if tmp is not None:
        tmp.cleanup()
    result["seconds"] = round(time.time() - start, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json} and {args.grid}")


if __name__ == "__main__":
    main()
