"""Each ONNX -> MIL lowering against onnxruntime on small random inputs, through the MIL executor.

Every case runs in fp32 (the lowering's semantics, tight tolerance) and fp16 (the default precision policy:
PSNR well above the 35 dB gate). Graphs round-trip through a real .mlpackage.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from coreml_helpers import psnr, random_feeds, run_coreml, run_ort

from fusionc.core.errors import UnsupportedError

F = "float"

CASES: dict[str, tuple[str, str]] = {
    # name: (graph signature, body)
    "add_sub_mul_div": ("(float[2,3,4] a, float[4] b) => (float[2,3,4] y)",
                        "s = Add(a, b)\n d = Sub(s, b)\n m = Mul(d, a)\n y = Div(m, b)"),
    "pow_sqrt_exp_neg": ("(float[2,8] a) => (float[2,8] y)",
                         "two = Constant<value=float {2.0}>()\n p = Pow(a, two)\n s = Sqrt(p)\n e = Exp(a)\n"
                         " n = Neg(e)\n y = Add(s, n)"),
    "unary": ("(float[3,5] a) => (float[3,5] y)",
              "s = Sigmoid(a)\n t = Tanh(s)\n r = Relu(a)\n e = Erf(r)\n c = Cos(a)\n sn = Sin(c)\n ab = Abs(a)\n"
              " u = Add(t, e)\n v = Add(u, sn)\n y = Add(v, ab)"),
    "reciprocal_log": ("(float[2,3] a) => (float[2,3] y)",
                       "b = Abs(a)\n one = Constant<value=float {1.0}>()\n c = Add(b, one)\n r = Reciprocal(c)\n y = Log(c)"),
    "max_min_clip": ("(float[2,6] a, float[2,6] b) => (float[2,6] y)",
                     "m = Max(a, b)\n n = Min(a, b)\n lo = Constant<value=float {-0.5}>()\n hi = Constant<value=float {0.5}>()\n"
                     " c = Clip(m, lo, hi)\n y = Add(c, n)"),
    "where_equal_isnan": ("(float[2,5] a, float[2,5] b) => (float[2,5] y)",
                          "g = Greater(a, b)\n w = Where(g, a, b)\n nan = IsNaN(w)\n z = Constant<value=float {0.0}>()\n"
                          " y = Where(nan, z, w)"),
    "cast_argmax": ("(float[2,7] a) => (int64[2] y, float[2,7] z)",
                    "y = ArgMax<axis=1, keepdims=0>(a)\n i = Cast<to=6>(a)\n z = Cast<to=1>(i)"),
    "leaky_elu_hardsigmoid_softplus": ("(float[4,4] a) => (float[4,4] y)",
                                       "l = LeakyRelu<alpha=0.1>(a)\n e = Elu(a)\n h = HardSigmoid(a)\n sp = Softplus(a)\n"
                                       " s1 = Add(l, e)\n s2 = Add(h, sp)\n y = Add(s1, s2)"),
    "reshape_transpose": ("(float[2,3,4] a) => (float[4,6] y)",
                          "s = Constant<value=int64[2] {0, -1}>()\n r = Reshape(a, s)\n y = Transpose<perm=[1,0]>(r)"),
    "unsqueeze_squeeze_concat": ("(float[2,3] a, float[2,3] b) => (float[2,2,3] y)",
                                 "ax = Constant<value=int64[1] {1}>()\n ua = Unsqueeze(a, ax)\n ub = Unsqueeze(b, ax)\n"
                                 " y = Concat<axis=1>(ua, ub)"),
    "slice_split": ("(float[4,10] a) => (float[2,3] y, float[4,5] s0, float[4,5] s1)",
                    "st = Constant<value=int64[2] {1, 2}>()\n en = Constant<value=int64[2] {3, 8}>()\n"
                    " ax = Constant<value=int64[2] {0, 1}>()\n stp = Constant<value=int64[2] {1, 2}>()\n"
                    " y = Slice(a, st, en, ax, stp)\n s0, s1 = Split<axis=1, num_outputs=2>(a)"),
    "slice_negative": ("(float[6,5] a) => (float[3,5] y)",
                       "st = Constant<value=int64[1] {-1}>()\n en = Constant<value=int64[1] {-100}>()\n"
                       " ax = Constant<value=int64[1] {0}>()\n stp = Constant<value=int64[1] {-2}>()\n y = Slice(a, st, en, ax, stp)"),
    "gather_gathernd": ("(float[5,4] a, int64[3] i) => (float[3,4] y, float[2] z)",
                        "y = Gather<axis=0>(a, i)\n idx = Constant<value=int64[2,2] {0, 1, 4, 3}>()\n z = GatherND(a, idx)"),
    "expand_tile": ("(float[3,1] a) => (float[2,3,4] y, float[6,2] z)",
                    "sh = Constant<value=int64[3] {2, 3, 4}>()\n y = Expand(a, sh)\n r = Constant<value=int64[2] {2, 2}>()\n"
                    " z = Tile(a, r)"),
    "shape_arith_reshape": ("(float[2,3,4] a) => (float[2,12] y)",
                            "s = Shape(a)\n i0 = Constant<value=int64[1] {0}>()\n b = Gather<axis=0>(s, i0)\n"
                            " m = Constant<value=int64[1] {-1}>()\n t = Concat<axis=0>(b, m)\n y = Reshape(a, t)"),
    "conv_pads_groups": ("(float[1,4,9,9] x, float[8,2,3,3] w, float[8] b) => (float[1,8,5,5] y)",
                         "y = Conv<pads=[1,1,1,1], strides=[2,2], group=2>(x, w, b)"),
    "conv_1x1_same": ("(float[2,3,5,5] x, float[4,3,3,3] w) => (float[2,4,5,5] y, float[2,4,5,5] z)",
                      "y = Conv<auto_pad=\"SAME_UPPER\">(x, w)\n k = Constant<value=float[4,3,1,1] {1,2,3,4,5,6,7,8,9,10,11,12}>()\n"
                      " z = Conv(x, k)"),
    "conv_transpose": ("(float[1,4,5,5] x) => (float[1,3,9,9] y)",
                       "w = Constant<value=float[4,3,3,3] {" + ",".join(str((i % 11) / 11.0 - 0.5) for i in range(108)) + "}>()\n"
                       " y = ConvTranspose<strides=[2,2], pads=[1,1,1,1]>(x, w)"),
    "matmul_linear_batched": ("(float[2,5,8] a, float[2,8,3] b) => (float[2,5,6] y, float[2,5,3] z)",
                              "w = Constant<value=float[8,6] {" + ",".join(str((i % 7) / 7.0 - 0.4) for i in range(48)) + "}>()\n"
                              " y = MatMul(a, w)\n z = MatMul(a, b)"),
    "gemm": ("(float[3,4] a) => (float[3,5] y)",
             "w = Constant<value=float[5,4] {" + ",".join(str((i % 5) / 5.0 - 0.5) for i in range(20)) + "}>()\n"
             " c = Constant<value=float[5] {0.1,0.2,0.3,0.4,0.5}>()\n y = Gemm<transB=1>(a, w, c)"),
    "gemm_alpha_beta": ("(float[3,4] a, float[4,5] b, float[3,5] c) => (float[3,5] y)",
                        "y = Gemm<alpha=0.5, beta=2.0>(a, b, c)"),
    "norms": ("(float[2,4,3,3] x, float[4] g, float[4] b, float[2,6,8] t, float[8] lg, float[8] lb) => "
              "(float[2,4,3,3] y, float[2,6,8] z)",
              "y = InstanceNormalization<epsilon=1e-5>(x, g, b)\n z = LayerNormalization<axis=-1, epsilon=1e-5>(t, lg, lb)"),
    "batchnorm": ("(float[2,4,3,3] x, float[4] g, float[4] b, float[4] m) => (float[2,4,3,3] y)",
                  "v = Abs(m)\n y = BatchNormalization(x, g, b, m, v)"),
    "softmax_reduce": ("(float[2,3,7] a) => (float[2,3,7] y, float[2,1,7] m, float[2,3] s)",
                       "y = Softmax<axis=-1>(a)\n ax = Constant<value=int64[1] {1}>()\n m = ReduceMean(a, ax)\n"
                       " ax2 = Constant<value=int64[1] {-1}>()\n s = ReduceSum<keepdims=0>(a, ax2)"),
    "resize_nearest": ("(float[1,2,3,4] x) => (float[1,2,6,8] y)",
                       "sc = Constant<value=float[4] {1,1,2,2}>()\n y = Resize<mode=\"nearest\", coordinate_transformation_mode="
                       "\"asymmetric\", nearest_mode=\"floor\">(x, , sc)"),
    "resize_bilinear": ("(float[1,2,3,4] x) => (float[1,2,6,8] y)",
                        "sc = Constant<value=float[4] {1,1,2,2}>()\n y = Resize<mode=\"linear\", coordinate_transformation_mode="
                        "\"half_pixel\">(x, , sc)"),
    "pool": ("(float[1,2,6,6] x) => (float[1,2,3,3] y, float[1,2,3,3] z, float[1,2,1,1] g)",
             "y = MaxPool<kernel_shape=[2,2], strides=[2,2]>(x)\n z = AveragePool<kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]>(x)\n"
             " g = GlobalAveragePool(x)"),
    "pad_cumsum": ("(float[2,3] x) => (float[4,7] y, float[2,3] c)",
                   "p = Constant<value=int64[4] {1, 2, 1, 2}>()\n y = Pad(x, p)\n ax = Constant<value=int64 {1}>()\n c = CumSum(x, ax)"),
    "einsum_split_heads": ("(float[1,8,1,6] q, float[1,6,1,8] k) => (float[1,6,1,6] y)",
                           "y = Einsum<equation=\"bchq,bkhc->bkhq\">(q, k)"),
    "depth_to_space": ("(float[1,8,2,3] x) => (float[1,2,4,6] y, float[1,2,4,6] z)",
                       "y = DepthToSpace<blocksize=2, mode=\"DCR\">(x)\n z = DepthToSpace<blocksize=2, mode=\"CRD\">(x)"),
    "trilu_range": ("(float[4,4] x) => (float[4,4] y)", "y = Trilu<upper=0>(x)"),
}


def make_model(signature: str, body: str, opset: int = 18) -> onnx.ModelProto:
    text = f"""<ir_version: 10, opset_import: ["" : {opset}]>
