"""QNN rewrites on golden graphs: op types after, numerics before/after on ORT, second runs change nothing."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from fusionc.passes.generic import fused_ops
from fusionc.passes.qnn.rewrites import (ClampAttentionMaskPass, DropNanGuardPass, InferStaticShapesPass,
                                          LowerFusedOpsPass, StaticBatchPass, UpgradeOpsetPass)

FUSED = """
<ir_version: 10, opset_import: ["" : 18, "fusionc" : 1]>
g (float[batch,8,4,4] x, float[8] gamma, float[8] beta, float[batch,2,16,4] q, float[batch,2,16,4] k,
   float[batch,2,16,4] v) => (float[batch,8,4,4] y, float[batch,2,16,4] o) {
  n = fusionc.GroupNorm <num_groups: int = 2, epsilon: float = 1e-5> (x, gamma, beta)
  y = fusionc.Gelu <approximate: string = "none"> (n)
  o = fusionc.ScaledDotProductAttention <scale: float = 0.5> (q, k, v)
}
"""

MASKED = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[1,2,4,4] s) => (float[1,2,4,4] y) {
  mask = Constant <value = float[1,1,4,4] {0, -3.4e38, -3.4e38, -3.4e38, 0, 0, -3.4e38, -3.4e38, 0, 0, 0, -3.4e38, 0, 0, 0, 0}> ()
  a = Add (s, mask)
  w = Softmax <axis = -1> (a)
  nan = IsNaN (w)
  zero = Constant <value_float = 0.0> ()
  safe = Where (nan, zero, w)
  y = Mul (safe, s)
}
"""


def run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v for k, v in feeds.items() if k in {i.name for i in session.get_inputs()}})


def fused_model() -> ir.Model:
    model = ir.from_onnx_text(FUSED)
    fused_ops.ensure_functions_for_calls(model)
    for i, node in enumerate(model.graph):
        node.name = f"fused_{i}"
    return model


def test_lower_fused_ops_keeps_numerics() -> None:
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((1, 8, 4, 4)).astype(np.float32), "gamma": rng.standard_normal(8).astype(np.float32),
             "beta": rng.standard_normal(8).astype(np.float32)}
    feeds.update({n: rng.standard_normal((1, 2, 16, 4)).astype(np.float32) for n in "qkv"})
    model = fused_model()
    before = run(model, feeds)
    assert StaticBatchPass(1)(model).modified and [d for d in model.graph.inputs[0].shape] == [1, 8, 4, 4]
    assert UpgradeOpsetPass()(model).modified and model.opset_imports[""] == 21
    assert any(n.domain == "fusionc" for n in model.graph)  # conversion left the fused calls alone
    assert LowerFusedOpsPass()(model).modified
    ops = [n.op_type for n in model.graph]
    assert "GroupNormalization" in ops and "Gelu" in ops and ops.count("MatMul") == 2 and "Softmax" in ops
    assert not any(n.domain == "fusionc" for n in model.graph) and not model.functions
    InferStaticShapesPass()(model)
    assert all(o.shape is not None and all(isinstance(d, int) for d in o.shape) for n in model.graph for o in n.outputs)
    for a, b in zip(before, run(model, feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not LowerFusedOpsPass()(model).modified and not UpgradeOpsetPass()(model).modified


def test_mask_clamp_and_nan_guard() -> None:
    model = ir.from_onnx_text(MASKED)
    from fusionc.passes.generic.cleanup import CleanUpGraphPass

    CleanUpGraphPass()(model)  # the Constant mask becomes an initializer
    s = {"s": np.random.default_rng(1).standard_normal((1, 2, 4, 4)).astype(np.float32) * 3}
    before = run(model, s)[0]
    assert ClampAttentionMaskPass()(model).modified and DropNanGuardPass()(model).modified
    assert [n.op_type for n in model.graph] == ["Add", "Softmax", "Mul"]
    add = next(n for n in model.graph if n.op_type == "Add")
    assert float(add.inputs[1].const_value.numpy().min()) == -100.0
    np.testing.assert_allclose(run(model, s)[0], before, rtol=1e-6, atol=1e-6)
    assert not ClampAttentionMaskPass()(model).modified and not DropNanGuardPass()(model).modified


LAYER_NORM_NO_BIAS = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[2, 5, 8] x) => (float[2, 5, 8] y, float[2, 5, 8] z) {
    scale = Constant <value = float[8] {1, 1, 1, 1, 1, 1, 1, 1}> ()
    beta = Constant <value = float[8] {1, 2, 3, 4, 5, 6, 7, 8}> ()
    y = LayerNormalization <axis = -1, epsilon = 0.000001> (x, scale)
    z = LayerNormalization <axis = -1, epsilon = 0.000001> (x, scale, beta)
}
"""


def test_layer_norm_without_affine_gets_a_zero_bias_and_keeps_its_numbers() -> None:
    """SD3/PixArt's LayerNorm(elementwise_affine=False) exports with two inputs, which the HTP builder refuses."""
    import onnx

    from fusionc.passes.qnn.rewrites import GiveLayerNormABiasPass

    model = ir.serde.deserialize_model(onnx.parser.parse_model(LAYER_NORM_NO_BIAS))
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    before = ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})
    assert GiveLayerNormABiasPass()(model).modified
    norms = [n for n in model.graph if n.op_type == "LayerNormalization"]
    assert all(len(n.inputs) == 3 and n.inputs[2] is not None for n in norms)
    after = ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)
    assert not GiveLayerNormABiasPass()(model).modified


RMS_SCALE = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[1, 5, 8] x) => (float[1, 5, 8] y, float[1, 5, 8] z) {
    w = Constant <value = float[8] {1, 2, 3, 4, 5, 6, 7, 8}> ()
    y = Mul (w, x)
    z = Mul (x, w)
}
"""


def test_constant_first_operand_moves_last_with_full_rank() -> None:
    import onnx

    from fusionc.passes.generic.cleanup import FoldConstantsPass
    from fusionc.passes.qnn.rewrites import ConstantOperandsLastPass

    model = ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(onnx.parser.parse_model(RMS_SCALE)))
    FoldConstantsPass()(model)  # the Constant node becomes an initializer, as after cleanup
    x = np.random.default_rng(0).standard_normal((1, 5, 8)).astype(np.float32)
    before = ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})
    assert ConstantOperandsLastPass()(model).modified
    muls = [n for n in model.graph if n.op_type == "Mul"]
    assert all(n.inputs[0].const_value is None and n.inputs[1].const_value is not None for n in muls)
    assert muls[0].inputs[1].const_value.shape == (1, 1, 8)  # the one that was first; the other is unchanged
    after = ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)
    assert not ConstantOperandsLastPass()(model).modified
