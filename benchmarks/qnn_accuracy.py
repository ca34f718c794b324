"""PSNR per component and precision on the HTP emulator: onnxruntime's stock QNN quantization vs fusionc.

For each precision, fusionc's build comes from `compile_checkpoint(--target qnn --precision P)` (its manifest
holds the HTP-emulator PSNR over the held-out verification set, and over the calibration set beside it); the same build's model.qdq.onnx also runs on
onnxruntime's CPU (fake-quant) to show how closely the HTP follows the QDQ graph. The stock path is what a
user of onnxruntime's QNN tooling does: the dynamo export at opset 21 (batch fixed to 1 so the HTP can
compile it), `qnn_preprocess_model`, `get_qnn_qdq_config(activation, weight=QUInt8)` + `quantize` with a
data reader over the same calibration set fusionc uses (verified on the same held-out set), then the same QNN EP context build and emulator.

    python benchmarks/qnn_accuracy.py [--checkpoint DIR] [--precisions w8a16,w8a8,fp16] [--json FILE]
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

import numpy as np

RESULTS = Path(__file__).parent / "results"
COMPONENTS = ("text_encoder", "unet", "vae_decoder")


class SplitRunner:
    """An onnxruntime CPU session run item by item (contexts and QDQ graphs are batch 1)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from fusionc.targets.qnn.quantize import split_batch

        parts = [self.session.run(None, {k: v for k, v in f.items() if k in self.inputs})
                 for f in split_batch(feeds)]
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(self.outputs)}


def stock_component(checkpoint: Any, name: str, options: Any, feeds: list, expected: list, work: Path,
                    precision: str, calibration: list) -> dict[str, Any]:
    """onnxruntime's QNN QDQ flow on the opset-21 export of one component, run on CPU and on the HTP."""
    import onnx_ir as ir
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model

    from fusionc.export import component_spec, export_component
    from fusionc.passes.generic.cleanup import CleanUpGraphPass
    from fusionc.targets.qnn import HtpRunner
    from fusionc.targets.qnn.ep import HtpConfig, compile_context
    from fusionc.targets.qnn.quantize import calibration_feeds
    from fusionc.passes.qnn.rewrites import InferStaticShapesPass, StaticBatchPass
    from fusionc.verify import compare

    result: dict[str, Any] = {}
    model = export_component(component_spec(checkpoint, name, options), 21)
    for step in (StaticBatchPass(1), CleanUpGraphPass(), InferStaticShapesPass()):
        step(model)
    float_path, pre_path, qdq_path = work / f"{name}.f32.onnx", work / f"{name}.pre.onnx", work / f"{name}.qdq.onnx"
    ir.save(model, float_path)
    if not qnn_preprocess_model(str(float_path), str(pre_path)):
        pre_path = float_path
    cal = calibration_feeds(calibration, options.calibration_samples)  # the calibration set fusionc uses

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(cal)

        def get_next(self):  # noqa: ANN201 - onnxruntime's interface
            return next(self.items, None)

    activation = QuantType.QUInt16 if precision == "w8a16" else QuantType.QUInt8
    config = get_qnn_qdq_config(str(pre_path), Reader(), activation_type=activation, weight_type=QuantType.QUInt8)
    start = time.perf_counter()
    quantize(str(pre_path), str(qdq_path), config)
    result["quantize_s"] = round(time.perf_counter() - start, 2)
    result["cpu_fake_quant_db"] = round(compare(SplitRunner(qdq_path), expected, feeds)["psnr_db"], 2)
    try:
        context = compile_context(qdq_path, work / f"{name}.ctx.onnx", HtpConfig())[0]
        result["htp_db"] = round(compare(HtpRunner(context), expected, feeds)["psnr_db"], 2)
    except Exception as err:  # noqa: BLE001 - a stock graph the HTP rejects is a result, not a crash
        result["htp_db"] = None
        result["htp_error"] = str(err).splitlines()[0][:400]
    return result


def fusionc_precision(checkpoint_path: Path | None, precision: str, out: Path, feeds: dict,
                      expected: dict) -> dict[str, Any]:
    from fusionc.core.options import CompileOptions
    from fusionc.pipeline import compile_checkpoint
    from fusionc.verify import compare

    start = time.perf_counter()
    manifest = compile_checkpoint(checkpoint_path, CompileOptions(target="qnn", precision=precision), out)
    result: dict[str, Any] = {"compile_s": round(time.perf_counter() - start, 1), "inputs": manifest.get("inputs")}
    for name, comp in manifest["components"].items():
        entry: dict[str, Any] = {"htp_db": round(comp["psnr_db"], 2), "calibration_db": comp.get("psnr_db_calibration"),
                                 "by_output": comp.get("psnr_by_output"),
                                 "context_bytes": comp.get("context_bytes"), "timings": comp.get("qnn_timings"),
                                 "remedies": comp.get("remedies")}
        qdq = out / name / "model.qdq.onnx"
        if qdq.exists() and name in expected:
            entry["cpu_fake_quant_db"] = round(compare(SplitRunner(qdq), expected[name], feeds[name])["psnr_db"], 2)
        result[name] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the built-in model")
    parser.add_argument("--precisions", default="w8a16,w8a8,fp16")
    parser.add_argument("--json", type=Path, default=RESULTS / "qnn_accuracy.json")
    parser.add_argument("--no-stock", action="store_true")
    args = parser.parse_args()

    from fusionc.checkpoint import load_checkpoint
    from fusionc.core.context import CALIBRATION, VERIFICATION
    from fusionc.core.options import CompileOptions
    from fusionc.inputs import input_sets
    from provenance import Provenance

    prov = Provenance.start(args.checkpoint)
    options = CompileOptions(target="qnn")
    checkpoint = load_checkpoint(args.checkpoint)
    sets = input_sets(checkpoint, options, list(COMPONENTS), (CALIBRATION, VERIFICATION))
    feeds, expected = sets[VERIFICATION].feeds, sets[VERIFICATION].outputs
    report: dict[str, Any] = {"device": "snapdragon-8-gen-2 (v73)", "gate_db": 35.0,
                              "inputs": {r: s.describe() for r, s in sets.items()},
                              "measured_on": {"htp_db": "verification (held out)", "cpu_fake_quant_db": "verification (held out)",
                                              "calibration_db": "calibration (fusionc's ranges were fitted on it)",
                                              "stock_onnxruntime": "verification (held out); calibrated on the calibration set"},
                              "fusionc": {}, "stock_onnxruntime": {}}

    def write() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**report, "provenance": prov.finish()}, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions.split(","):
            report["fusionc"][precision] = fusionc_precision(args.checkpoint, precision, Path(tmp) / precision,
                                                             feeds, expected)
            print(precision, "fusionc", json.dumps({k: (v.get("htp_db"), v.get("calibration_db"))
                                                   for k, v in report["fusionc"][precision].items()
                                                   if isinstance(v, dict) and "htp_db" in v}), flush=True)
            write()
            if args.no_stock or precision == "fp16":
                continue
            stock = {}
            for name in COMPONENTS:
                if name not in feeds:
                    continue
                work = Path(tmp) / f"stock_{precision}"
                work.mkdir(exist_ok=True)
                try:
                    stock[name] = stock_component(checkpoint, name, options, feeds[name], expected[name], work,
                                                  precision, sets[CALIBRATION].feeds[name])
                except Exception as err:  # noqa: BLE001
                    stock[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
                    traceback.print_exc()
            report["stock_onnxruntime"][precision] = stock
            print(precision, "stock", json.dumps({k: v.get("htp_db") for k, v in stock.items()}), flush=True)
            write()
    write()
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
