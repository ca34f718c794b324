"""HTP-emulator PSNR of every component of the SD-family tiny pipelines, per QNN precision (issue 6).

For each family of `fusionc.models.tiny` (sd15, sd21, no_mid, deep_transformer, sdxl, taesd; seeded random
weights) and each precision, the pipeline is compiled with `compile_checkpoint(--target qnn --device
snapdragon-8-gen-2 --precision P)` (v73), the API `fusionc compile` uses. Per component the row records the
HTP-emulator PSNR against torch over the held-out verification set (the manifest's `psnr_db`: prompts, seeds
and timesteps neither calibration nor the remedies saw), the same on the calibration set (`psnr_db_calibration`:
the generalization gap), the CPU fake-quant PSNR of the same model.qdq.onnx on the verification inputs
(w8a16/w8a8), the remedies' fake-quant PSNR on the selection set, compile
seconds, context bytes and a summary of the remedies. A compile that raises is recorded as an error string.
Every onnxruntime session of this process gets one intra-op thread and torch one thread (`--threads`), so
the sweep can share the machine; the defaults of fusionc itself are untouched.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/qnn_families.py [--families sd15,sdxl] \
        [--precisions w8a16,w8a8,fp16] [--threads 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
GATE_DB = 35.0
DEVICE = "snapdragon-8-gen-2"


def limit_threads(threads: int) -> None:
    """One process-wide cap for this benchmark: torch threads and every onnxruntime session's intra-op pool."""
    import onnxruntime as ort
    import torch

    torch.set_num_threads(threads)
    original = ort.InferenceSession.__init__

    def init(self: Any, path_or_bytes: Any, sess_options: Any = None, *args: Any, **kwargs: Any) -> None:
        options = sess_options if sess_options is not None else ort.SessionOptions()
        if options.intra_op_num_threads == 0:  # 0 = onnxruntime's default (one per core)
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        original(self, path_or_bytes, options, *args, **kwargs)

    ort.InferenceSession.__init__ = init


def remedies_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The remedies report without its node lists: counts per a-priori remedy and per searched remedy."""
    if not report:
        return None
    summary: dict[str, Any] = {k: report.get(k) for k in ("target_db", "initial_db", "final_db",
                                                         "nodes_16bit_activations", "nodes_16bit_weights")}
    summary["a_priori"] = {k: len(v) for k, v in (report.get("a_priori") or {}).items()}
    summary["search"] = [{"remedy": e["remedy"], "candidates": e["candidates"], "all_raised_db": e["all_raised_db"],
                          "raised": e["raised"] if isinstance(e.get("raised"), (int, str)) else len(e.get("raised", [])),
                          "db": e.get("db")} for e in report.get("search", [])]
    return summary


def run_row(pipe: Path, precision: str, out: Path, feeds: dict, expected: dict) -> dict[str, Any]:
    """Compile one family at one precision; per component PSNRs (HTP, CPU fake-quant), bytes, remedies."""
    from fusionc.gates import GateFailedError
    from fusionc.core.options import CompileOptions
    from fusionc.pipeline import compile_checkpoint
    from fusionc.verify import compare
    from qnn_accuracy import SplitRunner

    options = CompileOptions(target="qnn", device=DEVICE, precision=precision)
    start = time.perf_counter()
    try:
        manifest = compile_checkpoint(pipe, options, out)
    except GateFailedError as err:  # a gate failure still wrote the build and its manifest
        manifest = err.manifest
    except Exception as err:  # noqa: BLE001 - a failed compile is a result of the sweep
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:500] if str(err) else ''}",
                "compile_s": round(time.perf_counter() - start, 1), "pass": False}
    row: dict[str, Any] = {"compile_s": round(time.perf_counter() - start, 1), "components": {},
                           "inputs": manifest.get("inputs")}
    for name, comp in manifest["components"].items():
        db = comp.get("psnr_db")
        entry: dict[str, Any] = {"htp_db": None if db is None else round(db, 2),
                                 "calibration_db": comp.get("psnr_db_calibration"), "by_output": comp.get("psnr_by_output"),
                                 "context_bytes": comp.get("context_bytes"), "htp_fp16": comp.get("htp_fp16"),
                                 "timings": comp.get("qnn_timings"), "remedies": remedies_summary(comp.get("remedies"))}
        qdq = out / name / "model.qdq.onnx"
        if qdq.exists() and name in expected:
            entry["cpu_fake_quant_db"] = round(compare(SplitRunner(qdq), expected[name], feeds[name])["psnr_db"], 2)
        entry["pass"] = db is not None and db >= GATE_DB
        row["components"][name] = entry
    row["worst_htp_db"] = min((c["htp_db"] for c in row["components"].values() if c["htp_db"] is not None), default=None)
    row["pass"] = bool(row["components"]) and all(c["pass"] for c in row["components"].values())
    return row


def main() -> None:
    import sys

    from fusionc.models.tiny import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--precisions", default="w8a16,w8a8,fp16")
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--json", type=Path, default=RESULTS / "qnn_families.json")
    parser.add_argument("--resume", action="store_true", help="keep rows of --json measured at this git revision")
    args = parser.parse_args()
    limit_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).parent))  # qnn_accuracy's CPU runner

    from fusionc.checkpoint import load_checkpoint
    from fusionc.models.tiny import write_pipeline
    from fusionc.core.options import CompileOptions
    from fusionc.verify import trajectory_samples
    from provenance import Provenance

    prov = Provenance.start()
    report: dict[str, Any] = {"device": f"{DEVICE} (v73)", "gate_db": GATE_DB, "weights": "seeded random (tiny.py)",
                              "threads": args.threads, "results": {},
                              "measured_on": {"htp_db": "verification (held out)", "cpu_fake_quant_db": "verification (held out)",
                                              "calibration_db": "calibration (the quantizer's ranges were fitted on it)",
                                              "remedies": "selection (the remedies' fake-quant figures)"}}
    done = {}
    if args.json.exists() and args.resume:  # incremental: keep the families already measured by this revision
        old = json.loads(args.json.read_text())
        if (old.get("provenance") or {}).get("git_revision") == prov.git_revision:
            done = old.get("results", {})
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            pipe = write_pipeline(Path(tmp) / f"pipe_{family}", family)
            options = CompileOptions(target="qnn", device=DEVICE)
            feeds, expected = trajectory_samples(load_checkpoint(pipe), options)  # the held-out verification set
            report["results"][family] = dict(done.get(family, {}))
            for precision in args.precisions.split(","):
                if precision in report["results"][family]:
                    continue
                row = run_row(pipe, precision, Path(tmp) / f"{family}_{precision}", feeds, expected)
                report["results"][family][precision] = row
                if "inputs" in row:
                    report["inputs"] = row.pop("inputs")
                shown = row.get("error") or {k: (v["htp_db"], v.get("calibration_db"), v.get("cpu_fake_quant_db"))
                                             for k, v in row["components"].items()}
                print(family, precision, f"{row['compile_s']} s", json.dumps(shown), flush=True)
                _write(report, prov, args.json)
    report["all_pass"] = all(r["pass"] for fam in report["results"].values() for r in fam.values())
    _write(report, prov, args.json)
    print(f"all_pass={report['all_pass']}; wrote {args.json}")


def _write(report: dict[str, Any], prov: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report, "provenance": prov.finish()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
