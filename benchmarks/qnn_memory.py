"""Where the QNN W8A16 compile of a big denoiser holds its memory, and what it would take at full size.

SD3-medium's transformer (2.03B parameters) to QNN W8A16 was killed at 21.7 GB (process tree) after calibration
(benchmarks/results/dit_scale.json, "full"). This benchmark compiles the same transformer at full width with 1, 2,
4 (...) of its 24 layers, under benchmarks/compile_memory_profile.py (peak RSS of the process tree per stage and
per QNN step, the context-build child included), fits each row's peak against the parameter count
(peak = a + b * parameters) and projects it to SD3-medium's transformer (2.03B) and to an SDXL-sized UNet (2.57B,
by parameter count only: a UNet's activations differ). A revision's figures go under its `--label`
(`before` / `after` a change), so one JSON holds both.

Every scale is compiled the way dit_scale.py compiles the full one (512x512, one calibration batch, no remedy
rounds, `--no-verify`), with `--qnn-max-context-bytes` scaled with the parameter count so that every scale is
split into as many context parts as the full model (2: 2.03 GB of 8-bit weights against 0.85 x 2 GB): the
split path is part of what is measured.

    /work/tools/heavy python benchmarks/qnn_memory.py --label before --source /path/to/old/checkout --layers 1,2,4
    python benchmarks/qnn_memory.py --label after --layers 1,2,4 --checkpoints /tmp/qm/ckpt

`--source` is the checkout whose fusionc is measured (the shared venv imports fusionc from the checkout around
the working directory); default: this one. Results: benchmarks/results/qnn_memory.json (a run replaces its
label's scales), per-run profiles: benchmarks/results/compile_memory_qnn_<label>_layers<N>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from dit_scale import SD3_MEDIUM, T5_TOKENS, parameter_count, write_checkpoint  # noqa: E402
from sdxl_scale import RESULTS, run_watched  # noqa: E402

OUT = RESULTS / "qnn_memory.json"
FULL_PARAMS = {"sd3_medium_transformer": 2_028_328_000, "sdxl_unet_by_parameters": 2_567_463_684}
FULL_CONTEXT_LIMIT = 2 << 30  # the default device's (Snapdragon 8 Gen 2) context limit
GB = 1 << 30
DEFAULT_BUILD = 8 << 30  # fusionc's default --qnn-max-build-bytes (targets/qnn/split.py)


def compile_args(params: int, height: int, width: int, max_build_bytes: int | None = None) -> list[str]:
    limit = int(FULL_CONTEXT_LIMIT * params / FULL_PARAMS["sd3_medium_transformer"])
    build = ["--qnn-max-build-bytes", str(max_build_bytes)] if max_build_bytes else []
    return build + ["--target", "qnn", "--precision", "w8a16", "--text-length", str(T5_TOKENS), "--height", str(height),
            "--width", str(width), "--verify-steps", "1", "--verify-prompts", "1", "--calibration-steps", "1",
            "--calibration-prompts", "1", "--calibration-samples", "1", "--qnn-remedy-rounds", "0",
            "--selection-steps", "1", "--selection-prompts", "1", "--no-verify", "--qnn-max-context-bytes", str(limit)]


def row_peaks(profile: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per stage / step name (repeated steps, e.g. one context build per part: their maximum): peak MB of the
    process tree, of its anonymous part, and of this process alone."""
    out: dict[str, dict[str, int]] = {}
    for row in profile["rows"]:
        if row["kind"] == "pass":
            continue
        name = f"{row['kind']}: {row['name']}"
        have = out.setdefault(name, {"peak_tree_mb": 0, "peak_tree_anon_mb": 0, "peak_parent_mb": 0, "count": 0})
        have["peak_tree_mb"] = max(have["peak_tree_mb"], row.get("peak_tree_mb", row["peak_mb"]))
        have["peak_tree_anon_mb"] = max(have["peak_tree_anon_mb"], row.get("peak_tree_anon_mb", row["peak_anon_mb"]))
        have["peak_parent_mb"] = max(have["peak_parent_mb"], row["peak_mb"])
        have["count"] += 1
    return out


