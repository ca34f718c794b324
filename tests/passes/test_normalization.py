"""FuseGroupNormPass and FuseLayerNormPass on golden graphs (the exporter's forms and near misses)."""

from __future__ import annotations

import pytest
from _passes_helpers import assert_same_outputs, check_pass, parse, random_feeds, run

from fusionc.passes.generic import CleanUpGraphPass, FuseGroupNormPass, FuseLayerNormPass, fused_ops

GN = "fusionc::GroupNorm"
GAMMA = "{" + ", ".join(str(0.5 + i / 8) for i in range(8)) + "}"
BETA = "{" + ", ".join(str(i / 10 - 0.3) for i in range(8)) + "}"


def group_norm(x_type: str, grouped: str, restore: str, affine_shape: str = "8,1,1", scale: str = "1.0, 1.0, 1.0, 1.0",
               out_type: str | None = None) -> str:
    """The exporter's decomposition: Reshape -> InstanceNormalization(ones, zeros) -> Reshape -> Mul -> Add."""
    return f"""
    g ({x_type} x) => ({out_type or x_type} y) {{
        s3 = Constant <value = int64[3] {{{grouped}}}> ()
        ones = Constant <value = float[4] {{{scale}}}> ()
        zeros = Constant <value = float[4] {{0.0, 0.0, 0.0, 0.0}}> ()
        grouped = Reshape(x, s3)
        n = InstanceNormalization <epsilon = 1e-6> (grouped, ones, zeros)
        {restore}
        gamma = Constant <value = float[{affine_shape}] {GAMMA}> ()
        beta = Constant <value = float[{affine_shape}] {BETA}> ()
        m = Mul(r, gamma)
        y = Add(m, beta)
    }}"""


STATIC = group_norm("float[2,8,4,4]", "0, 4, -1", "s4 = Constant <value = int64[4] {2, 8, 4, 4}> ()\n r = Reshape(n, s4)")


def test_static_group_norm_fuses():
    model = check_pass(FuseGroupNormPass, STATIC, [GN])
    node = model.graph.node(0)
    assert node.attributes["num_groups"].as_int() == 4
    assert node.attributes["epsilon"].as_float() == pytest.approx(1e-6)
    assert list(node.inputs[1].shape) == [8] and list(node.inputs[2].shape) == [8]
    assert (fused_ops.DOMAIN, fused_ops.GROUP_NORM, "") in model.functions


def test_dynamic_batch_group_norm_fuses():
    check_pass(FuseGroupNormPass, group_norm("float[N,8,4,4]", "0, 4, -1", "s4 = Shape(x)\n r = Reshape(n, s4)"), [GN])


def test_merged_view_group_norm_fuses():
    """VAE attention: x [B,C,H,W] normalized as [B,C,HW]; the exporter merged the view into the group Reshape."""
    text = group_norm("float[2,8,4,4]", "-1, 4, 32", "s4 = Constant <value = int64[3] {-1, 8, 16}> ()\n r = Reshape(n, s4)",
                      affine_shape="8,1", out_type="float[2,8,16]")
    model = check_pass(FuseGroupNormPass, text, [GN, "Reshape"])
    (node,) = [n for n in model.graph if n.op_type == fused_ops.GROUP_NORM]
    assert len(node.inputs[0].shape) == 4  # GroupNorm of x itself, then the view


def test_merged_view_with_other_channels_reshapes_first():
    text = group_norm("float[2,8,4,4]", "-1, 4, 32", "s4 = Constant <value = int64[3] {-1, 16, 8}> ()\n r = Reshape(n, s4)",
                      affine_shape="16,1", out_type="float[2,16,8]")
    text = text.replace("float[16,1] " + GAMMA, "float[16,1] {" + ", ".join(["0.5"] * 16) + "}").replace(
        "float[16,1] " + BETA, "float[16,1] {" + ", ".join(["0.25"] * 16) + "}")
    check_pass(FuseGroupNormPass, text, ["Reshape", GN])


