"""Compile the same checkpoint with two fusionc installs, alternately, and compare CPU time, wall time and peak RSS.

Used to show a refactor costs nothing: the layout change of issue 12 against the revision before it, on the
SD-1.5-shaped UNet (onnx target), both measured in the same run on the same machine. CPU seconds are robust to
other load on the machine, wall seconds are not (the load averages are recorded).

    python benchmarks/compare_revisions.py --before /work/wt/before/.venv/bin/python --after .venv/bin/python \
        --work benchmarks/work --components unet --runs 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def one_compile(python: str, checkpoint: Path, out: Path, components: str) -> dict:
    """One `fusionc compile` in a child process (its own RUSAGE_CHILDREN via a wrapper shell)."""
    code = ("import resource, subprocess, sys, json, time; t = time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "print(json.dumps({'wall': time.perf_counter() - t, 'cpu': u.ru_utime + u.ru_stime, 'rss': u.ru_maxrss * 1024}))")
    command = [python, "-c", code, python, "-m", "fusionc.cli", "compile", str(checkpoint), "--target", "onnx",
               "--out", str(out), "--components", components, "--verify-steps", "1", "--verify-prompts", "1"]
    env = {k: v for k, v in os.environ.items() if k != "FUSIONC_CACHE"}
    load = os.getloadavg()[0]
    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout.strip()
                        .splitlines()[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall_seconds": round(result["wall"], 1), "cpu_seconds": round(result["cpu"], 1),
            "peak_rss_bytes": result["rss"], "load_before_after": [round(load, 2), round(os.getloadavg()[0], 2)],
            "psnr_db": {n: c.get("psnr_db") for n, c in manifest["components"].items()},
            "bytes": {n: c["bytes"] for n, c in manifest["components"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="python of the install before the change")
    parser.add_argument("--after", required=True, help="python of the install after the change")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--components", default="unet")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--name", default="layout_regression")
    args = parser.parse_args()
    checkpoint = args.work / "sd15"
    if not (checkpoint / "model_index.json").exists():
        from fusionc.models.reference import write_reference_pipeline

        write_reference_pipeline(checkpoint, "sd15")
    revisions = {side: subprocess.run([py, "-c", "import fusionc, subprocess, pathlib; print(subprocess.run(['git', "
                                        "'rev-parse', 'HEAD'], cwd=pathlib.Path(fusionc.__file__).parent, "
                                        "capture_output=True, text=True).stdout.strip())"],
                                       capture_output=True, text=True).stdout.strip()
                 for side, py in (("before", args.before), ("after", args.after))}
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for i in range(args.runs):
        for side, python in (("before", args.before), ("after", args.after)):
            out = args.work / f"compare_{side}"
            if out.exists():
                subprocess.run(["rm", "-rf", str(out)], check=True)
            runs[side].append(one_compile(python, checkpoint, out, args.components))
            print(side, i, runs[side][-1], flush=True)
    summary = {side: {key: statistics.median(r[key] for r in rs) for key in ("wall_seconds", "cpu_seconds", "peak_rss_bytes")}
               for side, rs in runs.items()}
    result = {"benchmark": args.name, "model": "SD-1.5-shaped pipeline, random weights", "components": args.components,
              "revisions": revisions, "runs": runs, "median": summary,
              "after_over_before": {k: round(summary["after"][k] / summary["before"][k], 3) for k in summary["after"]}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median"], indent=1), result["after_over_before"])


if __name__ == "__main__":
    main()
