"""FuseMultiHeadAttentionPass: fusionc attention between head split/merge -> com.microsoft::MultiHeadAttention."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from fusionc.passes.generic import CleanUpGraphPass, FuseAttentionPass
from fusionc.passes.ort.attention import FuseMultiHeadAttentionPass

B, S, L, H, D = 2, 6, 5, 2, 4


def _graph(masked: bool = False) -> str:
    mask_in = ", float[1,1,6,5] mask" if masked else ""
    add = "s2 = Add(s, mask)" if masked else "s2 = Identity(s)"
    return f"""
    <ir_version: 8, opset_import: ["": 18]>
    g (float[2,6,8] xq, float[2,5,8] xk, float[2,5,8] xv{mask_in}) => (float[2,6,8] y) {{
        shp = Constant <value = int64[4] {{2, -1, 2, 4}}> ()
        back = Constant <value = int64[3] {{2, -1, 8}}> ()
        q4 = Reshape(xq, shp)
        k4 = Reshape(xk, shp)
        v4 = Reshape(xv, shp)
        q = Transpose <perm = [0, 2, 1, 3]> (q4)
        k = Transpose <perm = [0, 2, 1, 3]> (k4)
        v = Transpose <perm = [0, 2, 1, 3]> (v4)
        kt = Transpose <perm = [0, 1, 3, 2]> (k)
        sc = Constant <value = float {{0.5}}> ()
        qs = Mul(q, sc)
        s = MatMul(qs, kt)
        {add}
        p = Softmax <axis = -1> (s2)
        o = MatMul(p, v)
        ot = Transpose <perm = [0, 2, 1, 3]> (o)
        y = Reshape(ot, back)
    }}"""


def _run(model: ir.Model, feeds: dict) -> np.ndarray:
    proto = ir.to_proto(model)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _model(masked: bool = False) -> ir.Model:
    model = ir.from_proto(onnx.shape_inference.infer_shapes(onnx.parser.parse_model(_graph(masked))))
    CleanUpGraphPass()(model)  # constants folded, shapes inferred: the form the pipeline hands the fusions
    FuseAttentionPass()(model)
    return model


def test_attention_becomes_one_multi_head_attention_with_equal_outputs() -> None:
    rng = np.random.default_rng(0)
    feeds = {"xq": rng.standard_normal((2, 6, 8)).astype(np.float32),
             "xk": rng.standard_normal((2, 5, 8)).astype(np.float32),
             "xv": rng.standard_normal((2, 5, 8)).astype(np.float32)}
    model = _model()
    assert any(n.op_type == "ScaledDotProductAttention" for n in model.graph)
    before = _run(model, feeds)
    assert FuseMultiHeadAttentionPass()(model).modified
    assert [n.op_type for n in model.graph if n.op_type != "Constant"] == ["MultiHeadAttention"]
    mha = next(iter(model.graph))
    assert mha.domain == "com.microsoft" and mha.attributes["num_heads"].as_int() == 2
    assert not model.functions and "fusionc" not in model.opset_imports
    np.testing.assert_allclose(_run(model, feeds), before, rtol=1e-5, atol=1e-5)
    assert not FuseMultiHeadAttentionPass()(model).modified


def test_masked_attention_is_left_alone() -> None:
    model = _model(masked=True)
    if not any(n.op_type == "ScaledDotProductAttention" for n in model.graph):
        raise AssertionError("the generic fusion should have produced the masked SDPA overload")
    assert not FuseMultiHeadAttentionPass()(model).modified
    assert not any(n.op_type == "MultiHeadAttention" for n in model.graph)
