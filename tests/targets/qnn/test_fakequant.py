"""The remedies' fake-quant evaluator gives the QDQ graph's numbers for every config it accepts, from one session."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from fusionc.core.numerics import outputs_psnr, psnr
from fusionc.targets.onnx.quantized import cpu_quant_config
from fusionc.targets.qnn.calibrate import SegmentedModel, collect_stats
from fusionc.targets.qnn.fakequant import FakeQuantEvaluator
from fusionc.targets.qnn.quantize import quantize, save_float, save_model

TEXT = """<ir_version: 10, opset_import: ["" : 21]>
g (float[1,8,12,12] x) => (float[1,144,16] y) {
  c1 = Conv <pads = [1,1,1,1]> (x, w1, b1)
  r1 = Sigmoid (c1)
  s1 = Mul (c1, r1)
  c2 = Conv <pads = [1,1,1,1]> (s1, w2, b2)
  a2 = Add (c2, c1)
  t = Reshape (a2, shape)
  p = Transpose <perm = [0,2,1]> (t)
  y = MatMul (p, wm)
}"""


def _model() -> ir.Model:
    rng = np.random.default_rng(0)
    model = ir.from_proto(onnx.parser.parse_model(TEXT))
    arrays = {"w1": rng.standard_normal((16, 8, 3, 3)) * 0.3, "b1": rng.standard_normal(16) * 0.1,
              "w2": rng.standard_normal((16, 16, 3, 3)) * 0.1, "b2": rng.standard_normal(16) * 0.1,
              "wm": rng.standard_normal((16, 16)) * 0.3, "shape": np.array([1, 16, 144])}
    for name, array in arrays.items():
        array = array.astype(np.int64 if name == "shape" else np.float32)
        value = ir.Value(name=name, const_value=ir.tensor(array, name=name), shape=ir.Shape(array.shape),
                         type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))
        model.graph.register_initializer(value)
        for node in model.graph:
            for i, inp in enumerate(node.inputs):
                if inp is not None and inp.name == name and inp is not value:
                    node.replace_input_with(i, value)
    for node in model.graph:
        node.name = node.outputs[0].name
    ir.passes.common.ShapeInferencePass()(model)  # dtypes of the intermediates: what the rules read
    return model


def test_fake_quant_session_matches_the_qdq_graph(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    float_path = save_float(_model(), tmp_path / "model.float.onnx")
    calibration = [{"x": rng.standard_normal((1, 8, 12, 12)).astype(np.float32)} for _ in range(3)]
    selection = [{"x": rng.standard_normal((1, 8, 12, 12)).astype(np.float32) * 1.2} for _ in range(2)]
    stats = collect_stats(float_path, calibration)
    reference = SegmentedModel(float_path).run(selection, lambda *_: None, set())
    base = cpu_quant_config("w8a8")
    evaluator = FakeQuantEvaluator(float_path, stats, base, selection, reference, tmp_path)
    assert evaluator.describe()["activation_slots"] >= 5 and evaluator.describe()["conversion_slots"] >= 3
    raised = copy.deepcopy(base)
    raised.node_bits["c2"] = 16  # c2 reads s1 and writes a2's input at 16 bits; c1's output crosses widths
    raised_more = copy.deepcopy(raised)
    raised_more.node_bits.update({"c1": 16, "y": 16})
    dbs = []
    for config in (base, raised, raised_more):
        path = tmp_path / f"qdq_{len(dbs)}.onnx"
        save_model(quantize(float_path, stats, config), path)
        exact = SegmentedModel(path).run(selection, lambda *_: None, set())
        fake = evaluator.outputs_for(config)
        for e, f in zip(exact, fake):  # the same numbers but for single-step flips (float rounding, int32 biases)
            step = np.abs(e["y"] - f["y"])
            assert psnr(e["y"], f["y"]) > 55.0 and step.max() <= np.abs(e["y"]).max() / 100, psnr(e["y"], f["y"])
        db = evaluator.psnr(config)
        assert abs(db - outputs_psnr(reference, exact)) < 0.3, (db, outputs_psnr(reference, exact))
        dbs.append(db)
    assert dbs[0] < dbs[1] < dbs[2]  # the slots switch: raising nodes removes their noise
    floated = copy.deepcopy(base)  # the CPU remedy: c2 stays fp32, float weights, no Q/DQ or Cast around it
    floated.float_nodes.add("c2")
    qdq = quantize(float_path, stats, floated)
    c2 = next(n for n in qdq.graph if n.name == "c2")
    assert c2.inputs[1].const_value is not None and c2.inputs[1].dtype == ir.DataType.FLOAT
    assert not any(n.op_type == "Cast" for n in qdq.graph)
    save_model(qdq, tmp_path / "floated.onnx")
    exact_db = outputs_psnr(reference, SegmentedModel(tmp_path / "floated.onnx").run(selection, lambda *_: None, set()))
    assert dbs[0] < evaluator.psnr(floated) <= exact_db + 0.3  # judged with its 8-bit weights: conservative
    other_weights = copy.deepcopy(base)
    other_weights.weight_bits_by_node["c1"] = 16
    assert evaluator.psnr(other_weights) is None  # weights are baked in: the caller falls back to the exact path


def test_range_rule_is_judged_on_the_selection_set(tmp_path: Path) -> None:
    """A calibration spike (one value at 60) stretches min/max 8-bit ranges: clipping at a percentile wins on the
    selection set, which has no spike, and the remedies take it."""
    from fusionc.targets.qnn.remedies import choose_ranges

    rng = np.random.default_rng(2)
    float_path = save_float(_model(), tmp_path / "model.float.onnx")
    calibration = [{"x": rng.standard_normal((1, 8, 12, 12)).astype(np.float32)} for _ in range(3)]
    calibration[0]["x"][0, 0, 0, 0] = 60.0
    selection = [{"x": rng.standard_normal((1, 8, 12, 12)).astype(np.float32)} for _ in range(2)]
    stats = collect_stats(float_path, calibration)
    reference = SegmentedModel(float_path).run(selection, lambda *_: None, set())
    base = cpu_quant_config("w8a8")
    evaluator = FakeQuantEvaluator(float_path, stats, base, selection, reference, tmp_path)
    report: dict = {}
    start = evaluator.psnr(base)
    chosen, db = choose_ranges(base, evaluator.psnr, start, stats, report)
    assert chosen.clip_percentile and db > start + 3.0, report
    assert db == max(t["db"] for t in report["ranges"]) or abs(db - max(t["db"] for t in report["ranges"])) < 0.01
    assert "clip_percentile" in chosen.to_json()
