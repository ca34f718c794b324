"""QDQ rules and insertion on golden graphs: encodings the HTP needs, op types after, numerics on ORT."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from fusionc.passes.generic.cleanup import InferShapesPass
from fusionc.passes.qnn.qdq import TENSOR_KEY, Encoding, InsertQdqPass
from fusionc.targets.qnn.calibrate import TensorStats
from fusionc.targets.qnn.rules import QuantConfig, build_plan

GOLDEN = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[1,4,8,8] x, float[8,4,3,3] W, float[8] B, int64[3] shape) => (float[1,8,64] y) {
  c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
  s = Sigmoid (c)
  m = Mul (c, s)
  y = Reshape (m, shape)
}
"""


def golden() -> ir.Model:
    """Conv -> SiLU -> Reshape; W, B and shape written as graph inputs in the text, made initializers here."""
    model = ir.from_onnx_text(GOLDEN)
    rng = np.random.default_rng(0)
    arrays = {"W": (rng.standard_normal((8, 4, 3, 3)) * np.linspace(0.05, 1, 8)[:, None, None, None]).astype(np.float32),
              "B": rng.standard_normal(8).astype(np.float32) * 0.1, "shape": np.array([1, 8, 64], np.int64)}
    for value in list(model.graph.inputs)[1:]:
        value.const_value = ir.tensor(arrays[value.name], name=value.name)
        model.graph.inputs.remove(value)
        model.graph.register_initializer(value)
    for node in model.graph:  # the plan addresses nodes by name
        node.name = f"n_{node.outputs[0].name}"
    InferShapesPass()(model)
    return model


def feeds(n: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(n)]


def stats_for(model: ir.Model) -> dict[str, TensorStats]:
    """Ranges of every activation over feeds() (the golden graph is tiny: one session, all outputs)."""
    from onnx import helper

    proto = ir.to_proto(model)
    proto.graph.output.extend([helper.make_empty_tensor_value_info(n) for n in ["c", "s", "m"]])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    stats = {n: TensorStats() for n in ["x", "c", "s", "m", "y"]}
    for f in feeds():
        out = dict(zip([o.name for o in session.get_outputs()], session.run(None, f)))
        stats["x"].update(f["x"])
        for n in ["c", "s", "m", "y"]:
            stats[n].update(out[n])
    return stats


def test_w8a16_rules() -> None:
    model = golden()
    plan = build_plan(model, stats_for(model), QuantConfig.for_precision("w8a16"))
    w = plan.weights[("n_c", 1)]
    assert w.dtype == ir.DataType.INT8 and w.axis == 0 and w.scale.shape == (8,) and not w.zero_point.any()
    b = plan.weights[("n_c", 2)]  # int32 bias at input scale x weight scale, per channel
    assert b.dtype == ir.DataType.INT32 and np.allclose(b.scale, plan.activations["x"].scale * w.scale)
    sig = plan.activations["s"]  # the HTP's fixed 16-bit sigmoid encoding
    assert sig.dtype == ir.DataType.UINT16 and float(sig.scale) == pytest.approx(1 / 65536) and int(sig.zero_point) == 0
    assert plan.activations["y"] is plan.activations["m"]  # Reshape shares its input's encoding
    assert all(plan.activations[n].dtype == ir.DataType.UINT16 for n in ("x", "c", "m"))
    assert not plan.conversions


def test_insert_and_numerics() -> None:
    model = golden()
    reference = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    plan = build_plan(model, stats_for(model), QuantConfig.for_precision("w8a16"))
    result = InsertQdqPass(plan)(model)
    assert result.modified
    ops = [n.op_type for n in model.graph]
    assert ops.count("Conv") == 1 and ops.count("QuantizeLinear") == 5 and ops.count("DequantizeLinear") == 5 + 2
    assert [v.name for v in model.graph.outputs] == ["y"]  # the interface name stays on the DQ output
    assert {n.metadata_props[TENSOR_KEY] for n in model.graph if n.op_type == "QuantizeLinear"} == {"x", "c", "s", "m", "y"}
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    for f in feeds(2):
        want, got = reference.run(None, f)[0], session.run(None, f)[0]
        assert np.abs(got - want).max() < 0.02 * np.abs(want).max()
    assert not InsertQdqPass(plan)(model).modified  # already quantized: a second run changes nothing


def test_w8a8_sensitive_node_at_16_bits_gets_converts() -> None:
    model = golden()
    config = QuantConfig.for_precision("w8a8")
    config.node_bits["n_m"] = 16
    plan = build_plan(model, stats_for(model), config)
    assert plan.activations["c"].dtype == ir.DataType.UINT8 and plan.activations["m"].dtype == ir.DataType.UINT16
    assert plan.activations["s"].dtype == ir.DataType.UINT8 and float(plan.activations["s"].scale) == pytest.approx(1 / 256)
    assert {k for k in plan.conversions} == {("c", "n_m"), ("s", "n_m")}  # 8-bit inputs converted for the 16-bit Mul
    InsertQdqPass(plan)(model)
    assert sum(1 for n in model.graph if n.op_type == "QuantizeLinear") == 5 + 2


def test_encoding_math() -> None:
    enc = Encoding.from_range(-1.0, 3.0, ir.DataType.UINT16)
    x = np.linspace(-1, 3, 1001, dtype=np.float32)
    assert np.abs(enc.dequantize(enc.quantize(x)) - x).max() <= float(enc.scale) / 2 + 1e-7
    assert enc.dequantize(enc.quantize(np.zeros(1, np.float32)))[0] == 0.0  # zero is exact
    w = np.array([[1.0, -2.0], [0.5, 0.25]], np.float32)
    pc = Encoding.symmetric_per_channel(w, 0)
    assert np.allclose(pc.scale, [2 / 127, 0.5 / 127]) and pc.quantize(w)[0, 1] == -127


def test_fp16_island_between_casts() -> None:
    """A float node between quantized tensors runs in fp16 between Casts (else the QNN EP quantizes it)."""
    model = ir.from_onnx_text("""
    <ir_version: 10, opset_import: ["" : 21]>
    g (float[1,2,8,4] q, float[1,2,4,8] k) => (float[1,2,8,8] y) {
      s = MatMul (q, k)
      y = Softmax <axis = -1> (s)
    }""")
    for node in model.graph:
        node.name = f"n_{node.outputs[0].name}"
    InferShapesPass()(model)
    rng = np.random.default_rng(0)
    feeds = [{"q": rng.standard_normal((1, 2, 8, 4)).astype(np.float32),
              "k": rng.standard_normal((1, 2, 4, 8)).astype(np.float32)} for _ in range(3)]
    stats = {n: TensorStats() for n in ("q", "k", "s", "y")}
    for f in feeds:
        stats["q"].update(f["q"]), stats["k"].update(f["k"])
        s = f["q"] @ f["k"]
        stats["s"].update(s)
    config = QuantConfig.for_precision("w8a16")
    config.float_nodes = {"n_s"}
    plan = build_plan(model, stats, config)
    assert "s" in plan.activations and plan.fp16_nodes == {"n_s"}  # its output is quantized for the Softmax
    InsertQdqPass(plan)(model)
    ops = [n.op_type for n in model.graph]
    mm = ops.index("MatMul")
    assert ops[mm - 2:mm] == ["Cast", "Cast"] and ops[mm + 1] == "Cast"
    assert next(n for n in model.graph if n.op_type == "MatMul").outputs[0].dtype == ir.DataType.FLOAT16
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds[0])[0]
    s = feeds[0]["q"] @ feeds[0]["k"]
    want = np.exp(s - s.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    assert np.abs(got - want).max() < 1e-3
