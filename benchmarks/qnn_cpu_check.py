"""How far the CPU QDQ check (`--qnn-verify-runtime cpu`) lands from the HTP emulator, on the same builds.

The full-size QNN builds (SDXL's UNet, SD3-medium's transformer, T5-XXL's encoder) are verified on their QDQ graphs on
ONNX Runtime's CPU EP, because one HTP-emulator call at that size takes hours. This benchmark measures what that
stand-in misses: every pipeline below is compiled for the HTP (`compile_checkpoint(--target qnn --precision P)`,
verified on the emulator, the default), then the same build is verified again with `verify_build(qnn_runtime="cpu")`
on the same held-out verification inputs. Per component: both PSNRs against torch, the gap (CPU minus HTP: positive
means the CPU figure flatters the build), and each verification's seconds.

Pipelines: the trained built-in models (builtin, builtin:sd3: real activation statistics), the tiny random SD
families (fusionc.models.tiny) and the tiny random DiT families (fusionc.models.tiny_dit), as in the full-size runs
without remedy rounds (--qnn-remedy-rounds 0) and with verification sets of 2 prompts x 2 steps.

    python benchmarks/qnn_cpu_check.py [--precisions w8a16,w8a8] [--pipelines builtin,sd15] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

RESULTS = Path(__file__).parent / "results"
TINY = ("sd15", "sd21", "no_mid", "deep_transformer", "sdxl", "taesd", "controlnet")
DIT = ("sd3", "pixart")
PIPELINES = ("builtin", "builtin:sd3", *TINY, *(f"dit:{f}" for f in DIT))


def pipeline_folder(name: str, work: Path) -> Path:
    """The checkpoint folder of a pipeline name (tiny ones are written once under `work`)."""
    from fusionc.checkpoint import BUILTIN_NAMES

    if name in BUILTIN_NAMES:
        return BUILTIN_NAMES[name]
    folder = work / name.replace(":", "_")
    if not folder.exists():
        if name.startswith("dit:"):
            from fusionc.models.tiny_dit import write_dit_pipeline

            write_dit_pipeline(folder, name.split(":", 1)[1])
        else:
            from fusionc.models.tiny import write_pipeline

            write_pipeline(folder, name)
    return folder


def run_pipeline(name: str, precision: str, work: Path) -> dict[str, Any]:
    from fusionc.core.options import CompileOptions
    from fusionc.pipeline import compile_checkpoint
    from fusionc.verify_build import verify_build

    options = CompileOptions(target="qnn", precision=precision, qnn_remedy_rounds=0, verify_prompts=2, verify_steps=2)
    out = work / f"build_{name.replace(':', '_')}_{precision}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    manifest = compile_checkpoint(pipeline_folder(name, work), options, out)
    compile_s = time.perf_counter() - start
    htp = {n: c["psnr_db"] for n, c in manifest["components"].items()}
    htp_s = {n: manifest["timings"].get(f"{n}: verify on qnn") for n in htp}
    start = time.perf_counter()
    on_cpu = verify_build(out, qnn_runtime="cpu")
    cpu_total_s = time.perf_counter() - start  # includes the torch reference trajectories (recomputed)
    rows = {}
    for component, entry in on_cpu["components"].items():
        rows[component] = {"htp_db": htp[component], "cpu_db": entry["psnr_db"],
                           "gap_db": round(entry["psnr_db"] - htp[component], 2),
                           "htp_verify_s": round(htp_s[component], 2) if htp_s[component] is not None else None}
    shutil.rmtree(out, ignore_errors=True)
    return {"compile_s": round(compile_s, 1), "cpu_verify_total_s": round(cpu_total_s, 1), "components": rows}


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for precision, pipelines in results.items():
        gaps = [r["gap_db"] for p in pipelines.values() if "components" in p for r in p["components"].values()]
        if gaps:
            out[precision] = {"components": len(gaps), "median_gap_db": round(statistics.median(gaps), 2),
                              "min_gap_db": min(gaps), "max_gap_db": max(gaps),
                              "within_1db": sum(abs(g) <= 1.0 for g in gaps),
                              "cpu_higher_by_over_0_5db": sum(g > 0.5 for g in gaps)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="w8a16,w8a8")
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--json", type=Path, default=RESULTS / "qnn_cpu_check.json")
    args = parser.parse_args()
    from provenance import Provenance
    from qnn_families import limit_threads

    limit_threads(args.threads)
    prov = Provenance.start()
    report: dict[str, Any] = {
        "benchmark": "qnn_cpu_check", "device": "snapdragon-8-gen-2 (v73)", "threads": args.threads,
        "measured_on": "verification set (held out): the same inputs for both runtimes",
        "htp": "context binaries in the HTP emulator (onnxruntime-qnn, x86-64)",
        "cpu": "the build's QDQ graphs on ONNX Runtime's CPU EP (fusionc.targets.qnn.cpu_check)",
        "options": "--qnn-remedy-rounds 0 --verify-prompts 2 --verify-steps 2", "results": {}}
    with tempfile.TemporaryDirectory(prefix="qnn_cpu_check_") as tmp:
        for precision in args.precisions.split(","):
            for name in args.pipelines.split(","):
                print(f"[qnn_cpu_check] {name} {precision} ...", flush=True)
                try:
                    row = run_pipeline(name, precision, Path(tmp))
                except Exception as err:  # noqa: BLE001 - a failed compile is a result, recorded
                    row = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"}
                report["results"].setdefault(precision, {})[name] = row
                report["summary"] = summarize(report["results"])
                args.json.write_text(json.dumps({**report, "provenance": prov.finish()}, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
