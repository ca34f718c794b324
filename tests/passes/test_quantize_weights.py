"""Linear weight quantization: encodings, the QuantizeWeightsPass on golden graphs, the opset move to 21,
and the encodings the QNN target reads."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from _compression_helpers import golden_feeds, golden_model, op_types, run, with_weights

from fusionc.passes.compression.quantize_weights import (
    QuantizeWeightsPass,
    quantize,
    read_dq_node,
    upgrade_opset,
    weight_encodings,
)


@pytest.mark.parametrize("bits,block,symmetric", [(8, None, True), (8, None, False), (4, 8, True), (4, 8, False),
                                                  (8, 16, True)])
def test_encoding_error_is_within_half_a_step(bits: int, block: int | None, symmetric: bool) -> None:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((24, 32)) + (0 if symmetric else 0.7)).astype(np.float32)
    enc = quantize(w, bits, axis=1 if block else 0, block_size=block, symmetric=symmetric)
    assert enc.data.min() >= -(1 << (bits - 1)) and enc.data.max() < (1 << (bits - 1))
    if symmetric:
        assert not enc.zero_point.any()
    step = enc.scale if block is None else np.repeat(enc.scale, block, axis=1)
    step = step[:, None] if block is None else step
    assert np.all(np.abs(enc.dense() - w) <= step * 0.5 + 1e-6)
    assert enc.scale.astype(np.float16).astype(np.float32).tolist() == enc.scale.tolist()  # fp16-exact scales


def test_affine_keeps_zero_exact() -> None:
    w = np.concatenate([np.zeros((4, 8)), np.random.default_rng(1).uniform(0.5, 2, (4, 8))], axis=1).astype(np.float32)
    enc = quantize(w, 8, axis=0, block_size=None, symmetric=False)
    assert np.all(enc.dense()[:, :8] == 0)


def test_int8_per_channel_stays_at_opset_18() -> None:
    model = golden_model()
    the_pass = QuantizeWeightsPass("int8", min_elements=1024)
    assert the_pass(model).modified
    assert model.opset_imports[""] == 18
    assert op_types(model) == ["DequantizeLinear", "Conv", "Mul", "DequantizeLinear", "MatMul", "Squeeze",
                               "DequantizeLinear", "Gemm", "Gather"]
    dq = {n.outputs[0].name: read_dq_node(n) for n in model.graph if n.op_type == "DequantizeLinear"}
    assert {k: (e.axis, e.block_size, e.scale.shape) for k, e in dq.items()} == {
        "wc": (0, None, (32,)), "wl": (1, None, (48,)), "wg": (0, None, (40,))}
    reference = with_weights(golden_model(), {k: e.dense() for k, e in dq.items()})
    feeds = golden_feeds()
    for got, want in zip(run(model, feeds), run(reference, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert all(layer["rel_mse"] < 1e-4 for layer in the_pass.layers)
    assert not QuantizeWeightsPass("int8", min_elements=1024)(model).modified


@pytest.mark.parametrize("dtype,block,symmetric", [("int4", 8, True), ("int4", 16, False), ("int8", 32, True)])
def test_blockwise_moves_the_model_to_opset_21(dtype: str, block: int, symmetric: bool) -> None:
    model = golden_model()
    QuantizeWeightsPass(dtype, block_size=block, symmetric=symmetric, min_elements=1024)(model)
    assert model.opset_imports[""] == 21
    dq = {n.outputs[0].name: n for n in model.graph if n.op_type == "DequantizeLinear"}
    conv = read_dq_node(dq["wc"])
    assert conv.axis == 1 and conv.block_size == min(block, 16)  # blocks along the input channels
    assert conv.scale.shape == (32, 16 // conv.block_size, 3, 3)
    assert read_dq_node(dq["wl"]).axis == 0 and read_dq_node(dq["wg"]).axis == 1
    if dtype == "int4":
        assert dq["wc"].inputs[0].dtype == ir.DataType.INT4
    reference = with_weights(golden_model(), {k: read_dq_node(n).dense() for k, n in dq.items()})
    feeds = golden_feeds()
    for got, want in zip(run(model, feeds), run(reference, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_block_size_shrinks_to_a_divisor() -> None:
    model = golden_model()
    QuantizeWeightsPass("int4", block_size=12, min_elements=1024)(model)
    blocks = {n.outputs[0].name: read_dq_node(n).block_size for n in model.graph if n.op_type == "DequantizeLinear"}
    assert blocks == {"wc": 8, "wl": 8, "wg": 8}  # 16 and 64 input channels: largest divisor <= 12


def test_upgrade_opset_moves_local_functions_too() -> None:
    from fusionc.passes.compression.palettize import PalettizeWeightsPass

    model = golden_model()
    PalettizeWeightsPass(4, min_elements=1024)(model)
    assert upgrade_opset(model, 21)
    assert model.opset_imports[""] == 21
    assert all(f.opset_imports[""] == 21 for f in model.functions.values())
    run(model, golden_feeds())  # the checker accepts it and onnxruntime runs it
    assert not upgrade_opset(model, 21)


def test_weight_encodings_for_qnn() -> None:
    model = golden_model()
    QuantizeWeightsPass("int8", min_elements=1024, symmetric=False)(model)
    enc = weight_encodings(model)
    assert set(enc) == {"wc", "wl", "wg"}
    conv = enc["wc"]
    assert conv["bits"] == 8 and conv["axis"] == 0 and conv["block_size"] is None
    assert conv["scale"].shape == (32,) and conv["zero_point"].shape == (32,)
    assert not conv["symmetric"]


def test_int4_needs_blocks() -> None:
    with pytest.raises(ValueError, match="block"):
        QuantizeWeightsPass("int4")


def test_onnx_target_compresses_matmul_weights_only() -> None:
    """ORT's CPU provider fuses DequantizeLinear+MatMul into MatMulNBits but dequantizes a Conv/Gemm weight at every
    step: the onnx target's weight-only pass leaves Conv and Gemm weights float; other targets compress all three."""
    from fusionc.core.context import ComponentContext
    from fusionc.core.options import CompileOptions
    from fusionc.passes.compression.dispatch import make_pass

    def compressed(target: str) -> list[str]:
        model = golden_model()
        options = CompileOptions(target=target, quantize_weights="int4", min_weight_elements=1024)
        assert make_pass(ComponentContext.for_options(options))(model).modified
        return [next(iter(n.outputs[0].uses())).node.op_type for n in model.graph if n.op_type == "DequantizeLinear"]

    assert compressed("onnx") == ["MatMul"]
    assert sorted(compressed("qnn")) == ["Conv", "Gemm", "MatMul"]
    model = golden_model()
    only = QuantizeWeightsPass("int4", block_size=8, min_elements=1024, op_types=frozenset({"MatMul"}))
    assert only(model).modified and [x["layer"] for x in only.layers] == ["wl"]
    assert not QuantizeWeightsPass("int4", block_size=8, min_elements=1024, op_types=frozenset({"MatMul"}))(model).modified
