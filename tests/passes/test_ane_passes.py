"""ANE passes on golden graphs: op types after the pass, numerical equality on onnxruntime, a near miss that
must not rewrite, idempotence; and on a real tiny UNet: Softmax count == sum of heads, no tensor above rank 4."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from fusionc.core.context import ComponentContext
from fusionc.passes.generic import fused_ops
from fusionc.passes.ane.attention import SplitEinsumAttentionPass
from fusionc.passes.ane.interface import AdoptCoreMLInterfacePass, read_interface
from fusionc.passes.ane.layout import PropagateChannelsFirstPass
from fusionc.passes.ane.linear import ConvertLinearToConvPass, NormalizeLayerNormOverChannelsPass
from fusionc.passes.ane.norm import DecomposeGroupNormPass


def weights(*shape: int, seed: int = 0) -> str:
    values = np.random.default_rng(seed).standard_normal(int(np.prod(shape))) * 0.3
    return ",".join(f"{v:.4f}" for v in values)


def parse(text: str, functions: list[tuple[str, str]] = ()) -> ir.Model:
    proto = onnx.parser.parse_model(text)
    for op_type, overload in functions:
        proto.functions.append(fused_ops.function_proto(op_type, overload))
    return ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(proto))


def run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    data = ir.serde.serialize_model(model).SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def feeds_for(model: ir.Model, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal([int(d) for d in v.shape]).astype(np.float32) for v in model.graph.inputs}


def op_types(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def check_pass(model: ir.Model, the_pass: ir.passes.PassBase, *, atol: float = 1e-5) -> list[str]:
    """Apply, compare with the original on onnxruntime, check a second run is a no-op; return op types."""
    feeds = feeds_for(model)
    before = run(model, feeds)
    assert the_pass(model).modified
    after = run(model, feeds)
    for a, b in zip(before, after):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=atol)
    assert not type(the_pass)()(model).modified
    return op_types(model)


LINEAR = f"""<ir_version: 10, opset_import: ["" : 18]>
g (float[2,5,8] x) => (float[2,5,6] y, float[2,6] z) <float[8,6] w = {{{weights(8, 6)}}}, float[6] b = {{{weights(6, seed=1)}}},
   float[6,8] wg = {{{weights(6, 8, seed=2)}}}, int64[1] one = {{1}}> {{
  m = MatMul(x, w)
  y = Add(m, b)
  r = ReduceMean<keepdims=0>(x, one)
  z = Gemm<transB=1>(r, wg, b)
}}"""


def test_linear_to_conv_golden() -> None:
    model = parse(LINEAR)
    ops = check_pass(model, ConvertLinearToConvPass())
    assert ops.count("Conv") == 2 and "MatMul" not in ops and "Gemm" not in ops and "Add" not in ops
    conv = next(n for n in model.graph if n.op_type == "Conv")
    assert len(conv.inputs) == 3  # the bias Add was folded into the Conv


def test_linear_to_conv_near_miss_dynamic_weight() -> None:
    model = parse("""<ir_version: 10, opset_import: ["" : 18]>
g (float[2,5,8] x, float[8,6] w) => (float[2,5,6] y) { y = MatMul(x, w) }""")
    assert not ConvertLinearToConvPass()(model).modified
    assert op_types(model) == ["MatMul"]


def test_layernorm_over_channels_golden() -> None:
    model = parse(f"""<ir_version: 10, opset_import: ["" : 18]>
g (float[2,5,8] x) => (float[2,5,8] y) <float[8] s = {{{weights(8)}}}, float[8] b = {{{weights(8, seed=3)}}}> {{
  y = LayerNormalization<axis=-1, epsilon=1e-5>(x, s, b)
}}""")
    ops = check_pass(model, NormalizeLayerNormOverChannelsPass())
    assert "LayerNormalization" not in ops and ops.count("ReduceMean") == 2
    reduce = next(n for n in model.graph if n.op_type == "ReduceMean")
    assert list(reduce.inputs[1].const_value.numpy()) == [1]  # over the channel axis of (B,C,1,S)


def test_layernorm_near_miss_inner_axis() -> None:
    model = parse("""<ir_version: 10, opset_import: ["" : 18]>
