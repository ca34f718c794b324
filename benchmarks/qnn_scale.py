"""QNN target at SD-1.5 scale: quantization and HTP context build of the SD-1.5-shaped UNet (random weights).

Runs `fusionc compile CKPT --target qnn --components unet --precision P --no-verify` in a child process
and records wall and CPU seconds per stage (manifest timings: export, passes, calibration, remedies,
context build), the child's peak RSS, and the bytes of model.qdq.onnx(+.data), the EP-context model and
the .bin. Goal (issue 6): W8A16 including calibration in <= 15 min and <= 16 GB on this 2-core machine.
Emulated verification is off: one evaluation of an SD-1.5 context on the HTP emulator takes ~12 minutes.

    flock /tmp/fusionc-heavy.lock nice -n 10 python benchmarks/qnn_scale.py [--precision w8a16] [--work DIR]
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
    parser.add_argument("--precision", default="w8a16")
    parser.add_argument("--calibration-samples", type=int, default=2)
    parser.add_argument("--remedy-rounds", type=int, default=None, help="fake-quant evaluations (default: fusionc's)")
    args = parser.parse_args()
    checkpoint = args.work / "sd15"
    if not (checkpoint / "model_index.json").exists():
        from fusionc.models.reference import write_reference_pipeline

        write_reference_pipeline(checkpoint, "sd15")
    out = args.work / f"sd15_qnn_{args.precision}"
    command = [sys.executable, "-m", "fusionc.cli", "compile", str(checkpoint), "--target", "qnn", "--components",
               "unet", "--precision", args.precision, "--calibration-samples", str(args.calibration_samples),
               "--no-verify", "--verify-steps", "1", "--verify-prompts", "1", "--out", str(out)]
    env = dict(os.environ)
    if args.remedy_rounds is not None:
        env["FUSIONC_QNN_REMEDY_ROUNDS"] = str(args.remedy_rounds)
    load_before = os.getloadavg()
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    manifest = json.loads((out / "manifest.json").read_text())
    unet = manifest["components"]["unet"]
    files = {f: (out / f).stat().st_size for f in unet["files"]}
    data = out / "unet" / "model.qdq.onnx.data"
    result = {
        "benchmark": "qnn_scale",
        "model": "SD-1.5-shaped UNet, random weights (../shared/reference-models.md), 64x64 latents, batch 1",
        "device": manifest["device"], "htp_arch": unet.get("htp_arch"), "precision": args.precision,
        "command": " ".join(command[2:]),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "goal": {"seconds": 900, "peak_rss_bytes": 16 << 30},
        "stage_seconds": manifest.get("timings"),
        "qnn_seconds": unet.get("qnn_timings"),
        "peak_rss_mb_after_stage": manifest.get("peak_rss_mb_after_stage"),
        "qnn_peak_rss_mb_after": unet.get("qnn_peak_rss_mb_after"),
        "calibration_samples": unet.get("calibration_samples"),
        "remedies": unet.get("remedies"),
        "files_bytes": {**files, **({str(data.relative_to(out)): data.stat().st_size} if data.exists() else {})},
        "context_bin_bytes": unet.get("context_bytes"),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"qnn_scale_{args.precision}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "remedies"}, indent=2))


if __name__ == "__main__":
    main()
