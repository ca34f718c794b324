"""The exporter's optimizer without onnxscript's quadratic SlicesSplit rule, and our linear-time equivalent."""

from __future__ import annotations

import numpy as np
import onnx.helper as oh
import onnx_ir as ir
import onnxruntime as ort
import onnxscript.rewriter
from onnx import TensorProto
from onnxscript.rewriter.rules.common._basic_rules import slice_split_rule

from fusionc.export_rules import linear_time_rules, slices_to_split


def _halves_model(second_begin: int = 4) -> ir.Model:
    """x [2, 8] -> Slice [0:4] -> Relu, Slice [second_begin:8] -> Sigmoid (the slices listed tail first)."""
    ints = lambda name, v: oh.make_tensor(name, TensorProto.INT64, [1], [v])  # noqa: E731
    nodes = [oh.make_node("Slice", ["x", "b1", "e1", "ax"], ["tail"]), oh.make_node("Sigmoid", ["tail"], ["t"]),
             oh.make_node("Slice", ["x", "b0", "e0", "ax"], ["head"]), oh.make_node("Relu", ["head"], ["h"])]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                          [oh.make_tensor_value_info("h", TensorProto.FLOAT, None),
                           oh.make_tensor_value_info("t", TensorProto.FLOAT, None)],
                          [ints("b0", 0), ints("e0", 4), ints("b1", second_begin), ints("e1", 8), ints("ax", -1)])
    return ir.from_proto(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)]))


def _run(model: ir.Model, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_two_slices_of_the_halves_become_one_split_as_onnxscript_would() -> None:
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    model = _halves_model()
    expected = _run(model, x)
    assert slices_to_split(model) == 1
    assert [n.op_type for n in model.graph] == ["Split", "Sigmoid", "Relu"]  # before the first slice's consumer
    for got, want in zip(_run(model, x), expected):
        np.testing.assert_array_equal(got, want)
    stock = _halves_model()
    onnxscript.rewriter.rewrite(stock, [slice_split_rule])  # what the stock optimizer's rule makes of it
    assert sorted(n.op_type for n in stock.graph) == sorted(n.op_type for n in model.graph)


def test_slices_that_are_not_the_two_halves_stay() -> None:
    model = _halves_model(second_begin=5)
    assert slices_to_split(model) == 0 and [n.op_type for n in model.graph].count("Slice") == 2


def test_the_optimizer_runs_without_the_quadratic_rule_and_gets_it_back() -> None:
    stock = onnxscript.rewriter._DEFAULT_REWRITE_RULES
    assert any(getattr(r, "name", None) == "SlicesSplit" for r in stock)
    with linear_time_rules():
        assert not any(getattr(r, "name", None) == "SlicesSplit" for r in onnxscript.rewriter._DEFAULT_REWRITE_RULES)
        assert len(onnxscript.rewriter._DEFAULT_REWRITE_RULES) == len(stock) - 1
    assert onnxscript.rewriter._DEFAULT_REWRITE_RULES is stock
