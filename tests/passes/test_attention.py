"""FuseAttentionPass on golden graphs in the forms torch.onnx.export emits for diffusers and CLIP."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _passes_helpers import assert_same_outputs, check_pass, parse, random_feeds, run

from fusionc.passes.generic import CleanUpGraphPass, FuseAttentionPass, fused_ops

SDPA = "fusionc::ScaledDotProductAttention"

# UNet/VAE self-attention as exported (static shapes): sqrt(scale) on q and on k^T, k^T via 3-D.
EXPORTED = """
g (float[1,4,64,8] q, float[1,4,77,8] k, float[1,4,77,8] v) => (float[1,4,64,8] y) {
    s3 = Constant <value = int64[3] {-1, 77, 8}> ()
    s4 = Constant <value = int64[4] {1, 4, 8, 77}> ()
    flat = Reshape(k, s3)
    flat_t = Transpose <perm = [0, 2, 1]> (flat)
    kt = Reshape(flat_t, s4)
    root = Constant <value = float[1] {0.5946035385131836}> ()
    qs = Mul(q, root)
    ks = Mul(kt, root)
    scores = MatMul(qs, ks)
    w = Softmax <axis = -1> (scores)
    y = MatMul(w, v)
}"""

# CLIP: additive causal mask, then torch's NaN guard.
MASKED = """
g (float[N,4,7,8] q, float[N,4,7,8] k, float[N,4,7,8] v, float[N,1,7,7] mask) => (float[N,4,7,8] y) {
    kt = Transpose <perm = [0, 1, 3, 2]> (k)
    root = Constant <value = float {0.5946035385131836}> ()
    qs = Mul(q, root)
    ks = Mul(kt, root)
    scores = MatMul(qs, ks)
    masked = Add(scores, mask)
    w = Softmax <axis = -1> (masked)
    nan = IsNaN(w)
    zero = Constant <value = float {0.0}> ()
    safe = Where(nan, zero, w)
    y = MatMul(safe, v)
}"""


def test_exported_form_fuses():
    model = check_pass(FuseAttentionPass, EXPORTED, [SDPA])
    node = model.graph.node(0)
    assert node.attributes["scale"].as_float() == pytest.approx(1 / math.sqrt(8), rel=1e-6)
    assert node.overload == ""
    assert (fused_ops.DOMAIN, fused_ops.SDPA, "") in model.functions
    assert model.opset_imports[fused_ops.DOMAIN] == fused_ops.DOMAIN_VERSION


def test_masked_form_fuses_with_mask_input():
    model = parse(MASKED)
    feeds = random_feeds(model)
    causal = np.triu(np.full((7, 7), -np.inf, np.float32), k=1)
    feeds["mask"] = np.broadcast_to(causal, (2, 1, 7, 7)).copy()
    model = check_pass(FuseAttentionPass, MASKED, [SDPA], feeds=feeds)
    node = model.graph.node(0)
    assert node.overload == fused_ops.MASKED and len(node.inputs) == 4
    assert (fused_ops.DOMAIN, fused_ops.SDPA, fused_ops.MASKED) in model.functions


@pytest.mark.parametrize("scaling", ["scores_div", "q_only", "none"])
def test_other_scalings_fuse(scaling):
    if scaling == "scores_div":
        body = "qk = MatMul(q, kt)\n d = Constant <value = float {2.8284271}> ()\n scores = Div(qk, d)"
        expected = 1 / 2.8284271
    elif scaling == "q_only":
        body = "c = Constant <value = float {0.125}> ()\n qs = Mul(q, c)\n scores = MatMul(qs, kt)"
        expected = 0.125
    else:
        body = "scores = MatMul(q, kt)"
        expected = 1.0
    model = check_pass(FuseAttentionPass, f"""
    g (float[2,2,6,8] q, float[2,2,5,8] k, float[2,2,5,4] v) => (float[2,2,6,4] y) {{
        kt = Transpose <perm = [0, 1, 3, 2]> (k)
        {body}
        w = Softmax <axis = -1> (scores)
        y = MatMul(w, v)
    }}""", [SDPA])
    assert model.graph.node(0).attributes["scale"].as_float() == pytest.approx(expected, rel=1e-6)


def test_bshd_key_gets_a_transpose():
    check_pass(FuseAttentionPass, """
    g (float[2,2,6,8] q, float[2,5,2,8] k, float[2,2,5,8] v) => (float[2,2,6,8] y) {
        kt = Transpose <perm = [0, 2, 3, 1]> (k)
        scores = MatMul(q, kt)
        w = Softmax <axis = -1> (scores)
        y = MatMul(w, v)
    }""", ["Transpose", SDPA])


@pytest.mark.parametrize("variant", ["softmax_axis", "not_transposed", "scale_not_constant", "intermediate_used"])
def test_near_misses_do_not_fuse(variant):
    softmax_axis = -2 if variant == "softmax_axis" else -1
    perm = "[0, 1, 2, 3]" if variant == "not_transposed" else "[0, 1, 3, 2]"
    scale = "c = Sigmoid(q)" if variant == "scale_not_constant" else "c = Constant <value = float {0.125}> ()"
    extra_out = ", float[2,2,6,6] w" if variant == "intermediate_used" else ""
    text = f"""
    g (float[2,2,6,6] q, float[2,2,6,6] k, float[2,2,6,6] v) => (float[2,2,6,6] y{extra_out}) {{
        kt = Transpose <perm = {perm}> (k)
        {scale}
        qs = Mul(q, c)
        scores = MatMul(qs, kt)
        w = Softmax <axis = {softmax_axis}> (scores)
        y = MatMul(w, v)
    }}"""
    model = check_pass(FuseAttentionPass, text, None, modified=False)
    assert not any(n.domain == fused_ops.DOMAIN for n in model.graph)


def test_fp16_attention_matches():
    """The function body is dtype-generic: an fp16 graph (scale cast from fp32, folded by cleanup)."""
    text = EXPORTED.replace("float[1,", "float16[1,").replace(
        "root = Constant <value = float[1] {0.5946035385131836}> ()",
        "root32 = Constant <value = float[1] {0.5946035385131836}> ()\n root = Cast <to = 10> (root32)")
    model = parse(text)
    feeds = random_feeds(model)
    before = run(model, feeds)
    CleanUpGraphPass()(model)
    assert FuseAttentionPass()(model).modified
    assert [n.op_type for n in model.graph] == [fused_ops.SDPA]
    assert_same_outputs(before, run(model, feeds))
