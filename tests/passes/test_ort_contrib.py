"""UseOrtGeluPass: fusionc::Gelu -> com.microsoft::Gelu / FastGelu, same numbers on onnxruntime, one kernel after ORT's optimizations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from fusionc.passes.generic import CleanUpGraphPass, FuseGeluPass
from fusionc.passes.ort.contrib import UseOrtGeluPass
from test_activation import ERF_EXPORTED, TANH_EXPORTED


def _with_bias(text: str) -> str:
    """The FF shape: y = gelu(x @ W + b), x [2,3,8]."""
    return ('<ir_version: 8, opset_import: ["": 18]>\n' + text.replace("float[2,3,8] x)", "float[2,3,8] xin)")
            .replace("{", "{\n    w = Constant <value = float[8,8] {" + ", ".join(
                str(round(0.1 * ((i * 7) % 11 - 5), 2)) for i in range(64)) + "}> ()\n"
                     "    b = Constant <value = float[8] {0.1, -0.2, 0.3, 0.0, 0.5, -0.1, 0.2, 0.05}> ()\n"
                     "    xm = MatMul(xin, w)\n    x = Add(xm, b)", 1))


def _run(model: ir.Model, path: Path, feeds: dict, optimized: Path | None = None) -> np.ndarray:
    ir.save(model, path)
    options = ort.SessionOptions()
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("text, op_type", [(ERF_EXPORTED, "Gelu"), (TANH_EXPORTED, "FastGelu")])
def test_gelu_becomes_one_ort_kernel(tmp_path: Path, text: str, op_type: str) -> None:
    model = ir.from_proto(onnx.parser.parse_model(_with_bias(text)))
    CleanUpGraphPass()(model)
    assert FuseGeluPass()(model).modified
    feeds = {"xin": np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)}
    before = _run(model, tmp_path / "before.onnx", feeds)
    assert UseOrtGeluPass()(model).modified
    assert [(n.domain, n.op_type) for n in model.graph if n.op_type not in ("MatMul", "Add")] == [
        ("com.microsoft", op_type)]
    assert not model.functions  # the fusionc::Gelu function is gone with its last call
    after = _run(model, tmp_path / "after.onnx", feeds, tmp_path / "optimized.onnx")
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    fused = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert fused[-1] == op_type and not {"Erf", "Tanh", "Div", "Pow"} & set(fused), fused  # one kernel at load
    assert not UseOrtGeluPass()(model).modified
