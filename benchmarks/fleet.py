"""Fleet vs separate compiles: 6 variants of one SD-1.5-shaped UNet (random weights), wall time and peak RSS.

Variants: Core ML fp16 and 6-bit palettized for the iPhone 14 Pro and the iPhone 15 Pro, QNN W8A16 for the
Snapdragon 8 Gen 2 and Gen 3 (UNet only, no emulated verification: as benchmarks/qnn_scale.py; small
calibration and selection sets). Three ways, each a child process tree sampled every 0.5 s with psutil for
its summed RSS (Ray's raylet and workers are in the driver's tree):

    separate   6 x `fusionc compile` with the variant's flags, no cache (each loads, traces and exports)
    local      `fusionc compile --config fleet.toml` (one load, one trajectory, one export, 6 lowerings, in turn)
    local:N    the same with `--jobs N`: the lowerings in a pool of N worker processes
    ray        the same with `--executor ray` (a local 2-CPU Ray; the variants run 2 at a time)

The JSON (benchmarks/results/fleet_<scale>.json) is rewritten after every compile (a killed run keeps what it
measured), with git revision and machine load before/after for the run and for each way; `--add` adds ways to
an existing JSON. `--scale sd15` is the real SD-1.5 UNet (tens of minutes per way; `--checkpoint
/work/ckpt/sd15` uses an existing random-weight pipeline folder as is, read-only); `--scale small` the same
architecture at a fifth of the width (64/128/256/256 channels, ~1/25 of the parameters); `--scale builtin`
the built-in model's UNet (minutes in all). Builds and the fleet's cache are deleted after each measurement.

    /work/tools/heavy python benchmarks/fleet.py --scale sd15 --checkpoint /work/ckpt/sd15 --ways local,separate
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from provenance import Provenance  # noqa: E402

RESULTS = Path(__file__).parent / "results"
VARIANTS = [
    {"name": "iphone14-fp16", "target": "coreml", "device": "iphone-14-pro"},
    {"name": "iphone14-6bit", "target": "coreml", "device": "iphone-14-pro", "palettize": "6"},
    {"name": "iphone15-fp16", "target": "coreml", "device": "iphone-15-pro"},
    {"name": "iphone15-6bit", "target": "coreml", "device": "iphone-15-pro", "palettize": "6"},
    {"name": "sd8g2-w8a16", "target": "qnn", "device": "snapdragon-8-gen-2", "precision": "w8a16",
     "calibration_samples": 2, "selection_samples": 2, "qnn_remedy_rounds": 0},
    {"name": "sd8g3-w8a16", "target": "qnn", "device": "snapdragon-8-gen-3", "precision": "w8a16",
     "calibration_samples": 2, "selection_samples": 2, "qnn_remedy_rounds": 0},
]
SHARED = {"components": ["unet"], "verify": False, "calibration_prompts": 1, "calibration_steps": 2,
          "selection_prompts": 1, "selection_steps": 1}


def write_checkpoint(folder: Path, scale: str) -> Path:
    from fusionc.models import reference

    if scale == "builtin":
        from fusionc.models import BUILTIN_CHECKPOINT

        return Path(BUILTIN_CHECKPOINT)
    if (folder / "model_index.json").exists():
        return folder
    if scale == "small":  # GroupNorm's 32 groups need widths divisible by 32
        reference.UNETS["small"] = dict(reference.SD15_UNET, block_out_channels=(64, 128, 256, 256))
    return reference.write_reference_pipeline(folder, "sd15" if scale == "sd15" else "small")


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)


def write_config(folder: Path, checkpoint: Path, builds: Path, cache: Path | None) -> Path:
    lines = ["[compile]", f"checkpoint = {json.dumps(str(checkpoint))}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in SHARED.items()]
    if cache is not None:
        lines.append(f"cache = {json.dumps(str(cache))}")
    for variant in VARIANTS:
        lines.append("[[variant]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in variant.items()]
        lines.append(f"out = {json.dumps(str(builds / variant['name']))}")
    path = folder / "fleet.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def flags(variant: dict) -> list[str]:
    out = []
    for key, value in {**SHARED, **variant}.items():
        if key == "name":
            continue
        if key == "verify":
            out += [] if value else ["--no-verify"]
        elif key == "components":
            out += ["--components", ",".join(value)]
        else:
            out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def run_tree(command: list[str], env: dict, disk: Path) -> dict:
    """Run `command`; wall seconds, the peak of its whole process tree's summed RSS and the least free space on
    `disk`'s file system (sampled every 0.5 s)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak, least_free = 0, shutil.disk_usage(disk).free
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        least_free = min(least_free, shutil.disk_usage(disk).free)
        time.sleep(0.5)
    _, err = proc.communicate()
    return {"wall_s": round(time.perf_counter() - start, 1), "peak_rss_gb": round(peak / 1e9, 2),
            "min_disk_free_gb": round(least_free / 1e9, 1), "exit_code": proc.returncode,
            "stderr_tail": err[-600:] if proc.returncode else ""}