def test_group_norms_sharing_gamma_share_the_vector():
    text = STATIC.replace("y = Add(m, beta)", """a = Add(m, beta)
        g2 = Reshape(a, s3)
        n2 = InstanceNormalization <epsilon = 1e-6> (g2, ones, zeros)
        r2 = Reshape(n2, s4)
        m2 = Mul(r2, gamma)
        y = Add(m2, beta)""")
    model = check_pass(FuseGroupNormPass, text, [GN, GN])
    first, second = model.graph.node(0), model.graph.node(1)
    assert first.inputs[1] is second.inputs[1]


@pytest.mark.parametrize("variant", ["scale_not_ones", "batch_merged", "gamma_not_per_channel"])
def test_near_misses_do_not_fuse(variant):
    if variant == "scale_not_ones":
        text = group_norm("float[2,8,4,4]", "0, 4, -1", "s4 = Shape(x)\n r = Reshape(n, s4)", scale="1.0, 2.0, 1.0, 1.0")
    elif variant == "batch_merged":  # groups would straddle two samples
        text = group_norm("float[2,8,4,4]", "-1, 4, 16", "s4 = Shape(x)\n r = Reshape(n, s4)")
    else:
        text = STATIC.replace("float[8,1,1] " + GAMMA, "float[1,8,1,1] " + GAMMA).replace(
            "gamma = Constant", "g0 = Constant").replace("m = Mul(r, gamma)", "gf = Expand(g0, s4)\n m = Mul(r, gf)")
    check_pass(FuseGroupNormPass, text, None, modified=False)


def test_fp16_group_norm_matches():
    text = STATIC.replace("float[2,8,4,4]", "float16[2,8,4,4]")
    text = text.replace("ones = Constant", "ones32 = Constant").replace("zeros = Constant", "zeros32 = Constant")
    text = text.replace("gamma = Constant", "gamma32 = Constant").replace("beta = Constant", "beta32 = Constant")
    text = text.replace("grouped = Reshape", """ones = Cast <to = 10> (ones32)
        zeros = Cast <to = 10> (zeros32)
        gamma = Cast <to = 10> (gamma32)
        beta = Cast <to = 10> (beta32)
        grouped = Reshape""")
    model = parse(text)
    feeds = random_feeds(model)
    before = run(model, feeds)
    CleanUpGraphPass()(model)
    assert FuseGroupNormPass()(model).modified
    assert [n.op_type for n in model.graph] == [fused_ops.GROUP_NORM]
    assert_same_outputs(before, run(model, feeds))


LAYER_NORM = """
g (float[2,5,16] x) => (float[2,5,16] y) {
    axes = Constant <value = int64[1] {-1}> ()
    mean = ReduceMean <keepdims = 1> (x, axes)
    d = Sub(x, mean)
    dd = Mul(d, d)
    var = ReduceMean <keepdims = 1> (dd, axes)
    eps = Constant <value = float {1e-5}> ()
    ve = Add(var, eps)
    std = Sqrt(ve)
    normed = Div(d, std)
    scale = Constant <value = float[16] {%s}> ()
    bias = Constant <value = float[16] {%s}> ()
    scaled = Mul(normed, scale)
    y = Add(scaled, bias)
}""" % (", ".join(str(1 + i / 16) for i in range(16)), ", ".join(str(i / 16) for i in range(16)))


def test_layer_norm_decomposition_fuses():
    model = check_pass(FuseLayerNormPass, LAYER_NORM, ["LayerNormalization"])
    (node,) = [n for n in model.graph if n.op_type == "LayerNormalization"]
    assert len(node.inputs) == 3 and node.attributes["epsilon"].as_float() == pytest.approx(1e-5)


def test_layer_norm_near_miss_mean_over_other_axis():
    text = LAYER_NORM.replace("axes = Constant <value = int64[1] {-1}> ()", "axes = Constant <value = int64[1] {1}> ()")
    check_pass(FuseLayerNormPass, text, None, modified=False)


def test_exported_layer_norm_is_left_alone():
    check_pass(FuseLayerNormPass, """
    g (float[2,5,4] x) => (float[2,5,4] y) {
        scale = Constant <value = float[4] {1.0, 2.0, 3.0, 4.0}> ()
        bias = Constant <value = float[4] {0.0, 0.1, 0.2, 0.3}> ()
        y = LayerNormalization <axis = -1, epsilon = 1e-5> (x, scale, bias)
    }""", None, modified=False)