agraph {signature} {{
 {body}
}}"""
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_lowering_matches_onnxruntime(case: str) -> None:
    model = make_model(*CASES[case])
    feeds = random_feeds(model, seed=1)
    if case == "gather_gathernd":
        feeds["i"] = np.array([4, 0, -1], np.int64)
    expected = run_ort(model, feeds)
    got32 = run_coreml(model, feeds, "fp32")
    for ref, out in zip(expected, got32):
        assert out.shape == ref.shape
        if ref.dtype.kind in "iub":
            np.testing.assert_array_equal(out, ref.astype(out.dtype))
        else:
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    for deployment in ("iOS16", "iOS17"):  # iOS16 lacks some op flags (gather validate_indices, dynamic conv bias)
        got16 = run_coreml(model, feeds, "fp16", deployment=deployment)
        for ref, out in zip(expected, got16):
            if ref.dtype.kind == "f":
                assert psnr(ref, out) > 45.0, (case, deployment)


def test_fused_functions_lower_natively() -> None:
    """fusionc::ScaledDotProductAttention (plain and masked), GroupNorm, Gelu, GeGLU from passes/fused_ops."""
    from fusionc.passes.generic import fused_ops

    text = """<ir_version: 10, opset_import: ["" : 18, "fusionc" : 1]>
