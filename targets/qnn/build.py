"""`QnnTarget.lower`: one component from the prepared float graph to QDQ ONNX, EP-context model and .bin.

    <build>/<name>/model.qdq.onnx        the quantized graph (w8a16 / w8a8), runnable on any ORT
    <build>/<name>/model.onnx            (fp16 only) the float graph the context was built from
    <build>/<name>/model.encodings.json  AIMET-format encodings (qnn-onnx-converter --quantization_overrides)
    <build>/<name>/model_ctx.onnx        ONNX Runtime EP-context model (EPContext node, .bin kept outside)
    <build>/<name>/model_ctx_qnn.bin     the QNN HTP context binary for the device's Hexagon arch
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx_ir as ir

from fusionc.devices import get_device
from fusionc.errors import BadInputError
from fusionc.targets.base import ComponentContext, LoweredComponent
from fusionc.targets.qnn.ep import HtpConfig, compile_context
from fusionc.targets.qnn.quantize import calibrate, calibration_feeds, quantize, save_float, save_model
from fusionc.targets.qnn.rules import QuantConfig

PRECISIONS = ("w8a16", "w8a8", "fp16")


def _interface(values: Any) -> dict[str, dict[str, Any]]:
    return {v.name: {"shape": [d if isinstance(d, int) else str(d) for d in v.shape],
                     "dtype": v.dtype.name.lower() if v.dtype is not None else None} for v in values}


def build_component(model: ir.Model, build_dir: Path, ctx: ComponentContext) -> LoweredComponent:
    options = ctx.options
    if options.precision not in PRECISIONS:
        raise BadInputError(f"--precision {options.precision} is not a QNN precision: choose {', '.join(PRECISIONS)}")
    device = get_device(options.device, "qnn")
    htp = HtpConfig.from_device(device)
    out = Path(build_dir) / ctx.name
    out.mkdir(parents=True, exist_ok=True)
    inputs, outputs = _interface(model.graph.inputs), _interface(model.graph.outputs)
    float_path = save_float(model, Path(ctx.work_dir) / "model.float.onnx")
    del model
    timings: dict[str, float] = {}
    extra: dict[str, Any] = {"precision": options.precision, "htp_arch": f"v{htp.arch}", "soc_model": htp.soc_model}
    if options.precision == "fp16":
        files = save_model(ir.load(float_path), out / "model.onnx")
        source, htp = files[0], replace(htp, fp16=True)
    else:
        from fusionc.targets.qnn.encodings import write_encodings
        from fusionc.targets.qnn.remedies import choose_config

        feeds = calibration_feeds(ctx.sample_feeds, options.calibration_samples)
        if not feeds:
            raise BadInputError(f"no calibration inputs for {ctx.name}: QNN quantization needs sample inputs")
        start = time.perf_counter()
        stats = calibrate(float_path, feeds, histograms=options.precision == "w8a8")  # 8-bit may clip
        timings["calibrate_s"] = time.perf_counter() - start
        start = time.perf_counter()
        config, report = choose_config(float_path, stats, feeds, QuantConfig.for_precision(options.precision),
                                       ctx.name, options)
        timings["remedies_s"] = time.perf_counter() - start
        if config.float_nodes:  # fp16 islands chosen by the remedies: the HTP runs float ops in fp16
            htp = replace(htp, fp16=True)
        qdq = quantize(float_path, stats, config)
        files = save_model(qdq, out / "model.qdq.onnx")
        files.append(write_encodings(qdq, out / "model.encodings.json"))
        del qdq
        source = files[0]
        extra.update(calibration_samples=len(feeds), quantization=config.to_json(), remedies=report)
    start = time.perf_counter()
    files += compile_context(source, out / "model_ctx.onnx", htp)
    timings["context_build_s"] = time.perf_counter() - start
    extra["context_bytes"] = sum(f.stat().st_size for f in files if f.suffix == ".bin")
    extra["qnn_timings"] = {k: round(v, 2) for k, v in timings.items()}
    return LoweredComponent([str(Path(f).relative_to(build_dir)) for f in files], inputs, outputs, extra)
