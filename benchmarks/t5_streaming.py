"""Peak memory of a T5-XXL-width encoder compile, loaded (today's path before streaming) and streamed
(fusionc.streaming), at a few layer counts; and the full-size (24 layers) peak projected from them.

Each run is dit_scale's t5xxl part command (compile_memory_profile.py: RSS per stage and per pass) on a T5 with
T5-XXL's width (d_model 4096, d_ff 10240, 64 heads, vocab 32128) and `--layers` of its 24 layers, written block by
block by dit_scale.write_checkpoint; the two modes differ only in FUSIONC_STREAM_WEIGHTS_BYTES (0: stream, 2^50:
load). The projection is per stage, linear in the layer count through the two largest counts measured (every T5
layer is the same size), and the full-size peak is the largest projected stage peak: a projection, not a measurement.

    /work/tools/heavy .venv/bin/python benchmarks/t5_streaming.py --layers 2,4 --checkpoints /tmp/t5s/ck --work /tmp/t5s/work

Writes benchmarks/results/t5_streaming.json (runs merged by mode and layer count, so a later call can add runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from dit_scale import T5_XXL, parameter_count, part_command, write_checkpoint  # noqa: E402
from sdxl_scale import RESULTS, git_rev, run_watched  # noqa: E402

OUT = RESULTS / "t5_streaming.json"
MODES = {"loaded": str(1 << 50), "streamed": "0"}  # FUSIONC_STREAM_WEIGHTS_BYTES
FULL_LAYERS = T5_XXL["num_layers"]


def stage_peaks(profile: Path) -> dict[str, dict[str, int]]:
    """Peak RSS and anonymous RSS (MB) of each stage of a compile_memory_profile JSON (passes inside `passes`)."""
    if not profile.exists():
        return {}
    rows = json.loads(profile.read_text()).get("rows", [])
    peaks: dict[str, dict[str, int]] = {}
    for row in rows:
        if row["kind"] != "stage":
            continue
        name = row["name"].split(": ", 1)[-1]
        peaks[name] = {"peak_mb": row["peak_mb"], "peak_anon_mb": row["peak_anon_mb"]}
    return peaks


def run(mode: str, layers: int, args: argparse.Namespace) -> dict[str, Any]:
    config = {**T5_XXL, "num_layers": layers}
    checkpoint = args.checkpoints / f"t5_xxl_layers{layers}"
    written = write_checkpoint("t5", checkpoint, config)
    params = parameter_count("t5", config)
    out = args.work / f"t5_{mode}_layers{layers}"
    profile = RESULTS / f"compile_memory_t5_{mode}_layers{layers}.json"
    ns = argparse.Namespace(scale="layers", height=512, width=512)
    command, asked = part_command("t5xxl_coreml", checkpoint, out, profile, ns, params)
    os.environ["FUSIONC_STREAM_WEIGHTS_BYTES"] = MODES[mode]
    args.work.mkdir(parents=True, exist_ok=True)
    result = run_watched(command, int(args.limit_gb * (1 << 30)), args.work / f"t5_{mode}_layers{layers}.log",
                         floor=int(args.floor_gb * (1 << 30)))
    manifest = out / "manifest.json"
    entry = json.loads(manifest.read_text())["components"]["text_encoder"] if manifest.exists() else {}
    return {"layers": layers, "parameters": params, "weight_bytes": written["bytes"], "mode": mode,
            "stream_env": MODES[mode], "command": " ".join(command[1:]), "asked": asked, "exit_code": result["exit_code"],
            "wall_s": result["wall_s"], "peak_rss_bytes": result["peak_rss_bytes"],
            "killed_at_memory_limit": result.get("killed_at_memory_limit"),
            "memory_limit_bytes": int(args.limit_gb * (1 << 30)), "last_stage": result.get("last_stage"),
            "psnr_db": entry.get("psnr_db"), "bytes": entry.get("bytes"),
            "memory_profile": str(profile.relative_to(Path(__file__).parent.parent)),
            "stage_peaks": stage_peaks(profile)}


def project(runs: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """Each stage's peak RSS at FULL_LAYERS, linear through the two largest layer counts of `mode` that finished."""
    done = sorted((r for r in runs if r["mode"] == mode and r["exit_code"] == 0), key=lambda r: r["layers"])
    if len(done) < 2:
        return None
    low, high = done[-2], done[-1]
    span = high["layers"] - low["layers"]
    stages: dict[str, int] = {}
    for name in high["stage_peaks"]:
        if name not in low["stage_peaks"]:
            continue
        a, b = low["stage_peaks"][name]["peak_mb"], high["stage_peaks"][name]["peak_mb"]
        stages[name] = round(b + (b - a) / span * (FULL_LAYERS - high["layers"]))
    worst = max(stages, key=stages.get) if stages else None
    return {"from_layers": [low["layers"], high["layers"]], "to_layers": FULL_LAYERS, "stage_peak_mb": stages,
            "peak_mb": stages.get(worst), "peak_stage": worst,
            "method": "per stage, linear in the layer count through the two runs; a projection, not a measurement"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="2,4", help="layer counts to run, comma-separated [default: 2,4]")
    parser.add_argument("--modes", default="loaded,streamed")
    parser.add_argument("--checkpoints", type=Path, required=True, help="where the T5 folders are written/reused")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--limit-gb", type=float, default=12.0, help="kill a run whose process tree passes this")
    parser.add_argument("--floor-gb", type=float, default=2.0, help="kill a run when MemAvailable falls under this")
    args = parser.parse_args()
    try:
        layers = [int(x) for x in args.layers.split(",")]
    except ValueError:
        print(f"t5_streaming: --layers {args.layers!r} must be whole numbers, comma-separated", file=sys.stderr)
        sys.exit(2)
    modes = args.modes.split(",")
    if any(m not in MODES for m in modes) or any(n < 1 or n > FULL_LAYERS for n in layers):
        print(f"t5_streaming: --modes from {', '.join(MODES)}, --layers from 1 to {FULL_LAYERS}", file=sys.stderr)
        sys.exit(2)
    record: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {}
    runs = {(r["mode"], r["layers"]): r for r in record.get("runs", [])}
    for mode in modes:
        for n in layers:
            runs[(mode, n)] = {**run(mode, n, args), "git_rev": git_rev()}
            record.update({"benchmark": "t5_streaming", "config": {k: v for k, v in T5_XXL.items() if k != "num_layers"},
                           "runs": sorted(runs.values(), key=lambda r: (r["mode"], r["layers"]))})
            record["projection"] = {m: project(record["runs"], m) for m in MODES}
            OUT.write_text(json.dumps(record, indent=1) + "\n")
            print(f"t5_streaming: {mode} layers {n}: exit {runs[(mode, n)]['exit_code']}, "
                  f"peak {runs[(mode, n)]['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
