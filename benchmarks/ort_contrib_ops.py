"""ORT contrib ops with CPU kernels vs what fusionc's onnx build otherwise runs, on SD-1.5 UNet block shapes.

Each case is a small graph in two forms, timed in the same process with 2 intra-op threads, ORT's default
optimizations (what an app gets), median of RUNS after a warm-up; the forms alternate so machine load hits
both alike. Cases:

- gelu: MatMul + bias + GELU as the fusionc::Gelu function (ORT inlines it: Div/Erf/Add/Mul/Mul) vs
  com.microsoft::Gelu (passes/ort/contrib.py UseOrtGeluPass; ORT folds the bias into BiasGelu);
- skip_layernorm: residual Add + LayerNormalization vs com.microsoft::SkipLayerNormalization.

    python benchmarks/ort_contrib_ops.py     # seconds; writes benchmarks/results/ort_contrib_ops.json
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

RESULTS = Path(__file__).parent / "results"
RUNS = 15
# (tokens S, channels C) of the UNet's transformer blocks at 64x64 latents: 4096x320, 1024x640, 256x1280
SHAPES = [(4096, 320), (1024, 640), (256, 1280)]


def _with_weights(text: str, arrays: dict[str, np.ndarray]) -> ir.Model:
    model = ir.from_proto(onnx.parser.parse_model(text))
    for name, array in arrays.items():
        value = ir.Value(name=name, const_value=ir.tensor(array, name=name), shape=ir.Shape(array.shape),
                         type=ir.TensorType(ir.DataType.FLOAT))
        model.graph.register_initializer(value)
        for node in model.graph:
            for i, inp in enumerate(node.inputs):
                if inp is not None and inp.name == name and inp is not value:
                    node.replace_input_with(i, value)
    return model


def gelu_forms(tokens: int, channels: int) -> tuple[ir.Model, ir.Model]:
    from fusionc.passes.generic import CleanUpGraphPass, FuseGeluPass
    from fusionc.passes.ort.contrib import UseOrtGeluPass

    rng = np.random.default_rng(0)
    hidden = 4 * channels
    text = f"""<ir_version: 8, opset_import: ["": 18]>
    g (float[1,{tokens},{channels}] x) => (float[1,{tokens},{hidden}] y) {{
        sqrt2 = Constant <value = float {{1.4142135381698608}}> ()
        one = Constant <value = float {{1.0}}> ()
        half = Constant <value = float {{0.5}}> ()
        xm = MatMul(x, w)
        h = Add(xm, b)
        s = Div(h, sqrt2)
        e = Erf(s)
        e1 = Add(e, one)
        m = Mul(half, e1)
        y = Mul(h, m)
    }}"""
    arrays = {"w": rng.standard_normal((channels, hidden)).astype(np.float32) * 0.05,
              "b": rng.standard_normal(hidden).astype(np.float32)}
    forms = []
    for contrib in (False, True):
        model = _with_weights(text, arrays)
        CleanUpGraphPass()(model)
        FuseGeluPass()(model)
        if contrib:
            UseOrtGeluPass()(model)
        forms.append(model)
    return forms[0], forms[1]


def skip_layernorm_forms(tokens: int, channels: int) -> tuple[ir.Model, ir.Model]:
    rng = np.random.default_rng(0)
    arrays = {"gamma": rng.standard_normal(channels).astype(np.float32),
              "beta": rng.standard_normal(channels).astype(np.float32)}
    shape = f"float[1,{tokens},{channels}]"
    plain = f"""<ir_version: 8, opset_import: ["": 18]>
    g ({shape} a, {shape} r) => ({shape} y, {shape} s) {{
        s = Add(a, r)
        y = LayerNormalization <axis = -1, epsilon = 0.00001> (s, gamma, beta)
    }}"""
    contrib = f"""<ir_version: 8, opset_import: ["": 18, "com.microsoft": 1]>
    g ({shape} a, {shape} r) => ({shape} y, {shape} s) {{
        y, mean, inv, s = com.microsoft.SkipLayerNormalization <epsilon = 0.00001> (a, r, gamma, beta)
    }}"""
    return _with_weights(plain, arrays), _with_weights(contrib, arrays)


def time_forms(forms: tuple[ir.Model, ir.Model], work: Path) -> dict[str, Any]:
    sessions, feeds = [], None
    for index, model in enumerate(forms):
        path = work / f"form{index}.onnx"
        ir.save(model, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        sessions.append(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
    rng = np.random.default_rng(1)
    feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in sessions[0].get_inputs()}
    outs = [s.run(None, feeds)[0] for s in sessions]  # warm-up, and the two forms agree
    error = float(np.abs(outs[0] - outs[1]).max() / max(np.abs(outs[0]).max(), 1e-12))
    times: list[list[float]] = [[], []]
    for _ in range(RUNS):
        for index, session in enumerate(sessions):
            start = time.perf_counter()
            session.run(None, feeds)
            times[index].append(time.perf_counter() - start)
    base, contrib = (float(np.median(t)) for t in times)
    return {"plain_ms": round(base * 1e3, 3), "contrib_ms": round(contrib * 1e3, 3),
            "contrib_vs_plain": round(contrib / base, 3), "max_rel_diff": error}


def main() -> None:
    work = Path("benchmarks/work/ort_contrib_ops")
    work.mkdir(parents=True, exist_ok=True)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result: dict[str, Any] = {"benchmark": "ort_contrib_ops", "git_rev": rev, "onnxruntime": ort.__version__,
                              "threads": 2, "runs": RUNS, "load_average_before": [round(x, 2) for x in os.getloadavg()],
                              "cases": {}}
    for case, make in (("gelu", gelu_forms), ("skip_layernorm", skip_layernorm_forms)):
        for tokens, channels in SHAPES:
            result["cases"][f"{case} {tokens}x{channels}"] = time_forms(make(tokens, channels), work)
            print(case, tokens, channels, result["cases"][f"{case} {tokens}x{channels}"], flush=True)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ort_contrib_ops.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
