"""PSNR of every component of every tiny family (fusionc.models.tiny) on the coreml target, per attention form.

Each build is verified by the driver (MIL executor vs the fp32 torch module along a denoising trajectory).
split_einsum_v2 runs with query chunks of 16 (--attention-chunk) so that the tiny 8x8-latent models
exercise the chunked path that SD-scale latents take with Apple's 512. `--palettize 6` adds 6-bit palettized
builds (split_einsum, the ANE form). Each row's `psnr_db` is on the compile's held-out verification set and
`psnr_db_calibration` on its calibration set (fusionc.inputs). The JSON (benchmarks/results/coreml_psnr.json,
with provenance) is rewritten after every build, so a run cut short keeps what it measured.

    /work/tools/heavy python benchmarks/coreml_psnr.py [--work DIR] [--palettize 6]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ATTENTION = ("original", "split_einsum", "split_einsum_v2")
VERIFY_PROMPTS, VERIFY_STEPS = 1, 2  # the held-out verification set per build (small: 4 builds x 6 families)


def main() -> None:
    import os
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fusionc.models.tiny import FAMILIES, write_pipeline
    from fusionc.core.options import CompileOptions
    from fusionc.pipeline import compile_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/coreml_psnr"))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--attention", default=",".join(ATTENTION))
    parser.add_argument("--palettize", default="6", help="also build split_einsum with this --palettize ('' for none)")
    args = parser.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from provenance import Provenance

    prov = Provenance.start()
    rows = []
    inputs: dict = {}  # the input sets of the last build (the same prompts, seeds and steps for every family)

    def write() -> None:
        worst = min(rows, key=lambda r: r["psnr_db"])
        record = {"benchmark": "coreml_psnr", "gate_db": 35.0, "precision": "fp16", "deployment_target": "iOS17",
                  "verification": {"prompts": VERIFY_PROMPTS, "steps": VERIFY_STEPS, "held_out": True},
                  "inputs": inputs, "measured_on": {"psnr_db": "verification (held out)",
                                                    "psnr_db_calibration": "calibration (fp16 overflow ranges were fitted on it)"},
                  "worst": worst, "all_above_gate": all(r["psnr_db"] >= 35.0 for r in rows), "rows": rows,
                  "provenance": prov.finish()}
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "coreml_psnr.json").write_text(json.dumps(record, indent=2) + "\n")

    builds = [(a, None) for a in args.attention.split(",")] + ([("split_einsum", args.palettize)] if args.palettize else [])
    for family in args.families.split(","):
        checkpoint = args.work / "pipes" / family
        if not (checkpoint / "model_index.json").exists():
            write_pipeline(checkpoint, family)
        for attention, palettize in builds:
            options = CompileOptions(target="coreml", attention=attention, verify_steps=VERIFY_STEPS,
                                     verify_prompts=VERIFY_PROMPTS, attention_chunk=16, palettize=palettize)
            start = time.perf_counter()
            name = f"{family}_{attention}" + (f"_palettize{palettize}" if palettize else "")
            manifest = compile_checkpoint(checkpoint, options, args.work / "builds" / name)
            inputs.update({role: {k: v for k, v in spec.items() if k != "count"}
                           for role, spec in (manifest.get("inputs") or {}).items()})
            for comp_name, comp in manifest["components"].items():
                ops = comp["coreml"]["mil_ops"]
                rows.append({"family": family, "attention": attention, "palettize": palettize, "component": comp_name,
                             "psnr_db": comp["psnr_db"], "psnr_db_calibration": comp.get("psnr_db_calibration"),
                             "psnr_by_output": comp["psnr_by_output"], "softmax_ops": ops.get("softmax", 0),
                             "einsum_ops": ops.get("einsum", 0), "mil_ops": sum(ops.values())})
            print(name, {n: c["psnr_db"] for n, c in manifest["components"].items()},
                  f"{time.perf_counter() - start:.0f}s", flush=True)
            write()
    print(json.dumps({"worst": min(rows, key=lambda r: r["psnr_db"])}, indent=2))


if __name__ == "__main__":
    main()
