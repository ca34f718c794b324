"""How long `fusionc estimate` takes on full-size UNets, from folders that hold configs only (no weight file).

Each UNet's config (SD-1.5: benchmarks/reference_models.SD15_UNET; SDXL: benchmarks/sdxl_scale.SDXL_UNET, both from
../shared/reference-models.md) is written as a diffusers folder with a model_index.json and unet/config.json and
nothing else, then `fusionc estimate FOLDER --components unet --device snapdragon-8-gen-3 --device iphone-14-pro
--json F` runs as a child process, `--repeats` times; the JSON records every run's wall time and peak RSS (the
child's ru_maxrss), their medians, and the estimates themselves. With `--before PYTHON` (the interpreter of another
fusionc install, e.g. a worktree of the previous revision) its runs alternate with this install's, so a change is
compared with its peer in the same run on the same machine (`before` in the JSON, its git revision with it).
Then one estimate with `--cache` fills a graph-statistics cache and `--repeats` more read it back (`cache`; the
peer's, alternating, in `before.cache`).

    python benchmarks/estimate_speed.py [--models sd15 sdxl] [--repeats 3] [--before /path/to/other/.venv/bin/python]
        -> benchmarks/results/estimate_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results"
DEVICES = ("snapdragon-8-gen-3", "iphone-14-pro")


def configs() -> dict[str, tuple[str, dict]]:
    from reference_models import SD15_UNET
    from sdxl_scale import SDXL_UNET

    return {"sd15": ("StableDiffusionPipeline", SD15_UNET), "sdxl": ("StableDiffusionXLPipeline", SDXL_UNET)}


def write_config_folder(folder: Path, pipeline: str, unet_config: dict) -> Path:
    """A checkpoint folder with the UNet's config.json and no weights."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
    unet.save_config(folder / "unet")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline,
                                                         "unet": ["diffusers", "UNet2DConditionModel"]}))
    return folder


def run_once(folder: Path, out: Path, python: str = sys.executable, cache: Path | None = None) -> dict:
    """One `fusionc estimate` child of `python` (with `--cache` when given): wall seconds, its peak RSS, its JSON."""
    command = [python, "-m", "fusionc.cli", "estimate", str(folder), "--components", "unet", "--json", str(out)]
    command += ["--cache", str(cache)] if cache else []
    for device in DEVICES:
        command += ["--device", device]
    start = time.perf_counter()
    log = out.with_suffix(".stderr")
    with open(log, "w") as err:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, rusage = os.wait4(child.pid, 0)  # this child's own peak RSS
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"fusionc estimate failed: {log.read_text().strip().splitlines()[-1:]}")
    return {"wall_s": round(wall, 1), "max_rss_gb": round(rusage.ru_maxrss / 2**20, 2),
            "estimates": json.loads(out.read_text())["estimates"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sd15", "sdxl"], choices=["sd15", "sdxl"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "estimate_speed.json")
    parser.add_argument("--before", help="python of another fusionc install, run alternately as the peer")
    args = parser.parse_args()
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    installs = {"after": sys.executable} | ({"before": args.before} if args.before else {})
    for name in args.models:
        pipeline, config = configs()[name]
        runs = {k: [] for k in installs}
        with tempfile.TemporaryDirectory(prefix=f"fusionc-estimate-{name}-") as tmp:
            folder = write_config_folder(Path(tmp) / "checkpoint", pipeline, config)
            load = round(os.getloadavg()[0], 2)
            for i in range(args.repeats):
                for which, python in installs.items():
                    runs[which].append(run_once(folder, Path(tmp) / f"estimate-{which}-{i}.json", python))
            # --cache: the first estimate stores the graph statistics, the next ones read them back (each install
            # its own cache: the key holds fusionc's sources), alternating like the runs above
            fill = {which: run_once(folder, Path(tmp) / f"estimate-fill-{which}.json", python, Path(tmp) / which)
                    for which, python in installs.items()}
            cached = {k: [] for k in installs}
            for i in range(args.repeats):
                for which, python in installs.items():
                    cached[which].append(run_once(folder, Path(tmp) / f"estimate-cached-{which}-{i}.json", python,
                                                  Path(tmp) / which))
        cache = {which: {"fill_wall_s": fill[which]["wall_s"], "runs": [r["wall_s"] for r in cached[which]],
                         "median_wall_s": statistics.median(r["wall_s"] for r in cached[which]),
                         "max_rss_gb": max(r["max_rss_gb"] for r in cached[which]),
                         "same_estimates": all(r["estimates"] == runs[which][-1]["estimates"] for r in cached[which])}
                 for which in installs}
        result[name] = dict(summary(runs["after"], git_rev(sys.executable)), load_before=load, cache=cache["after"])
        if args.before:
            result[name]["before"] = dict(summary(runs["before"], git_rev(args.before)), cache=cache["before"])
            result[name]["same_estimates_as_before"] = result[name]["estimates"] == result[name]["before"]["estimates"]
        else:
            result[name].pop("before", None)
        print(f"{name}: median {result[name]['median_wall_s']} s over {args.repeats} runs, peak RSS "
              f"{result[name]['max_rss_gb']} GB" + (f" (before: {result[name]['before']['median_wall_s']} s)"
                                                      if args.before else ""), file=sys.stderr)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def summary(runs: list[dict], rev: str) -> dict:
    """One install's runs: each run's wall time and peak RSS, their median and maximum, and its estimates."""
    return {"git_rev": rev, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
            "runs": [{k: r[k] for k in ("wall_s", "max_rss_gb")} for r in runs],
            "median_wall_s": statistics.median(r["wall_s"] for r in runs),
            "max_rss_gb": max(r["max_rss_gb"] for r in runs),
            "estimates": [{k: e[k] for k in ("device", "precision", "batch", "latency_ms", "bound")}
                          for e in runs[-1]["estimates"]]}


def git_rev(python: str) -> str:
    """The short git revision of the fusionc that `python` imports."""
    source = subprocess.run([python, "-c", "import fusionc, pathlib; print(pathlib.Path(fusionc.__file__).parent)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
