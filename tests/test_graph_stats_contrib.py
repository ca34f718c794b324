"""graph_stats through ORT's com.microsoft contrib ops (the onnx target's graphs), and the unknown-shape count."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import TensorProto

from fusionc.analysis.graph_stats import GraphStats, graph_stats, unknown_shapes_warning

MS = "com.microsoft"


def _model(nodes: list, inputs: list, outputs: list, inits: list = ()) -> onnx.ModelProto:
    graph = oh.make_graph(nodes, "g", inputs, outputs, list(inits))
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18), oh.make_opsetid(MS, 1)])


def _vi(name: str, shape: list | None) -> onnx.ValueInfoProto:
    return oh.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # shape None: the output's shape is inferred


def _init(name: str, shape: list) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.ones(shape, dtype=np.float32), name)


def _contrib_then_matmul(node: onnx.NodeProto, inputs: list, inits: list, k: int) -> GraphStats:
    """`node` (output "h") feeding a MatMul by a [k, 8] weight: the MatMul's MACs need h's inferred shape."""
    matmul = oh.make_node("MatMul", ["h", "w"], ["y"])
    return graph_stats(_model([node, matmul], inputs, [_vi("y", None)], list(inits) + [_init("w", [k, 8])]),
                       {"batch": 2})


@pytest.mark.parametrize("op_type, extra_inputs", [
    ("Gelu", []), ("FastGelu", []), ("FastGelu", ["bias"]), ("BiasGelu", ["bias"]), ("QuickGelu", []),
    ("BiasAdd", ["bias", "skip"]), ("SkipLayerNormalization", ["skip", "gamma"]),
    ("SkipSimplifiedLayerNormalization", ["skip", "gamma"]), ("GroupNorm", ["gamma", "beta"])])
def test_same_shape_contrib_ops_pass_their_input_shape_on(op_type: str, extra_inputs: list) -> None:
    consts = {"bias": [16], "gamma": [16], "beta": [16]}
    inits = [_init(name, consts[name]) for name in extra_inputs if name in consts]
    inputs = [_vi("x", ["batch", 6, 16])] + ([_vi("skip", ["batch", 6, 16])] if "skip" in extra_inputs else [])
    node = oh.make_node(op_type, ["x"] + extra_inputs, ["h"], domain=MS)
    stats = _contrib_then_matmul(node, inputs, inits, 16)
    contrib, matmul = stats.ops
    assert matmul.macs == 2 * 6 * 8 * 16 and stats.unknown_shape_ops == 0
    assert contrib.act_out_elems == 2 * 6 * 16


def test_bias_split_gelu_halves_the_last_dim() -> None:
    node = oh.make_node("BiasSplitGelu", ["x", "bias"], ["h"], domain=MS)
    stats = _contrib_then_matmul(node, [_vi("x", ["batch", 6, 32])], [_init("bias", [32])], 16)
    assert stats.ops[1].macs == 2 * 6 * 8 * 16 and stats.unknown_shape_ops == 0


def test_multi_head_attention_shape_and_macs() -> None:
    """MultiHeadAttention(q [B,Sq,H*D], k [B,Sk,H*D], v [B,Sk,H*Dv]) -> [B,Sq,H*Dv], counted like fusionc's SDPA:
    B*H*Sq*Sk*(D + Dv), fused (no score tensor in the graph)."""
    b, sq, sk, heads, d, dv = 2, 10, 7, 4, 8, 6
    node = oh.make_node("MultiHeadAttention", ["q", "k", "v"], ["h"], domain=MS, num_heads=heads, scale=0.3)
    inputs = [_vi("q", ["batch", sq, heads * d]), _vi("k", ["batch", sk, heads * d]),
              _vi("v", ["batch", sk, heads * dv])]
    stats = _contrib_then_matmul(node, inputs, [], heads * dv)
    mha, matmul = stats.ops
    assert (mha.kind, mha.macs, mha.attention_scores) == ("attention", b * heads * sq * sk * (d + dv), False)
    assert matmul.macs == b * sq * 8 * heads * dv
    assert stats.attention_form == "fused" and stats.unknown_shape_ops == 0


def test_an_op_of_unknown_shape_is_counted_not_hidden() -> None:
    """An op shape inference cannot type, and everything downstream of it, is recorded as of unknown shape."""
    node = oh.make_node("NoSuchOp", ["x"], ["h"], domain=MS)
    stats = _contrib_then_matmul(node, [_vi("x", [1, 6, 16])], [], 16)
    assert stats.macs == 0 and stats.unknown_shape_ops == 2
    assert GraphStats.from_json(stats.to_json()).unknown_shape_ops == 2
    assert stats.summary()["unknown_shape_ops"] == 2
    warning = unknown_shapes_warning({"unet": stats.unknown_shape_ops, "vae_decoder": 0})
    assert warning is not None and "unet 2" in warning and "vae_decoder" not in warning and "\n" not in warning
    assert unknown_shapes_warning({"unet": 0}) is None


def test_shape_arithmetic_through_div_is_evaluated_at_the_pinned_batch() -> None:
    """torch.export writes a Reshape's target as arithmetic on the batch (Shape -> Squeeze -> Div -> Mul -> Concat);
    onnx's data propagation stops at the Div, which hid every MatMul behind an SD3 transformer's attention output.
    At batch 2: tokens = 48 / 2 * 2 / 2 = 24, so x [2, 4, 6, 8] reshapes to [2, 24, 8] and the MatMul does
    2 * 24 * 8 * 16 MACs."""
    def const(name: str, values: list) -> onnx.TensorProto:
        return onnx.numpy_helper.from_array(np.array(values, dtype=np.int64), name)

    nodes = [oh.make_node("Shape", ["x"], ["s"], start=0, end=1),
             oh.make_node("Squeeze", ["s"], ["b"]),
             oh.make_node("Div", ["n48", "b"], ["per"]), oh.make_node("Mul", ["per", "b"], ["tok2"]),
             oh.make_node("Div", ["tok2", "two"], ["tok"]), oh.make_node("Unsqueeze", ["tok", "zero"], ["tok1"]),
             oh.make_node("Concat", ["s", "tok1", "eight"], ["target"], axis=0),
             oh.make_node("Reshape", ["x", "target"], ["h"]), oh.make_node("MatMul", ["h", "w"], ["y"])]
    inits = [const("n48", 48), const("two", 2), const("zero", [0]), const("eight", [8]), _init("w", [8, 16])]
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6, 8])
    stats = graph_stats(_model(nodes, [x], [_vi("y", None)], inits), {"batch": 2})
    assert stats.unknown_shape_ops == 0 and stats.macs == 2 * 24 * 8 * 16


@pytest.mark.parametrize("component", ["unet", "vae_decoder"])
def test_onnx_target_graph_counts_what_the_generic_graph_counts(component: str) -> None:
    """The built-in model's onnx-target graph (MultiHeadAttention, Gelu from fusionc.passes.ort) has the MACs and
    parameters of the generic graph it was rewritten from; the contrib ops used to hide ~85-97% of them."""
    from fusionc.checkpoint import load_structure
    from fusionc.core.context import ComponentContext
    from fusionc.core.options import CompileOptions
    from fusionc.export import component_spec, export_structure
    from fusionc.passes.generic import default_pipeline
    from fusionc.pipeline import run_passes
    from fusionc.targets import get_target

    logging.getLogger("onnx_ir.passes.common.shape_inference").setLevel(logging.CRITICAL)
    options = CompileOptions(target="onnx")
    spec = component_spec(load_structure(None), component, options, batch=1)
    spec.example = {k: v.to("meta") for k, v in spec.example.items()}
    model = export_structure(spec, options.opset)
    ctx = ComponentContext.for_options(options, component)
    generic = default_pipeline()
    run_passes(model, generic, ctx)
    before = graph_stats(model, {"batch": 2})
    run_passes(model, get_target("onnx").pipeline(options)[len(generic):], ctx)
    after = graph_stats(model, {"batch": 2})
    assert after.op_counts.get(f"{MS}::MultiHeadAttention", 0) >= 1
    assert component != "unet" or after.op_counts.get(f"{MS}::Gelu", 0) >= 1
    assert before.unknown_shape_ops == after.unknown_shape_ops == 0
    assert before.macs > 0 and after.macs == pytest.approx(before.macs, rel=0.02)
    assert after.params == pytest.approx(before.params, rel=0.01)


def test_a_weightless_graph_is_read_without_its_external_data(tmp_path) -> None:
    """A Core ML build's costmodel.onnx names an external data file it does not ship: shape values are taken only
    from initializers stored in the graph, never read from that file."""
    from onnx.external_data_helper import set_external_data

    target = onnx.numpy_helper.from_array(np.array([2, 24, 8], dtype=np.int64), "target")
    set_external_data(target, location="weights-omitted")
    target.ClearField("raw_data")
    target.data_location = TensorProto.EXTERNAL
    nodes = [oh.make_node("Reshape", ["x", "target"], ["h"]), oh.make_node("NoSuchOp", ["h"], ["y"], domain=MS)]
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 6, 8])
    path = tmp_path / "costmodel.onnx"
    onnx.save(_model(nodes, [x], [_vi("y", None)], [target]), str(path))
    stats = graph_stats(path)  # no error; the Reshape's target is unknown: counted, not read
    assert stats.unknown_shape_ops >= 1
