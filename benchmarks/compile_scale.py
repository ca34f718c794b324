"""Compile an SD-1.5-shaped pipeline (random weights, public configs) with `fusionc compile --target onnx`.

Records wall time per stage (from the manifest), peak RSS of the compile process, artifact bytes and
PSNR per component, and writes benchmarks/results/compile_scale_TARGET[_COMPONENTS].json (the suffix when
--components is not the whole pipeline).

    python benchmarks/compile_scale.py [--work DIR] [--components unet,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--components", default="text_encoder,unet,vae_decoder")
    parser.add_argument("--target", default="onnx")
    args = parser.parse_args()
    checkpoint = args.work / "sd15"
    if not (checkpoint / "model_index.json").exists():
        from fusionc.models.reference import write_reference_pipeline

        write_reference_pipeline(checkpoint, "sd15")
    out = args.work / f"sd15_{args.target}"
    command = [sys.executable, "-m", "fusionc.cli", "compile", str(checkpoint), "--target", args.target,
               "--out", str(out), "--components", args.components, "--verify-steps", "1", "--verify-prompts", "1"]
    load_before = os.getloadavg()
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_rss = usage.ru_maxrss * 1024
    manifest = json.loads((out / "manifest.json").read_text())
    result = {
        "benchmark": "compile_scale",
        "model": "SD-1.5-shaped pipeline, random weights (../shared/reference-models.md)",
        "command": " ".join(command[2:]),
        "machine": {"cores": 2, "python": platform.python_version()},
        # CPU seconds are robust to other load on the machine; wall seconds are not (see load_average).
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "peak_rss_bytes": peak_rss,
        "stage_seconds": manifest["timings"],
        "peak_rss_mb_after_stage": manifest.get("peak_rss_mb_after_stage"),
        "components": {n: {"bytes": c["bytes"], "psnr_db": c.get("psnr_db"),
                           "passes_seconds": round(sum(p["seconds"] for p in c["passes"]), 2)}
                       for n, c in manifest["components"].items()},
    }
    RESULTS.mkdir(exist_ok=True)
    default = args.components == parser.get_default("components")
    path = RESULTS / f"compile_scale_{args.target}{'' if default else '_' + args.components.replace(',', '_')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
