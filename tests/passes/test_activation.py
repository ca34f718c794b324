"""FuseGeluPass / FuseGeGLUPass on golden graphs (torch.onnx.export's forms, other orders, near misses)."""

from __future__ import annotations

import pytest
from _passes_helpers import assert_same_outputs, check_pass, parse, random_feeds, run

from fusionc.passes.generic import CleanUpGraphPass, FuseGeGLUPass, FuseGeluPass, fused_ops

GELU = "fusionc::Gelu"

ERF_EXPORTED = """
g (float[2,3,8] x) => (float[2,3,8] y) {
    sqrt2 = Constant <value = float {1.4142135381698608}> ()
    one = Constant <value = float {1.0}> ()
    half = Constant <value = float {0.5}> ()
    s = Div(x, sqrt2)
    e = Erf(s)
    e1 = Add(e, one)
    h = Mul(half, e1)
    y = Mul(x, h)
}"""

TANH_EXPORTED = """
g (float[2,3,8] x) => (float[2,3,8] y) {
    three = Constant <value = float {3.0}> ()
    c = Constant <value = float {0.044714998453855515}> ()
    k = Constant <value = float {0.7978845834732056}> ()
    one = Constant <value = float {1.0}> ()
    half = Constant <value = float {0.5}> ()
    cube = Pow(x, three)
    cc = Mul(c, cube)
    inner = Add(x, cc)
    scaled = Mul(k, inner)
    t = Tanh(scaled)
    t1 = Add(t, one)
    h = Mul(half, t1)
    y = Mul(x, h)
}"""


def test_erf_gelu_fuses():
    model = check_pass(FuseGeluPass, ERF_EXPORTED, [GELU])
    node = model.graph.node(0)
    assert node.attributes["approximate"].as_string() == "none" and node.overload == ""
    assert (fused_ops.DOMAIN, fused_ops.GELU, "") in model.functions


def test_tanh_gelu_fuses():
    model = check_pass(FuseGeluPass, TANH_EXPORTED, [GELU])
    node = model.graph.node(0)
    assert node.attributes["approximate"].as_string() == "tanh" and node.overload == fused_ops.TANH
    assert (fused_ops.DOMAIN, fused_ops.GELU, fused_ops.TANH) in model.functions


@pytest.mark.parametrize("tail", [
    "xe = Mul(x, e1)\n y = Mul(half, xe)",  # 0.5 * (x * (erf + 1))
    "xh = Mul(x, half)\n y = Mul(e1, xh)",  # (erf + 1) * (x * 0.5)
])
def test_other_association_orders_fuse(tail):
    text = ERF_EXPORTED.replace("e1 = Add(e, one)", "e1 = Add(one, e)").replace(
        "h = Mul(half, e1)\n    y = Mul(x, h)", tail)
    check_pass(FuseGeluPass, text, [GELU])


@pytest.mark.parametrize("variant", ["wrong_constant", "different_x", "intermediate_used"])
def test_near_misses_do_not_fuse(variant):
    text = ERF_EXPORTED
    if variant == "wrong_constant":
        text = text.replace("1.4142135381698608", "1.5")
    elif variant == "different_x":
        text = text.replace("(float[2,3,8] x)", "(float[2,3,8] x, float[2,3,8] z)").replace("y = Mul(x, h)", "y = Mul(z, h)")
    else:
        text = text.replace("=> (float[2,3,8] y)", "=> (float[2,3,8] y, float[2,3,8] e)")
    check_pass(FuseGeluPass, text, None, modified=False)


def test_fp16_gelu_matches():
    text = ERF_EXPORTED.replace("float[2,3,8]", "float16[2,3,8]")
    for name in ("sqrt2", "one", "half"):
        text = text.replace(f"{name} = Constant", f"{name}32 = Constant")
        text = text.replace("s = Div", f"{name} = Cast <to = 10> ({name}32)\n    s = Div")
    model = parse(text)
    feeds = random_feeds(model)
    before = run(model, feeds)
    CleanUpGraphPass()(model)
    assert FuseGeluPass()(model).modified
    assert [n.op_type for n in model.graph] == [fused_ops.GELU]
    assert_same_outputs(before, run(model, feeds))


GEGLU = ERF_EXPORTED.replace("(float[2,3,8] x) => (float[2,3,8] y)", "(float[2,3,16] hidden) => (float[2,3,8] y)").replace(
    "sqrt2 = Constant", "a, x = Split <axis = -1, num_outputs = 2> (hidden)\n    sqrt2 = Constant").replace(
    "y = Mul(x, h)", "gelu = Mul(x, h)\n    y = Mul(a, gelu)")


def test_geglu_fuses_after_gelu():
    class GeluThenGeGLU:
        def __call__(self, model):
            first = FuseGeluPass()(model)
            second = FuseGeGLUPass()(model)
            return type(second)(model, first.modified or second.modified)

    model = check_pass(GeluThenGeGLU, GEGLU, ["fusionc::GeGLU"])
    assert model.graph.node(0).attributes["approximate"].as_string() == "none"


def test_geglu_near_miss_split_on_another_axis():
    text = GEGLU.replace("float[2,3,16] hidden", "float[2,6,8] hidden").replace("axis = -1", "axis = 1")
    model = parse(text)
    FuseGeluPass()(model)
    assert FuseGeGLUPass()(model).modified is False