g (float[2,5,8] x, float[5,8] s) => (float[2,5,8] y) { y = LayerNormalization<axis=1>(x, s) }""")
    assert not NormalizeLayerNormOverChannelsPass()(model).modified


ATTENTION = """<ir_version: 10, opset_import: ["" : 18, "fusionc" : 1]>
g (float[1,SQ,8] x, float[1,7,8] e) => (float[1,SQ,8] y) <int64[4] qs = {1,SQ,2,4}, int64[4] ks = {1,7,2,4},
   int64[3] os = {1,SQ,8}> {
  qr = Reshape(x, qs)
  q = Transpose<perm=[0,2,1,3]>(qr)
  kr = Reshape(e, ks)
  k = Transpose<perm=[0,2,1,3]>(kr)
  v = Transpose<perm=[0,2,1,3]>(kr)
  o = fusionc.ScaledDotProductAttention<scale=0.5>(q, k, v)
  ot = Transpose<perm=[0,2,1,3]>(o)
  y = Reshape(ot, os)
}"""


@pytest.mark.parametrize("chunk,sq,pieces", [(None, 10, 1), (4, 10, 3), (512, 10, 1)])
def test_split_einsum_golden(chunk: int | None, sq: int, pieces: int) -> None:
    model = parse(ATTENTION.replace("SQ", str(sq)), [("ScaledDotProductAttention", "")])
    the_pass = SplitEinsumAttentionPass(query_chunk=chunk)
    feeds = feeds_for(model)
    before = run(model, feeds)
    assert the_pass(model).modified
    PropagateChannelsFirstPass()(model)
    from fusionc.passes.generic import RemoveDeadCodePass

    RemoveDeadCodePass()(model)
    np.testing.assert_allclose(run(model, feeds)[0], before[0], rtol=1e-4, atol=1e-5)
    ops = collections.Counter(op_types(model))
    assert ops["Softmax"] == 2 * pieces and the_pass.heads_split == 2
    assert ops["Einsum"] == 4 * pieces and "ScaledDotProductAttention" not in ops
    softmax = next(n for n in model.graph if n.op_type == "Softmax")
    assert softmax.attributes["axis"].as_int() == 1  # over the keys
    assert all(len(v.shape) <= 4 for n in model.graph for v in n.outputs)
    assert not SplitEinsumAttentionPass(query_chunk=chunk)(model).modified


def test_split_einsum_masked_matches() -> None:
    model = parse(f"""<ir_version: 10, opset_import: ["" : 18, "fusionc" : 1]>
g (float[1,2,6,4] q, float[1,2,6,4] k, float[1,2,6,4] v) => (float[1,2,6,4] y) <float[1,1,6,6] m = {{{",".join(
        "0" if j <= i else "-10000" for i in range(6) for j in range(6))}}}> {{
  y = fusionc.ScaledDotProductAttention:masked<scale=0.5>(q, k, v, m)
}}""", [("ScaledDotProductAttention", "masked")])
    feeds = feeds_for(model)
    before = run(model, feeds)
    assert SplitEinsumAttentionPass()(model).modified
    np.testing.assert_allclose(run(model, feeds)[0], before[0], rtol=1e-4, atol=1e-5)


def test_split_einsum_near_miss_unknown_shapes() -> None:
    model = parse("""<ir_version: 10, opset_import: ["" : 18, "fusionc" : 1]>
g (float[1,2,N,4] q, float[1,2,N,4] k, float[1,2,N,4] v) => (float[1,2,N,4] y) {
  y = fusionc.ScaledDotProductAttention<scale=0.5>(q, k, v)
}""", [("ScaledDotProductAttention", "")])
    assert not SplitEinsumAttentionPass()(model).modified


def test_propagate_removes_transposes_between_linears() -> None:
    model = parse(f"""<ir_version: 10, opset_import: ["" : 18, "fusionc" : 1]>
g (float[1,4,8,8] x) => (float[1,4,8,8] y) <int64[3] flat = {{1,64,4}}, int64[4] back = {{1,8,8,4}},
   float[4,16] w1 = {{{weights(4, 16)}}}, float[16,4] w2 = {{{weights(16, 4, seed=5)}}}, float[4] s = {{{weights(4, seed=6)}}}> {{
  t = Transpose<perm=[0,2,3,1]>(x)
  h = Reshape(t, flat)
  n = LayerNormalization<axis=-1>(h, s)
  a = MatMul(n, w1)
  g = fusionc.Gelu<approximate="none">(a)
  b = MatMul(g, w2)
  r = Add(b, h)
  u = Reshape(r, back)
  y = Transpose<perm=[0,3,1,2]>(u)
}}""", [("Gelu", "")])
    feeds = feeds_for(model)
    before = run(model, feeds)
    ConvertLinearToConvPass()(model)
    NormalizeLayerNormOverChannelsPass()(model)
    assert PropagateChannelsFirstPass()(model).modified
    np.testing.assert_allclose(run(model, feeds)[0], before[0], rtol=1e-4, atol=1e-5)
    ops = op_types(model)
    assert "Transpose" not in ops and "Squeeze" not in ops, ops
    assert not PropagateChannelsFirstPass()(model).modified


def test_propagate_moves_adaln_modulation_channels_first() -> None:
    """AdaLN-Zero: norm(h) * (1 + scale) + shift with scale, shift [B,1,C] from the conditioning; the modulation runs in
    the (B,C,1,S) layout with [B,C,1,1] operands, so no transpose is left between the linears around it."""
    model = parse(f"""<ir_version: 10, opset_import: ["" : 18, "fusionc" : 1]>