agraph (float[1,2,5,4] q, float[1,2,7,4] k, float[1,2,7,4] v, float[1,1,5,7] mask, float[2,8,3,3] x, float[8] g,
        float[8] b, float[2,5,6] h) => (float[1,2,5,4] o, float[1,2,5,4] om, float[2,8,3,3] gn, float[2,5,6] ge,
        float[2,5,3] gg) {
 o = fusionc.ScaledDotProductAttention<scale=0.5>(q, k, v)
 om = fusionc.ScaledDotProductAttention:masked<scale=0.5>(q, k, v, mask)
 gn = fusionc.GroupNorm<num_groups=4, epsilon=1e-5>(x, g, b)
 ge = fusionc.Gelu<approximate="none">(h)
 gg = fusionc.GeGLU<approximate="none">(h)
}"""
    model = onnx.parser.parse_model(text)
    for op_type, overload in [("ScaledDotProductAttention", ""), ("ScaledDotProductAttention", "masked"),
                              ("GroupNorm", ""), ("Gelu", ""), ("GeGLU", "")]:
        model.functions.append(fused_ops.function_proto(op_type, overload))
    feeds = random_feeds(model, seed=2)
    feeds["mask"] = np.where(np.triu(np.ones((5, 7)), 3) > 0, -1e9, 0).astype(np.float32)[None, None]
    expected = run_ort(model, feeds)
    for deployment in ("iOS17", "iOS18"):
        got = run_coreml(model, feeds, "fp32", deployment=deployment)
        for ref, out in zip(expected, got):
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_unknown_function_is_inlined() -> None:
    text = """<ir_version: 10, opset_import: ["" : 18, "local" : 1]>
agraph (float[2,3] x) => (float[2,3] y) {
 y = local.Swish(x)
}
<domain: "local", opset_import: ["" : 18]>
Swish (x) => (y) {
 s = Sigmoid(x)
 y = Mul(x, s)
}"""
    model = onnx.parser.parse_model(text)
    feeds = random_feeds(model)
    np.testing.assert_allclose(run_coreml(model, feeds)[0], run_ort(model, feeds)[0], rtol=1e-5, atol=1e-6)


def test_unsupported_op_names_node_op_and_target() -> None:
    model = make_model("(float[2,3] x) => (float[2,3] y)", "y = Hardmax(x)")
    model.graph.node[0].name = "my_hardmax"
    with pytest.raises(UnsupportedError, match=r"my_hardmax.*Hardmax.*coreml"):
        run_coreml(model, random_feeds(model), roundtrip=False)


def test_fp16_program_stores_fp16_weights() -> None:
    from fusionc.targets.coreml.lowering.table import LoweringOptions, lower_model
    import onnx_ir as ir
    from coremltools.converters.mil.mil import types

    model = make_model(*CASES["conv_1x1_same"])
    program = lower_model(ir.serde.deserialize_model(model), LoweringOptions(compute_precision="fp16"))
    convs = [op for op in program.functions["main"].operations if op.op_type == "conv"]
    assert convs and all(op.outputs[0].dtype == types.fp16 for op in convs)
    assert program.functions["main"].outputs[0].dtype == types.fp32