def way_command(way: str, config: Path, report: Path) -> list[str]:
    """`local` / `local:N` (a pool of N worker processes: --jobs N) / `ray` -> the fleet's command line."""
    executor, _, jobs = way.partition(":")
    command = [sys.executable, "-m", "fusionc.cli", "compile", "--config", str(config), "--executor", executor,
               "--report", str(report)]
    return command + (["--jobs", jobs] if jobs else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("builtin", "small", "sd15"), default="small")
    parser.add_argument("--ways", default="separate,local,ray",
                        help="comma list of separate, local, local:N (a pool of N processes), ray")
    parser.add_argument("--variants", default=None, help="comma list of variant names (default: all six)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="an existing SD pipeline folder to use as is (read-only), e.g. /work/ckpt/sd15")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--add", action="store_true",
                        help="add these ways to the existing results JSON (each way keeps its own provenance)")
    args = parser.parse_args()
    args.work = args.work.resolve()  # the fleet.toml's paths are relative to the file: give it absolute ones
    global VARIANTS
    if args.variants:
        wanted = args.variants.split(",")
        VARIANTS = [v for v in VARIANTS if v["name"] in wanted]
    checkpoint = args.checkpoint or write_checkpoint(args.work / f"fleet_{args.scale}_ckpt", args.scale)
    prov = Provenance.start(None if args.scale == "builtin" else checkpoint)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / f"fleet_{args.scale}.json"
    result = {"benchmark": "fleet", "scale": args.scale,
              "model": {"sd15": "SD-1.5 UNet, random weights, 64x64 latents",
                        "small": "SD-1.5-shaped UNet at 1/5 width (64/128/256/256), random weights, 64x64 latents",
                        "builtin": "the built-in tiny_sd UNet (trained; widths 64/96/96, 8x8 latents)"}[args.scale]
              + "; components: unet; no emulated verification",
              "variants": VARIANTS, "shared": SHARED, "ways": {}}
    if args.add and out_path.exists():
        result = json.loads(out_path.read_text())
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    # Ray runs its workers 15 nice levels below the driver (its worker_niceness); the other ways run at the
    # driver's, so on a shared machine the Ray way would lose CPU to everything else: same priority for all ways
    env.setdefault("RAY_worker_niceness", "0")

    def save() -> None:  # after every compile: a killed run keeps what it measured
        if "separate" in result["ways"] and result["ways"]["separate"].get("complete"):
            base = result["ways"]["separate"]["wall_s"]
            result["ratio_to_separate"] = {w: round(e["wall_s"] / base, 3) for w, e in result["ways"].items()
                                           if e.get("complete", True)}
        result["provenance"] = prov.finish()
        out_path.write_text(json.dumps(result, indent=1) + "\n")

    for way in args.ways.split(","):
        way_prov = Provenance.start(None if args.scale == "builtin" else checkpoint)
        root = args.work / f"fleet_{args.scale}_{way.replace(':', '_j')}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        builds = root / "builds"
        if way == "separate":
            runs: dict[str, dict] = {}
            entry = {"per_variant": runs, "complete": False}
            result["ways"][way] = entry
            for variant in VARIANTS:
                command = [sys.executable, "-m", "fusionc.cli", "compile", str(checkpoint), *flags(variant),
                           "--out", str(builds / variant["name"])]
                runs[variant["name"]] = run_tree(command, dict(env, FUSIONC_CACHE=""), root)
                shutil.rmtree(builds / variant["name"], ignore_errors=True)  # GBs each at SD scale
                entry.update({"wall_s": round(sum(r["wall_s"] for r in runs.values()), 1),
                              "peak_rss_gb": max(r["peak_rss_gb"] for r in runs.values()),
                              "exit_code": max(r["exit_code"] for r in runs.values()),
                              "complete": len(runs) == len(VARIANTS), "provenance": way_prov.finish()})
                save()
                print(f"separate {variant['name']}: {runs[variant['name']]['wall_s']} s", flush=True)
        else:
            # no --cache: the fleet's own temporary cache, which keeps only what the variants share
            config = write_config(root, checkpoint, builds, None)
            entry = run_tree(way_command(way, config, root / "report.json"), dict(env, FUSIONC_CACHE=""), root)
            report = json.loads((root / "report.json").read_text()) if (root / "report.json").exists() else {}
            entry["shared_s"] = report.get("shared", {}).get("timings", {})
            entry["per_variant_s"] = {v["name"]: v["wall_s"] for v in report.get("variants", [])}
            if way == "local" and report:  # the fleet's own PNG: size vs estimated latency, PSNR as colour
                from fusionc.fleet_report import plot

                plot(report, RESULTS / f"fleet_{args.scale}.png")
            entry["variants"] = [{k: v[k] for k in ("name", "status", "bytes", "latency_ms_per_step",
                                                     "latency_ms_per_generation", "executor", "node")}
                                 for v in report.get("variants", [])]
            entry["provenance"] = way_prov.finish()
            result["ways"][way] = entry
            shutil.rmtree(builds, ignore_errors=True)
            save()
        print(f"{way}: {entry['wall_s']} s, peak {entry['peak_rss_gb']} GB, exit {entry['exit_code']}", flush=True)


if __name__ == "__main__":
    main()
