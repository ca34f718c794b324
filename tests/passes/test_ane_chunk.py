"""passes/generic/chunk.py: a split into N chunks runs, chunk after chunk on onnxruntime, to the same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from fusionc.passes.generic.chunk import plan_split, split_model, total_weight_bytes


def ladder(layers: int = 6, width: int = 16) -> onnx.ModelProto:
    """A residual conv ladder: every layer has a weight; skips make some cuts cross two tensors."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev, skip = "x", "x"
    for i in range(layers):
        w = onnx.numpy_helper.from_array((rng.standard_normal((width, width, 3, 3)) * 0.1).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes.append(onnx.helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(onnx.helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        if i % 2:
            nodes.append(onnx.helper.make_node("Add", [f"r{i}", skip], [f"a{i}"]))
            prev = skip = f"a{i}"
        else:
            prev = f"r{i}"
    nodes.append(onnx.helper.make_node("Identity", [prev], ["y"]))
    shape = [1, width, 8, 8]
    graph = onnx.helper.make_graph(nodes, "ladder", [onnx.helper.make_tensor_value_info("x", 1, shape)],
                                   [onnx.helper.make_tensor_value_info("y", 1, shape)], inits)
    return onnx.shape_inference.infer_shapes(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_split_runs_to_the_same_outputs(n: int) -> None:
    proto = ladder()
    x = np.random.default_rng(1).standard_normal((1, 16, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0]
    model = ir.serde.deserialize_model(proto)
    total = total_weight_bytes(model)
    plan = plan_split(model, n)
    assert len(plan.cuts) == n - 1 and sum(plan.weight_bytes) == total
    assert max(plan.weight_bytes) <= total / n * 1.6  # balanced (weights come in whole layers)
    env = {"x": x}
    for part in split_model(model, plan):
        session = ort.InferenceSession(ir.serde.serialize_model(part).SerializeToString())
        outs = session.run(None, {i.name: env[i.name] for i in session.get_inputs()})
        env.update({o.name: v for o, v in zip(session.get_outputs(), outs)})
    np.testing.assert_array_equal(env["y"], want)


def test_cut_prefers_few_crossing_tensors() -> None:
    model = ir.serde.deserialize_model(ladder(layers=8))
    plan = plan_split(model, 2, window=0.2)
    assert len(plan.crossing[0]) == 1  # a cut right after a residual Add crosses one tensor, not two
