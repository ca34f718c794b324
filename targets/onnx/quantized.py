"""Quantized onnx builds: static int8 QDQ graphs that ONNX Runtime's CPU provider runs on its int8 kernels.

One quantizer, two consumers: the calibration (targets/qnn/calibrate.py), the rules that turn statistics into
a QdqPlan (targets/qnn/rules.py), the accuracy remedies (targets/qnn/remedies.py) and the Q/DQ insertion
(passes/qnn/qdq.py) are the QNN target's; what differs for a CPU is which ops are quantized and how:

    x ─Q─DQ─┐                                   ORT (level >= extended) fuses each node unit:
    Wq ─DQ──Conv── y ─Q─DQ── (float consumers)    DQ,DQ,Conv,Q   -> QLinearConv   (u8 x s8, per-channel)
    bq ─DQ──┘                                      DQ,DQ,MatMul,Q -> QLinearMatMul (u8 x s8)

- only Conv / ConvTranspose / MatMul / Gemm are quantized (QuantConfig.op_types): MLAS has int8 kernels for them;
  GroupNorm, SiLU, Softmax, LayerNorm and attention stay float (ORT has no int8 kernel for them, Q/DQ around
  them would be pure overhead, and they are where 8-bit costs the most accuracy);
- weights int8 symmetric per output channel (Conv and MatMul), activations uint8 asymmetric over the
  calibration range widened by RANGE_MARGIN_8BIT (held-out inputs must not clip);
- the remedies (targets/qnn/remedies.py), judged on the selection set, first choose the 8-bit range rule
  (calibration min/max with a margin, or a percentile of |x|), then raise what the output cannot afford at
  8 bits to 16-bit Q/DQ. ORT's CPU provider has no 16-bit kernels, so a raised node runs in float between its
  Q/DQ pairs: the remedy costs speed, never correctness, and the manifest says how many nodes it raised.
  Each candidate is judged by one run of a fake-quant session built once (targets/qnn/fakequant.py), not a
  re-quantized, re-saved, segment-by-segment model: 12 s per evaluation on the small UNet under load ~12,
  where the exact path took 134 s on the mid UNet and no remedy fit the budget;
- no fp16 islands (the QNN remedy for attention matmuls): ORT's x86 CPU provider has no fp16 MatMul.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import onnx_ir as ir

from fusionc.core.errors import BadInputError
from fusionc.targets.base import ComponentContext

CPU_INT8_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
# 8-bit activation ranges widened 1.5x past the calibration min/max: held-out inputs (other prompts, seeds,
# timesteps) clip otherwise. Built-in UNet, verification set: 33.2 dB at 1.0x, 40.0 dB at 1.5x, 37.6 dB at 2.0x
# (resolution starts to cost more than clipping); the selection set said 41 dB at 1.0x, so the remedies saw nothing.
RANGE_MARGIN_8BIT = 1.5


def cpu_quant_config(precision: str) -> Any:
    """The shared QuantConfig for ORT's CPU int8 kernels."""
    from fusionc.targets.qnn.rules import QuantConfig

    if precision != "w8a8":
        raise BadInputError(f"--precision {precision} has no CPU quantization: use w8a8")
    return QuantConfig(activation_bits=8, weight_bits=8, per_channel=True, per_channel_matmul=True,
                       op_types=CPU_INT8_OPS, range_margin_8bit=RANGE_MARGIN_8BIT, float_islands="fp32")


def quantize_component(model: ir.Model, ctx: ComponentContext) -> tuple[ir.Model, dict[str, Any]]:
    """Calibrate the float graph on the component's sample inputs, choose remedies, insert Q/DQ.

    Returns the QDQ model (weights in memory or read lazily from the scratch folder) and the manifest fields."""
    from fusionc.targets.qnn.quantize import calibrate, calibration_feeds, quantize, save_float
    from fusionc.targets.qnn.remedies import choose_config

    options = ctx.options
    # ranges from the calibration set; remedies judged on the selection set (other prompts, seeds, timesteps);
    # the verification set, held out, reports the result (compiler/inputs.py)
    feeds = calibration_feeds(ctx.calibration_feeds, options.calibration_samples)
    if not feeds:
        raise BadInputError(f"no calibration inputs for {ctx.name}: --precision {options.precision} needs sample inputs")
    selection = calibration_feeds(ctx.selection_feeds, options.selection_samples) or feeds
    work = Path(ctx.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    float_path = save_float(model, work / "model.float.onnx")
    del model
    timings: dict[str, float] = {}
    start = time.perf_counter()
    stats = calibrate(float_path, feeds, histograms=True)  # histograms: the remedies may clip at a percentile
    timings["calibrate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    remedy_options = dataclasses.replace(options, qnn_fp16_attention=False)  # no fp16 islands on a CPU
    config, report = choose_config(float_path, stats, selection, cpu_quant_config(options.precision), ctx.name,
                                   remedy_options)
    timings["remedies_s"] = time.perf_counter() - start
    start = time.perf_counter()
    qdq = quantize(float_path, stats, config)
    timings["quantize_s"] = time.perf_counter() - start
    extra = {"precision": options.precision, "calibration_samples": len(feeds), "selection_samples": len(selection),
             "quantization": config.to_json(),
             "remedies": report, "quantize_timings": {k: round(v, 2) for k, v in timings.items()}}
    return qdq, extra