g (float[2,6,4] x, float[2,8] emb) => (float[2,6,4] y) <float[4,4] w1 = {{{weights(4, 4)}}}, float[4,4] w2 = {{{weights(4, 4, seed=5)}}},
   float[8,8] wm = {{{weights(8, 8, seed=7)}}}, int64[1] one = {{1}}, int64[2] halves = {{4, 4}}, float[1] k1 = {{1.0}}> {{
  m = MatMul(emb, wm)
  mu = Unsqueeze(m, one)
  shift, scale = Split<axis=-1>(mu, halves)
  a = MatMul(x, w1)
  n = LayerNormalization<axis=-1>(a, k1)
  s1 = Add(scale, k1)
  mod = Mul(n, s1)
  sh = Add(mod, shift)
  y = MatMul(sh, w2)
}}""", [])
    feeds = feeds_for(model)
    before = run(model, feeds)
    ConvertLinearToConvPass()(model)
    NormalizeLayerNormOverChannelsPass()(model)
    assert PropagateChannelsFirstPass()(model).modified
    np.testing.assert_allclose(run(model, feeds)[0], before[0], rtol=1e-4, atol=1e-5)
    ops = collections.Counter(op_types(model))
    # the input enters and the output leaves the layout once each; nothing transposes in between
    assert ops["Transpose"] <= 2, ops
    assert not PropagateChannelsFirstPass()(model).modified


def test_group_norm_rank4_golden() -> None:
    model = parse(f"""<ir_version: 10, opset_import: ["" : 18, "fusionc" : 1]>
g (float[2,8,5,5] x) => (float[2,8,5,5] y) <float[8] s = {{{weights(8)}}}, float[8] b = {{{weights(8, seed=2)}}}> {{
  y = fusionc.GroupNorm<num_groups=4, epsilon=1e-5>(x, s, b)
}}""", [("GroupNorm", "")])
    ops = check_pass(model, DecomposeGroupNormPass())
    assert "GroupNorm" not in ops and ops.count("ReduceMean") == 2
    assert all(len(v.shape) <= 4 for n in model.graph for v in n.outputs)


def test_group_norm_near_miss_indivisible() -> None:
    model = parse("""<ir_version: 10, opset_import: ["" : 18, "fusionc" : 1]>
g (float[2,6,5,5] x, float[6] s, float[6] b) => (float[2,6,5,5] y) {
  y = fusionc.GroupNorm<num_groups=4, epsilon=1e-5>(x, s, b)
}""", [("GroupNorm", "")])
    assert not DecomposeGroupNormPass()(model).modified


def test_interface_pass_unet_contract() -> None:
    model = parse("""<ir_version: 10, opset_import: ["" : 18]>
g (float[batch,4,8,8] sample, float[1] timestep, float[batch,7,16] encoder_hidden_states) => (float[batch,4,8,8] out_sample) {
  m = ReduceMean<keepdims=0>(encoder_hidden_states)
  t = Mul(timestep, m)
  out_sample = Mul(sample, t)
}""")
    the_pass = AdoptCoreMLInterfacePass()
    assert the_pass(model).modified
    shapes = {v.name: list(v.shape) for v in model.graph.inputs}
    assert shapes == {"sample": [2, 4, 8, 8], "timestep": [2], "encoder_hidden_states": [2, 16, 1, 7]}
    assert [v.name for v in model.graph.outputs] == ["noise_pred"]
    assert read_interface(model).outputs == {"out_sample": "noise_pred"}
    assert not AdoptCoreMLInterfacePass()(model).modified


# -- a real tiny UNet ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_unet(tiny_pipeline):
    from fusionc.checkpoint import load_checkpoint
    from fusionc.export import component_spec, export_component
    from fusionc.core.options import CompileOptions

    checkpoint = load_checkpoint(tiny_pipeline("sd21"), False)
    spec = component_spec(checkpoint, "unet", CompileOptions(target="coreml"))
    heads = 0
    for module in spec.module.modules():
        if type(module).__name__ == "Attention":
            heads += module.heads
    return ir.serde.serialize_model(export_component(spec)), heads, spec


@pytest.mark.parametrize("attention", ["split_einsum", "split_einsum_v2"])
def test_unet_softmax_count_equals_heads(tiny_unet, attention: str) -> None:
    from fusionc.core.options import CompileOptions
    from fusionc.pipeline import run_passes
    from fusionc.targets import get_target

    proto, heads, _ = tiny_unet
    model = ir.serde.deserialize_model(proto)
    options = CompileOptions(target="coreml", attention=attention)
    run_passes(model, get_target("coreml").pipeline(options), ComponentContext.for_options(options))
    ops = collections.Counter(op_types(model))
    assert ops["Softmax"] == heads  # one softmax per head (tiny latents: shorter than one v2 chunk)
    assert ops["MatMul"] == 0 and ops["Gemm"] == 0 and ops["LayerNormalization"] == 0
    assert all(len(v.shape) <= 4 for n in model.graph for v in n.outputs if v.shape is not None)
    assert ops["Transpose"] <= sum(1 for n in model.graph if n.op_type == "Einsum") // 2  # one k^T per attention