def part_activation_bytes(qdq_path: Path) -> int:
    """fp32 bytes of the outputs of a QDQ part's compute nodes (Q/DQ and Cast left out): the float graph's
    activations, which the context build's memory follows (targets/qnn/split.py)."""
    import numpy as np
    import onnx

    graph = onnx.load(str(qdq_path), load_external_data=False).graph
    types = {v.name: v.type for v in [*graph.value_info, *graph.input, *graph.output]}
    total = 0
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast"):
            continue
        for name in node.output:
            if name in types and types[name].HasField("tensor_type"):
                total += 4 * int(np.prod([d.dim_value for d in types[name].tensor_type.shape.dim]))
    return total


def context_builds(profile: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """Each context build (one per part, in order): its seconds, the compile's own peak and the tree's peak while
    it ran (their difference: the build's child, as sampled), the child's exact peak where the profile has it, and
    the part's activation bytes."""
    rows = [r for r in profile["rows"] if r["kind"] == "step" and r["name"] in ("compile_context", "compile_contexts")]
    parts = sorted(folder.glob("model.part*.qdq.onnx"), key=lambda p: int(p.name.split(".")[1][4:])) or \
        sorted(folder.glob("model.qdq.onnx"))
    children = profile.get("context_build_children", [])  # each child's exact peak (wait4), when recorded
    out = []
    for index, row in enumerate(rows):
        entry = {"seconds": row["seconds"], "peak_parent_mb": row["peak_mb"], "peak_tree_mb": row["peak_tree_mb"],
                 "child_mb_at_tree_peak": row["peak_tree_mb"] - row["peak_mb"]}
        if index < len(children) and "peak_vmhwm_mb" in children[index]:
            entry["child_peak_rss_mb"] = children[index]["peak_vmhwm_mb"]
        if index < len(parts):
            entry["activation_bytes_fp32"] = part_activation_bytes(parts[index])
        out.append(entry)
    return out


def fit(points: list[tuple[int, float]]) -> dict[str, float] | None:
    """Least-squares line MB = a + b * parameters; b in bytes per parameter; projections at full size."""
    if len({p for p, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(p for p, _ in points) / n
    my = sum(m for _, m in points) / n
    sxx = sum((p - mx) ** 2 for p, _ in points)
    slope = sum((p - mx) * (m - my) for p, m in points) / sxx
    intercept = my - slope * mx
    residual = max(abs(m - (intercept + slope * p)) for p, m in points)
    return {"intercept_mib": round(intercept, 1), "bytes_per_parameter": round(slope * (1 << 20), 3),
            "max_residual_mib": round(residual, 1),
            **{f"projected_{k}_gib": round((intercept + slope * v) / 1024, 2) for k, v in FULL_PARAMS.items()}}


def summarize(runs: dict[str, Any]) -> dict[str, Any]:
    """Per row: the fits of the tree's and the compile's own (parent) peak over the scales that finished; the whole
    compile's; and what the context builds took against their parts' activations (the child's memory model)."""
    done = [r for r in runs.values() if r.get("exit_code") == 0]
    names = sorted({n for r in done for n in r["rows"]}, key=lambda n: min(
        r["rows_order"].index(n) for r in done if n in r["rows"]))
    rows = {}
    for name in names:
        for key in ("peak_tree_mb", "peak_tree_anon_mb", "peak_parent_mb"):
            line = fit([(r["parameters"], r["rows"][name][key]) for r in done if name in r["rows"]])
            if line:
                rows.setdefault(name, {})[key] = line
    builds = [b for r in done for b in r.get("context_builds", []) if b.get("activation_bytes_fp32", 0) > (64 << 20)]
    ratios = [round((b.get("child_peak_rss_mb", b["child_mb_at_tree_peak"]) << 20) / b["activation_bytes_fp32"], 2)
              for b in builds]
    summary = {"scales_fitted": sorted(r["parameters"] for r in done),
               "whole_compile_peak_tree": fit([(r["parameters"], r["peak_tree_bytes_watch"] / (1 << 20)) for r in done]),
               "rows": rows,
               "context_build_child_mb_per_activation_mb": ratios}
    building = (rows.get("step: compile_context") or rows.get("step: compile_contexts", {})).get("peak_parent_mb")
    if building:  # the compile's own memory while a part builds, projected; the child is bounded by the option
        parent = building["projected_sd3_medium_transformer_gib"]
        projection = {
            "parent_during_context_build_gib": parent, "context_build_limit_gib": round(DEFAULT_BUILD / GB, 2),
            "tree_during_context_build_gib": round(parent + DEFAULT_BUILD / GB, 2),
            "how": "the compile's own peak while a part builds (fit over the scales, projected to 2.03B) plus "
                   "the child's limit (--qnn-max-build-bytes, default 8 GiB: parts are cut at (limit - 256 MB) / 4 "
                   "fp32 activation bytes, about 3 blocks; the largest child/activation ratios above are parts "
                   "smaller than one block)"}
        full = RESULTS / "compile_memory_dit_full_sd3_transformer_qnn.json"  # the killed full-size run's stages
        if full.exists():
            stages = {r["name"]: r["peak_mb"] for r in json.loads(full.read_text())["rows"] if r["kind"] == "stage"}
            before = {k: round(v / 1024, 2) for k, v in stages.items() if "lower" not in k}
            projection["full_size_stages_before_lowering_gib_measured"] = before
            projection["compile_peak_gib"] = round(max([*before.values(), projection["tree_during_context_build_gib"]]), 2)
        summary["projection_sd3_medium_default_build_limit"] = projection
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default=None, help="before / after: the section of the JSON this run fills")
    parser.add_argument("--refit", action="store_true", help="only recompute every section's fits from its runs")
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout whose fusionc is measured [default: this one]")
    parser.add_argument("--layers", default="1,2,4", help="SD3-medium transformer depths to compile (full width)")
    parser.add_argument("--checkpoints", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/qnn_memory"))
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--max-build-bytes", type=int, default=None,
                        help="--qnn-max-build-bytes of every compile [default: fusionc's own]")
    parser.add_argument("--limit-gb", type=float, default=12.0, help="kill a run whose process tree passes this")
    parser.add_argument("--floor-gb", type=float, default=2.0, help="kill a run when MemAvailable falls under this")
    args = parser.parse_args()
    if args.refit:
        record = json.loads(OUT.read_text())
        for label, section in record.items():
            if not (isinstance(section, dict) and "runs" in section):
                continue
            for name, run in section["runs"].items():  # the builds again (the part files are in --work)
                if "peak_child_rss_mb" in run:  # what the profile called it before it said what it is
                    run["peak_child_ru_maxrss_mb"] = run.pop("peak_child_rss_mb")
                folder, profile = args.work / f"{label}_{name}" / "transformer", RESULTS.parent.parent / run["profile"]
                if folder.is_dir() and profile.exists():
                    run["context_builds"] = context_builds(json.loads(profile.read_text()), folder)
            section["fit"] = summarize(section["runs"])
        OUT.write_text(json.dumps(record, indent=1) + "\n")
        return
    if not args.label:
        print("qnn_memory: --label is required (or --refit)", file=sys.stderr)
        sys.exit(2)
    try:
        depths = [int(x) for x in args.layers.split(",")]
    except ValueError:
        print(f"qnn_memory: --layers takes comma-separated integers, not '{args.layers}'", file=sys.stderr)
        sys.exit(2)
    source = args.source.resolve()
    if not (source / "compiler").is_dir():
        print(f"qnn_memory: --source {source} is not a fusionc checkout", file=sys.stderr)
        sys.exit(2)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=source).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "compiler", "passes", "targets"],
                                capture_output=True, text=True, cwd=source).stdout.strip())
    record: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {}
    record.update({"benchmark": "qnn_memory", "model": "SD3-medium transformer config at full width, N of 24 layers",
                   "full_size_parameters": FULL_PARAMS,
                   "what": "peak RSS (MB = MiB, as compile_memory_profile) of the process tree (the compile and its QNN context-build child) per "
                           "stage and QNN step; fits MB = a + b * parameters over the scales that finished"})
    section = record.setdefault(args.label, {})
    section.update({"git_rev": rev + ("+dirty" if dirty else ""), "source": str(source),
                    "compile_args": compile_args(0, args.height, args.width, args.max_build_bytes)[:-1] + ["<2 GB x parameters / 2.03B>"]})
    runs = section.setdefault("runs", {})
    args.work.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        section["fit"] = summarize(runs)
        OUT.write_text(json.dumps(record, indent=1) + "\n")

    for depth in depths:
        config = {**SD3_MEDIUM, "num_layers": depth}
        folder = (args.checkpoints / f"sd3_medium_transformer_layers{depth}").resolve()
        written = write_checkpoint("sd3", folder, config)
        params = parameter_count("sd3", config)
        profile = (RESULTS / f"compile_memory_qnn_{args.label}_layers{depth}.json").resolve()
        out = (args.work / f"{args.label}_layers{depth}").resolve()
        command = [sys.executable, str(Path(__file__).resolve().parent / "compile_memory_profile.py"), "--checkpoint",
                   str(folder), "--out", str(out), "--json", str(profile), "--",
                   *compile_args(params, args.height, args.width, args.max_build_bytes)]
        print(f"[qnn_memory] {args.label} layers{depth} ({params / 1e6:.0f}M parameters) ...", flush=True)
        here, root = os.getcwd(), os.environ.get("FUSIONC_ROOT")
        os.chdir(source)  # the shared venv imports fusionc from the checkout around the working directory,
        os.environ["FUSIONC_ROOT"] = str(source)  # or from $FUSIONC_ROOT once an import has set it
        try:
            result = run_watched(command, int(args.limit_gb * GB), args.work / f"{args.label}_layers{depth}.log",
                                 floor=int(args.floor_gb * GB))
        finally:
            os.chdir(here)
            if root is None:
                os.environ.pop("FUSIONC_ROOT", None)
            else:
                os.environ["FUSIONC_ROOT"] = root
        prof = json.loads(profile.read_text()) if profile.exists() else {"rows": []}
        peaks = row_peaks(prof)
        manifest = out / "manifest.json"
        entry = json.loads(manifest.read_text())["components"]["transformer"] if manifest.exists() else {}
        runs[f"layers{depth}"] = {
            "parameters": params, "fp32_weight_bytes": 4 * params, "checkpoint_bytes": written["bytes"],
            "exit_code": result["exit_code"], "wall_s": result["wall_s"], "killed_at_memory_limit": result[
                "killed_at_memory_limit"], "peak_tree_bytes_watch": result["peak_rss_bytes"],
            "peak_tree_anon_bytes_watch": result["peak_rss_anon_bytes"], "last_stage": result["last_stage"],
            "peak_child_ru_maxrss_mb": prof.get("peak_child_ru_maxrss_mb", prof.get("peak_child_rss_mb")),
            "profile": str(profile.relative_to(RESULTS.resolve().parent.parent)),
            "context_parts": len(entry.get("context_parts", [])) or (1 if entry else None),
            "context_bin_bytes": entry.get("context_bytes"), "qnn_seconds": entry.get("qnn_timings"),
            "rows_order": list(peaks), "rows": peaks, "context_builds": context_builds(prof, out / "transformer"),
            "fusionc_git_rev": prof.get("git_rev"), "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        save()
        print(f"[qnn_memory] layers{depth}: exit {result['exit_code']}, peak tree {result['peak_rss_bytes'] / GB:.2f} GB,"
              f" {result['wall_s']} s", flush=True)
    save()


if __name__ == "__main__":
    main()
